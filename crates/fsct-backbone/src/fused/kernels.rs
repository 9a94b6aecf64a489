//! Slice kernels of the fused block tail `relu(x·scale + shift)`, optionally followed by a 2×2,
//! stride-2 max-pool (floor), on contiguous NCHW `f32` maps.
//!
//! The pooled forward records, per output, which slot of its window held the first maximum (or
//! [`INACTIVE`] when the ReLU zeroed it). That byte is all the backward pass needs besides the
//! block's input: the gradient of a pooled ReLU output flows to exactly one input position, and
//! only when the maximum was positive — so no full-size ReLU or batch-norm output is kept.

use std::mem::MaybeUninit;

use burn::tensor::{bf16, f16};
use rayon::prelude::*;

/// A stored element type: maps are read and written in their own dtype (so mixed precision
/// keeps half maps and half gradients) and computed in f32.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The sizes of a contiguous `[n, c, h, w]` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub fn plane(&self) -> usize {
        self.h * self.w
    }

    pub fn len(&self) -> usize {
        self.n * self.c * self.plane()
    }

    /// The output sizes: halved (floor) with pooling.
    pub fn output(&self, pool: bool) -> Dims {
        if pool {
            Dims { h: self.h / 2, w: self.w / 2, ..*self }
        } else {
            *self
        }
    }
}

/// Marks a pooled output whose window maximum was not positive: the ReLU stopped its gradient.
pub(crate) const INACTIVE: u8 = u8::MAX;

/// Per-channel mean and biased variance over the batch and both spatial axes (two passes, f64
/// accumulation of f32 partial sums).
pub(crate) fn channel_moments<E: Element>(x: &[E], d: Dims) -> (Vec<f64>, Vec<f64>) {
    debug_assert_eq!(x.len(), d.len());
    let count = (d.n * d.plane()).max(1) as f64;
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..d.n).map(move |i| channel_plane(x, d, i, ch));
            let mean = planes().map(|p| lane_sum(p, |v| v.to_f32())).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes()
                .map(|p| {
                    lane_sum(p, |v| {
                        let c = v.to_f32() - m;
                        c * c
                    })
                })
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// `Σ f(v)` over a slice with eight independent f32 lanes (vectorisable), returned in f64.
fn lane_sum<E: Element>(values: &[E], f: impl Fn(E) -> f32) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

fn channel_plane<E>(x: &[E], d: Dims, i: usize, ch: usize) -> &[E] {
    let plane = d.plane();
    &x[(i * d.c + ch) * plane..][..plane]
}

/// `out = pool?(relu(x·scale[c] + shift[c]))`, plus the window codes of a pooled output when
/// `with_codes` (for the backward pass).
///
/// Ties keep the first maximum in row-major window order, and a NaN anywhere in a window wins, as
/// in PyTorch's CPU max-pool; a NaN output stays NaN through the ReLU.
pub(crate) fn forward<E: Element>(
    x: &[E],
    d: Dims,
    scale: &[f32],
    shift: &[f32],
    pool: bool,
    with_codes: bool,
) -> (Vec<E>, Vec<u8>) {
    debug_assert_eq!(x.len(), d.len());
    let o = d.output(pool);
    let mut out: Vec<E> = Vec::with_capacity(o.len());
    let mut codes: Vec<u8> = Vec::with_capacity(if pool && with_codes { o.len() } else { 0 });
    if o.len() == 0 {
        return (out, codes);
    }
    let (plane, out_plane) = (d.plane(), o.plane());
    let affine = |p: usize| {
        let ch = p % d.c;
        (scale[ch], shift[ch])
    };
    let out_planes = out.spare_capacity_mut().par_chunks_mut(out_plane).enumerate();
    if !pool {
        out_planes.for_each(|(p, dst)| {
            let (a, b) = affine(p);
            for (o, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                o.write(E::from_f32(relu(v.to_f32() * a + b)));
            }
        });
    } else if with_codes {
        out_planes.zip(codes.spare_capacity_mut().par_chunks_mut(out_plane)).for_each(
            |((p, dst), code)| {
                let (a, b) = affine(p);
                pool_plane::<E, true>(&x[p * plane..][..plane], d.w, o, a, b, dst, code);
            },
        );
    } else {
        out_planes.for_each(|(p, dst)| {
            let (a, b) = affine(p);
            pool_plane::<E, false>(&x[p * plane..][..plane], d.w, o, a, b, dst, &mut []);
        });
    }
    // SAFETY: every plane chunk of `out` (and of `codes` when requested) was written in full above.
    unsafe {
        out.set_len(o.len());
        if pool && with_codes {
            codes.set_len(o.len());
        }
    }
    (out, codes)
}

/// `out = relu(x·scale[c] + shift[c] + residual)` (the end of a ResNet BasicBlock), plus, when
/// `with_mask`, one byte per output: 1 where the ReLU let the gradient through, 0 elsewhere.
pub(crate) fn forward_residual<E: Element>(
    x: &[E],
    residual: &[E],
    d: Dims,
    scale: &[f32],
    shift: &[f32],
    with_mask: bool,
) -> (Vec<E>, Vec<u8>) {
    debug_assert_eq!(x.len(), d.len());
    debug_assert_eq!(residual.len(), d.len());
    let mut out: Vec<E> = Vec::with_capacity(d.len());
    let mut mask: Vec<u8> = Vec::with_capacity(if with_mask { d.len() } else { 0 });
    if d.len() == 0 {
        return (out, mask);
    }
    let plane = d.plane();
    let z = |p: usize, i: usize| {
        let ch = p % d.c;
        x[p * plane + i].to_f32() * scale[ch] + shift[ch] + residual[p * plane + i].to_f32()
    };
    let out_planes = out.spare_capacity_mut().par_chunks_mut(plane).enumerate();
    if with_mask {
        out_planes.zip(mask.spare_capacity_mut().par_chunks_mut(plane)).for_each(
            |((p, dst), m)| {
                for (i, (o, m)) in dst.iter_mut().zip(m.iter_mut()).enumerate() {
                    let z = z(p, i);
                    let on = positive_or_nan(z);
                    o.write(E::from_f32(if on { z } else { 0.0 }));
                    m.write(on as u8);
                }
            },
        );
    } else {
        out_planes.for_each(|(p, dst)| {
            for (i, o) in dst.iter_mut().enumerate() {
                o.write(E::from_f32(relu(z(p, i))));
            }
        });
    }
    // SAFETY: every plane of `out` (and of `mask` when requested) was written in full above.
    unsafe {
        out.set_len(d.len());
        if with_mask {
            mask.set_len(d.len());
        }
    }
    (out, mask)
}

#[inline]
fn relu(z: f32) -> f32 {
    if positive_or_nan(z) {
        z
    } else {
        0.0
    }
}

/// `z > 0 || z is NaN`, without a branch.
#[inline]
fn positive_or_nan(z: f32) -> bool {
    #[allow(clippy::eq_op)]
    let nan = z != z;
    (z > 0.0) | nan
}

/// One plane of the pooled tail. Branch-free (selects, no jumps on the data), so that the
/// compiler vectorises it: on random activations a branchy max mispredicts half the time.
#[allow(clippy::too_many_arguments)]
fn pool_plane<E: Element, const CODES: bool>(
    src: &[E],
    w: usize,
    o: Dims,
    a: f32,
    b: f32,
    dst: &mut [MaybeUninit<E>],
    codes: &mut [MaybeUninit<u8>],
) {
    for oy in 0..o.h {
        let (top, _) = src[2 * oy * w..][..2 * o.w].as_chunks::<2>();
        let (bottom, _) = src[(2 * oy + 1) * w..][..2 * o.w].as_chunks::<2>();
        let dst = &mut dst[oy * o.w..][..o.w];
        if CODES {
            let codes = &mut codes[oy * o.w..][..o.w];
            for (((t, bt), y), code) in
                top.iter().zip(bottom).zip(dst.iter_mut()).zip(codes.iter_mut())
            {
                let (best, slot) = window_max(affine_window(t, bt, a, b));
                let active = positive_or_nan(best);
                y.write(E::from_f32(if active { best } else { 0.0 }));
                code.write(if active { slot } else { INACTIVE });
            }
        } else {
            for ((t, bt), y) in top.iter().zip(bottom).zip(dst.iter_mut()) {
                let (best, _) = window_max(affine_window(t, bt, a, b));
                y.write(E::from_f32(relu(best)));
            }
        }
    }
}

/// `x·a + b` over a 2×2 window given as its top and bottom pairs, in f32.
#[inline(always)]
fn affine_window<E: Element>(top: &[E; 2], bottom: &[E; 2], a: f32, b: f32) -> [f32; 4] {
    [top[0], top[1], bottom[0], bottom[1]].map(|v| v.to_f32() * a + b)
}

/// The maximum of a window and the slot holding it: the first maximum, or the last NaN, as
/// PyTorch's CPU max-pool (`val > max || isnan(val)`).
#[inline]
fn window_max(z: [f32; 4]) -> (f32, u8) {
    let (mut best, mut slot) = (z[0], 0u8);
    for (s, &v) in z.iter().enumerate().skip(1) {
        #[allow(clippy::eq_op)]
        let take = (v > best) | (v != v);
        best = if take { v } else { best };
        slot = if take { s as u8 } else { slot };
    }
    (best, slot)
}

/// What the backward pass of a batch-statistics block tail needs besides its input and the
/// output gradient.
#[derive(Clone, Debug)]
pub(crate) struct Saved {
    pub dims: Dims,
    pub pool: bool,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    /// `gamma · inv_std` and `beta − mean · gamma · inv_std`: the forward's affine map, kept so
    /// the unpooled backward recomputes exactly the forward's ReLU decisions.
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    /// Window codes of the pooled forward, or the ReLU mask of the residual forward (empty for
    /// the plain unpooled tail, which recomputes its ReLU decisions from `x`).
    pub codes: Vec<u8>,
    /// Whether this is the residual tail `relu(bn(x) + r)` (its ReLU decisions are in `codes`).
    pub residual: bool,
}

impl Saved {
    /// Whether the ReLU let the gradient through at element `i` of plane `p` (unpooled tails).
    #[inline(always)]
    fn passes(&self, p: usize, i: usize, v: f32, ch: usize) -> bool {
        if self.residual {
            self.codes[p * self.dims.plane() + i] != 0
        } else {
            positive_or_nan(v * self.scale[ch] + self.shift[ch])
        }
    }
}

/// Gradients of the block tail with batch statistics: `(dx, dgamma, dbeta)`.
///
/// With `dz` the gradient at the batch-norm output (`grad` routed through the pool and the
/// ReLU), `dbeta = Σ dz`, `dgamma = Σ dz·x̂` and
/// `dx = gamma·inv_std·(dz − dbeta/N − x̂·dgamma/N)`, where `x̂ = (x − mean)·inv_std` and `N` is
/// the number of values per channel.
pub(crate) fn backward<E: Element>(x: &[E], grad: &[E], s: &Saved) -> (Vec<E>, Vec<f32>, Vec<f32>) {
    let d = s.dims;
    let o = d.output(s.pool);
    debug_assert_eq!(x.len(), d.len());
    debug_assert_eq!(grad.len(), o.len());
    let (plane, out_plane) = (d.plane(), o.plane());
    let count = (d.n * plane).max(1) as f64;

    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let (mean, inv_std) = (s.mean[ch], s.inv_std[ch]);
            let (mut sum_dz, mut sum_dz_xhat) = (0f64, 0f64);
            for i in 0..d.n {
                let p = i * d.c + ch;
                let xs = &x[p * plane..][..plane];
                let gs = &grad[p * out_plane..][..out_plane];
                let (mut a, mut b) = (0f32, 0f32);
                if s.pool {
                    let codes = &s.codes[p * out_plane..][..out_plane];
                    for (k, (&code, &g)) in codes.iter().zip(gs).enumerate() {
                        // Branch-free: an inactive output reads slot 3 and counts zero.
                        let g = if code != INACTIVE { g.to_f32() } else { 0.0 };
                        let v = xs[window_position(k, code & 3, o.w, d.w)].to_f32();
                        a += g;
                        b += g * (v - mean) * inv_std;
                    }
                } else {
                    for (j, (&v, &g)) in xs.iter().zip(gs).enumerate() {
                        let v = v.to_f32();
                        let g = if s.passes(p, j, v, ch) { g.to_f32() } else { 0.0 };
                        a += g;
                        b += g * (v - mean) * inv_std;
                    }
                }
                sum_dz += a as f64;
                sum_dz_xhat += b as f64;
            }
            (sum_dz, sum_dz_xhat)
        })
        .unzip();

    let mut dx: Vec<E> = Vec::with_capacity(d.len());
    if d.len() > 0 {
        dx.spare_capacity_mut().par_chunks_mut(plane).enumerate().for_each(|(p, dst)| {
            let ch = p % d.c;
            let (mean, inv_std) = (s.mean[ch], s.inv_std[ch]);
            let k = s.gamma[ch] * inv_std;
            let mean_dz = (dbeta[ch] / count) as f32;
            let mean_dz_xhat = (dgamma[ch] / count) as f32;
            let xs = &x[p * plane..][..plane];
            let gs = &grad[p * out_plane..][..out_plane];
            if s.pool {
                // Accumulate the plane in f32 (a half dx would round twice), then store.
                let codes = &s.codes[p * out_plane..][..out_plane];
                PLANE.with_borrow_mut(|buf| {
                    buf.clear();
                    buf.extend(
                        xs.iter().map(|&v| {
                            -k * (mean_dz + (v.to_f32() - mean) * inv_std * mean_dz_xhat)
                        }),
                    );
                    for (k_out, (&code, &g)) in codes.iter().zip(gs).enumerate() {
                        let g = if code != INACTIVE { g.to_f32() } else { 0.0 };
                        buf[window_position(k_out, code & 3, o.w, d.w)] += k * g;
                    }
                    for (o, &v) in dst.iter_mut().zip(buf.iter()) {
                        o.write(E::from_f32(v));
                    }
                });
            } else {
                for (j, ((o, &v), &g)) in dst.iter_mut().zip(xs).zip(gs).enumerate() {
                    let v = v.to_f32();
                    let dz = if s.passes(p, j, v, ch) { g.to_f32() } else { 0.0 };
                    o.write(E::from_f32(k * (dz - mean_dz - (v - mean) * inv_std * mean_dz_xhat)));
                }
            }
        });
        // SAFETY: every plane of `dx` was written in full above.
        unsafe { dx.set_len(d.len()) };
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, to_f32(dgamma), to_f32(dbeta))
}

/// The residual's gradient in `relu(bn(x) + r)`: `grad` where the ReLU passed, else 0.
pub(crate) fn residual_gradient<E: Element>(grad: &[E], mask: &[u8]) -> Vec<E> {
    grad.par_iter().zip(mask).map(|(&g, &m)| if m != 0 { g } else { E::from_f32(0.0) }).collect()
}

thread_local! {
    /// One plane of f32 scratch per worker thread for the pooled backward.
    static PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The input position (within a plane of width `w`) of slot `code` of pooled output `k`.
#[inline]
fn window_position(k: usize, code: u8, out_w: usize, w: usize) -> usize {
    let (oy, ox) = (k / out_w, k % out_w);
    let (dy, dx) = ((code >> 1) as usize, (code & 1) as usize);
    (2 * oy + dy) * w + 2 * ox + dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An f64 batch norm → ReLU → max-pool forward and its gradients, element by element.
    struct Reference {
        y: Vec<f64>,
        dx: Vec<f64>,
        dgamma: Vec<f64>,
        dbeta: Vec<f64>,
    }

    fn reference(
        x: &[f32],
        d: Dims,
        gamma: &[f32],
        beta: &[f32],
        grad: &[f32],
        pool: bool,
    ) -> Reference {
        let o = d.output(pool);
        let n = (d.n * d.plane()) as f64;
        let idx = |i: usize, ch: usize, y: usize, xx: usize| ((i * d.c + ch) * d.h + y) * d.w + xx;
        let mut r = Reference {
            y: vec![0.0; o.len()],
            dx: vec![0.0; d.len()],
            dgamma: vec![0.0; d.c],
            dbeta: vec![0.0; d.c],
        };
        for ch in 0..d.c {
            let positions: Vec<usize> = (0..d.n)
                .flat_map(|i| (0..d.h).flat_map(move |y| (0..d.w).map(move |xx| idx(i, ch, y, xx))))
                .collect();
            let mean = positions.iter().map(|&p| x[p] as f64).sum::<f64>() / n;
            let var = positions.iter().map(|&p| (x[p] as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv_std = 1.0 / (var + 1e-5).sqrt();
            let xhat = |p: usize| (x[p] as f64 - mean) * inv_std;
            let z = |p: usize| xhat(p) * gamma[ch] as f64 + beta[ch] as f64;
            // dz: the gradient reaching the batch-norm output.
            let mut dz = vec![0.0; d.len()];
            for i in 0..d.n {
                for oy in 0..o.h {
                    for ox in 0..o.w {
                        let k = ((i * d.c + ch) * o.h + oy) * o.w + ox;
                        let (p, v) = if pool {
                            let window = [
                                idx(i, ch, 2 * oy, 2 * ox),
                                idx(i, ch, 2 * oy, 2 * ox + 1),
                                idx(i, ch, 2 * oy + 1, 2 * ox),
                                idx(i, ch, 2 * oy + 1, 2 * ox + 1),
                            ];
                            let mut best = window[0];
                            for &q in &window[1..] {
                                if z(q) > z(best) {
                                    best = q;
                                }
                            }
                            (best, z(best))
                        } else {
                            let p = idx(i, ch, oy, ox);
                            (p, z(p))
                        };
                        r.y[k] = v.max(0.0);
                        if v > 0.0 {
                            dz[p] += grad[k] as f64;
                        }
                    }
                }
            }
            r.dbeta[ch] = positions.iter().map(|&p| dz[p]).sum();
            r.dgamma[ch] = positions.iter().map(|&p| dz[p] * xhat(p)).sum();
            for &p in &positions {
                r.dx[p] = gamma[ch] as f64
                    * inv_std
                    * (dz[p] - r.dbeta[ch] / n - xhat(p) * r.dgamma[ch] / n);
            }
        }
        r
    }

    /// Deterministic pseudo-random values in [-1, 1) (no ties in practice).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn run(d: Dims, pool: bool) {
        let x: Vec<f32> = values(d.len(), 1).iter().map(|v| 3.0 * v + 0.5).collect();
        let gamma: Vec<f32> =
            (0..d.c).map(|ch| if ch % 3 == 2 { -0.7 } else { 1.0 + 0.25 * ch as f32 }).collect();
        let beta: Vec<f32> = (0..d.c).map(|ch| 0.2 * ch as f32 - 0.3).collect();
        let grad = values(d.output(pool).len(), 2);
        let r = reference(&x, d, &gamma, &beta, &grad, pool);

        let (mean, var) = channel_moments(&x, d);
        let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + 1e-5).sqrt()) as f32).collect();
        let scale: Vec<f32> = (0..d.c).map(|ch| gamma[ch] * inv_std[ch]).collect();
        let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] as f32 * scale[ch]).collect();
        let (y, codes) = forward(&x, d, &scale, &shift, pool, true);
        assert_close(&y, &r.y, 1e-5, "output");
        let saved = Saved {
            dims: d,
            pool,
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std,
            gamma,
            scale,
            shift,
            codes,
            residual: false,
        };
        let (dx, dgamma, dbeta) = backward(&x, &grad, &saved);
        assert_close(&dx, &r.dx, 1e-5, "dx");
        assert_close(&dgamma, &r.dgamma, 1e-4, "dgamma");
        assert_close(&dbeta, &r.dbeta, 1e-4, "dbeta");
    }

    fn assert_close(ours: &[f32], reference: &[f64], tolerance: f64, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: length");
        for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
            assert!((a as f64 - b).abs() <= tolerance * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
        }
    }

    #[test]
    fn pooled_tail_matches_an_f64_reference_forward_and_backward() {
        run(Dims { n: 3, c: 4, h: 6, w: 8 }, true);
    }

    #[test]
    fn odd_sizes_pool_with_floor_and_leave_the_last_row_and_column_out() {
        run(Dims { n: 2, c: 3, h: 7, w: 5 }, true);
    }

    #[test]
    fn unpooled_tail_matches_an_f64_reference_forward_and_backward() {
        run(Dims { n: 2, c: 5, h: 5, w: 9 }, false);
    }

    #[test]
    fn moments_are_the_biased_per_channel_mean_and_variance() {
        let d = Dims { n: 2, c: 2, h: 1, w: 3 };
        // channel 0: 1, 2, 3, 4, 5, 6; channel 1: 10 × 6.
        let x = [1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 4.0, 5.0, 6.0, 10.0, 10.0, 10.0];
        let (mean, var) = channel_moments(&x, d);
        assert_eq!(mean, vec![3.5, 10.0]);
        assert!((var[0] - 17.5 / 6.0).abs() < 1e-12 && var[1] == 0.0, "{var:?}");
    }

    #[test]
    fn ties_take_the_first_slot_and_non_positive_windows_are_inactive() {
        let d = Dims { n: 1, c: 1, h: 2, w: 4 };
        // window 0: [1, 2 / 2, 0] → slot 1 (first of the tied 2s); window 1: all ≤ 0 → inactive.
        let x = [1.0, 2.0, -1.0, 0.0, 2.0, 0.0, -3.0, -2.0];
        let (y, codes) = forward(&x, d, &[1.0], &[0.0], true, true);
        assert_eq!(y, vec![2.0, 0.0]);
        assert_eq!(codes, vec![1, INACTIVE]);
        let (y, _) = forward(
            &[f32::NAN, 1.0, 0.0, 0.0],
            Dims { n: 1, c: 1, h: 2, w: 2 },
            &[1.0],
            &[0.0],
            true,
            true,
        );
        assert!(y[0].is_nan(), "a NaN must not be hidden by the ReLU");
    }
}
