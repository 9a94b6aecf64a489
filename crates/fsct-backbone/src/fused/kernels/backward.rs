//! The backward kernels of the batch-statistics tails.

use rayon::prelude::*;

use super::{positive_or_nan, window_position, Dims, Element, Pool, INACTIVE};

/// What the backward pass of a batch-statistics block tail needs besides its input and the
/// output gradient.
#[derive(Clone, Debug)]
pub(crate) struct Saved {
    pub dims: Dims,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    /// `gamma · inv_std` and `beta − mean · gamma · inv_std`: the forward's affine map, kept so
    /// the unpooled backward recomputes exactly the forward's ReLU decisions.
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    /// What `codes` holds: see [`Decisions`].
    pub decisions: Decisions,
    /// Window codes of the pooled forward, or the ReLU mask of the residual forward (empty for
    /// the plain unpooled tail, which recomputes its ReLU decisions from `x`).
    pub codes: Vec<u8>,
}

/// Where the backward pass finds the forward's ReLU (and pool) decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decisions {
    /// The pooled tail: `codes` holds, per output, the window slot of its maximum, or
    /// [`INACTIVE`] where the ReLU zeroed it.
    PoolWindows,
    /// As `PoolWindows` for 3×3 stride-2 windows (slots `3·dy + dx`).
    PoolWindows3x3,
    /// The plain unpooled tail: recomputed from `x` and the saved affine map (`codes` is empty).
    RecomputedRelu,
    /// The residual tail `relu(bn(x) + r)`: `codes` holds the ReLU mask, since `bn(x) + r` cannot
    /// be recomputed from `x` alone (recorded by the forward kernel, or read off the output by
    /// [`relu_mask`] just before the backward pass).
    ReluMask,
}

impl Saved {
    /// Whether the forward pooled (and so its output is smaller than `x`).
    pub fn pool(&self) -> Pool {
        match self.decisions {
            Decisions::PoolWindows => Pool::Max2x2,
            Decisions::PoolWindows3x3 => Pool::Max3x3Stride2,
            Decisions::RecomputedRelu | Decisions::ReluMask => Pool::Off,
        }
    }

    /// Where the ReLU decisions of plane `p` (channel `ch`) of an unpooled tail come from.
    fn plane_relu(&self, p: usize, ch: usize) -> PlaneRelu<'_> {
        if self.decisions == Decisions::ReluMask {
            let plane = self.dims.plane();
            PlaneRelu::Mask(&self.codes[p * plane..][..plane])
        } else {
            PlaneRelu::Affine { scale: self.scale[ch], shift: self.shift[ch] }
        }
    }
}

/// The ReLU decisions of one plane of an unpooled tail, chosen once per plane so the loops over
/// its elements carry no branch on [`Decisions`].
#[derive(Clone, Copy)]
enum PlaneRelu<'a> {
    /// The recorded mask (non-zero where the ReLU passed).
    Mask(&'a [u8]),
    /// Recomputed from `x` with the forward's affine map.
    Affine { scale: f32, shift: f32 },
}

/// Independent partial sums per plane: one running sum is a chain of dependent adds that the
/// compiler cannot vectorise (the per-element loop it replaced was 9 % of a ResNet18 84 px
/// training step, ~10 cycles per element; performance log, row 28).
const LANES: usize = 16;

/// `(Σ dz, Σ dz·(x − mean))` over one plane of an unpooled tail, `dz` being `grad` where the ReLU
/// passed and 0 elsewhere; [`LANES`] partial sums in f32.
fn unpooled_sums<E: Element>(xs: &[E], gs: &[E], relu: PlaneRelu<'_>, mean: f32) -> (f32, f32) {
    let (mut dz, mut dz_x) = ([0f32; LANES], [0f32; LANES]);
    let mut add = |l: usize, v: f32, g: f32, passes: bool| {
        let g = if passes { g } else { 0.0 };
        dz[l] += g;
        dz_x[l] += g * (v - mean);
    };
    let n = xs.len().min(gs.len());
    let full = n - n % LANES;
    match relu {
        PlaneRelu::Mask(mask) => {
            let chunks = xs[..full]
                .chunks_exact(LANES)
                .zip(gs[..full].chunks_exact(LANES))
                .zip(mask[..full].chunks_exact(LANES));
            for ((x, g), m) in chunks {
                for l in 0..LANES {
                    add(l, x[l].to_f32(), g[l].to_f32(), m[l] != 0);
                }
            }
            for j in full..n {
                add(0, xs[j].to_f32(), gs[j].to_f32(), mask[j] != 0);
            }
        }
        PlaneRelu::Affine { scale, shift } => {
            for (x, g) in xs[..full].chunks_exact(LANES).zip(gs[..full].chunks_exact(LANES)) {
                for l in 0..LANES {
                    let v = x[l].to_f32();
                    add(l, v, g[l].to_f32(), positive_or_nan(v * scale + shift));
                }
            }
            for j in full..n {
                let v = xs[j].to_f32();
                add(0, v, gs[j].to_f32(), positive_or_nan(v * scale + shift));
            }
        }
    }
    (dz.iter().sum(), dz_x.iter().sum())
}

/// `dx = k·(dz − mean_dz − (x − mean)·slope)` over one plane of an unpooled tail, written over `x`.
fn unpooled_dx<E: Element>(
    xs: &mut [E],
    gs: &[E],
    relu: PlaneRelu<'_>,
    k: f32,
    mean: f32,
    mean_dz: f32,
    slope: f32,
) {
    let dx = |v: f32, g: f32, passes: bool| {
        let dz = if passes { g } else { 0.0 };
        E::from_f32(k * (dz - mean_dz - (v - mean) * slope))
    };
    match relu {
        PlaneRelu::Mask(mask) => {
            for ((slot, &g), &m) in xs.iter_mut().zip(gs).zip(mask) {
                *slot = dx(slot.to_f32(), g.to_f32(), m != 0);
            }
        }
        PlaneRelu::Affine { scale, shift } => {
            for (slot, &g) in xs.iter_mut().zip(gs) {
                let v = slot.to_f32();
                *slot = dx(v, g.to_f32(), positive_or_nan(v * scale + shift));
            }
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
    let mut dx = x.to_vec();
    let (dgamma, dbeta) = backward_in_place(&mut dx, grad, s);
    (dx, dgamma, dbeta)
}

/// As [`backward`], writing `dx` over `x` (each plane is read, then overwritten): the backward
/// pass of a tail whose input nothing else holds needs no second map of its size. Returns
/// `(dgamma, dbeta)`.
pub(crate) fn backward_in_place<E: Element>(
    x: &mut [E],
    grad: &[E],
    s: &Saved,
) -> (Vec<f32>, Vec<f32>) {
    let d = s.dims;
    let kind = s.pool();
    let pool = kind != Pool::Off;
    let o = d.output(kind);
    debug_assert_eq!(x.len(), d.len());
    debug_assert_eq!(grad.len(), o.len());
    let (plane, out_plane) = (d.plane(), o.plane());
    let count = (d.n * plane).max(1) as f64;

    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = {
        let x: &[E] = x;
        (0..d.c)
            .into_par_iter()
            .map(|ch| {
                let (mean, inv_std) = (s.mean[ch], s.inv_std[ch]);
                let (mut sum_dz, mut sum_dz_xhat) = (0f64, 0f64);
                for i in 0..d.n {
                    let p = i * d.c + ch;
                    let xs = &x[p * plane..][..plane];
                    let gs = &grad[p * out_plane..][..out_plane];
                    let (a, b) = if pool {
                        let (mut a, mut b) = (0f32, 0f32);
                        let codes = &s.codes[p * out_plane..][..out_plane];
                        for (k, (&code, &g)) in codes.iter().zip(gs).enumerate() {
                            // Branch-free: an inactive output reads slot 3 and counts zero.
                            let g = if code != INACTIVE { g.to_f32() } else { 0.0 };
                            let v = xs[window_position(kind, k, code, o.w, d.w)].to_f32();
                            a += g;
                            b += g * (v - mean) * inv_std;
                        }
                        (a, b)
                    } else {
                        let (dz, dz_x) = unpooled_sums(xs, gs, s.plane_relu(p, ch), mean);
                        (dz, dz_x * inv_std)
                    };
                    sum_dz += a as f64;
                    sum_dz_xhat += b as f64;
                }
                (sum_dz, sum_dz_xhat)
            })
            .unzip()
    };

    if d.len() > 0 {
        x.par_chunks_mut(plane).enumerate().for_each(|(p, xs)| {
            let ch = p % d.c;
            let (mean, inv_std) = (s.mean[ch], s.inv_std[ch]);
            let k = s.gamma[ch] * inv_std;
            let mean_dz = (dbeta[ch] / count) as f32;
            let mean_dz_xhat = (dgamma[ch] / count) as f32;
            let gs = &grad[p * out_plane..][..out_plane];
            if pool {
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
                        buf[window_position(kind, k_out, code, o.w, d.w)] += k * g;
                    }
                    for (o, &v) in xs.iter_mut().zip(buf.iter()) {
                        *o = E::from_f32(v);
                    }
                });
            } else {
                unpooled_dx(xs, gs, s.plane_relu(p, ch), k, mean, mean_dz, inv_std * mean_dz_xhat);
            }
        });
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (to_f32(dgamma), to_f32(dbeta))
}

/// The ReLU mask of a tail from its output `relu(z)`: 1 where the output is positive or NaN (where
/// `z` was, for f32 maps; for half maps, where `z` rounded to the map's dtype is), else 0.
pub(crate) fn relu_mask<E: Element>(output: &[E]) -> Vec<u8> {
    output.par_iter().map(|&v| positive_or_nan(v.to_f32()) as u8).collect()
}

/// The residual's gradient in `relu(bn(x) + r)`: `grad` where the ReLU passed, else 0.
pub(crate) fn residual_gradient<E: Element>(grad: &[E], mask: &[u8]) -> Vec<E> {
    grad.par_iter().zip(mask).map(|(&g, &m)| if m != 0 { g } else { E::from_f32(0.0) }).collect()
}

thread_local! {
    /// One plane of f32 scratch per worker thread for the pooled backward.
    static PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
