//! The forward kernels: the tail's output, and the decisions its backward pass routes by.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{positive_or_nan, relu, Dims, Element, Pool, Record, INACTIVE};

/// `out = pool?(relu(x·scale[c] + shift[c]))`, plus the window codes of a pooled output when
/// `record` asks for [`Record::Decisions`] (the unpooled tail records none: its backward pass
/// recomputes them).
///
/// Ties keep the first maximum in row-major window order, and a NaN anywhere in a window wins, as
/// in PyTorch's CPU max-pool; a NaN output stays NaN through the ReLU.
pub(crate) fn forward<E: Element>(
    x: &[E],
    d: Dims,
    scale: &[f32],
    shift: &[f32],
    pool: Pool,
    record: Record,
) -> (Vec<E>, Vec<u8>) {
    let with_codes = pool != Pool::Off && record == Record::Decisions;
    debug_assert_eq!(x.len(), d.len());
    let o = d.output(pool);
    let mut out: Vec<E> = Vec::with_capacity(o.len());
    let mut codes: Vec<u8> = Vec::with_capacity(if with_codes { o.len() } else { 0 });
    if o.len() == 0 {
        return (out, codes);
    }
    let (plane, out_plane) = (d.plane(), o.plane());
    let affine = |p: usize| {
        let ch = p % d.c;
        (scale[ch], shift[ch])
    };
    let out_planes = out.spare_capacity_mut().par_chunks_mut(out_plane).enumerate();
    if pool == Pool::Off {
        out_planes.for_each(|(p, dst)| {
            let (a, b) = affine(p);
            for (o, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                o.write(E::from_f32(relu(v.to_f32() * a + b)));
            }
        });
    } else if pool == Pool::Max3x3Stride2 && with_codes {
        out_planes.zip(codes.spare_capacity_mut().par_chunks_mut(out_plane)).for_each(
            |((p, dst), code)| {
                let (a, b) = affine(p);
                pool3_plane(&x[p * plane..][..plane], d, o, a, b, dst, code);
            },
        );
    } else if pool == Pool::Max3x3Stride2 {
        out_planes.for_each(|(p, dst)| {
            let (a, b) = affine(p);
            pool3_plane(&x[p * plane..][..plane], d, o, a, b, dst, &mut []);
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
        if with_codes {
            codes.set_len(o.len());
        }
    }
    (out, codes)
}

/// `out = relu(x·scale[c] + shift[c] + residual)` (the end of a ResNet BasicBlock), plus, for
/// [`Record::Decisions`], one mask byte per output: 1 where the ReLU let the gradient through, 0
/// elsewhere.
pub(crate) fn forward_residual<E: Element>(
    x: &[E],
    residual: &[E],
    d: Dims,
    scale: &[f32],
    shift: &[f32],
    record: Record,
) -> (Vec<E>, Vec<u8>) {
    let with_mask = record == Record::Decisions;
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

/// One plane of the 3×3 stride-2 tail (padding 1: the padded positions never win). Writes a
/// window code (`3·dy + dx`, or [`INACTIVE`]) per output when `codes` is not empty. The windows
/// overlap, so this one is a plain loop; it runs once per network (torchvision's stem).
fn pool3_plane<E: Element>(
    src: &[E],
    d: Dims,
    o: Dims,
    a: f32,
    b: f32,
    dst: &mut [MaybeUninit<E>],
    codes: &mut [MaybeUninit<u8>],
) {
    let record = !codes.is_empty();
    // Windows wholly inside the plane (all nine taps valid) take the branch-free path below: the
    // bounds checks and the branchy maximum of the general path were ~5 % of a ResNet18 training
    // step at 84 px (fsct: perf, 2026-11-30). Output column `ox` is interior when
    // `1 <= ox` and `2·ox + 1 < w`; row `oy` likewise.
    let interior_x = 1..(d.w / 2).min(o.w);
    for oy in 0..o.h {
        let interior_row = oy >= 1 && 2 * oy + 1 < d.h;
        for ox in 0..o.w {
            if interior_row && interior_x.contains(&ox) {
                let top = &src[(2 * oy - 1) * d.w + 2 * ox - 1..][..3];
                let mid = &src[(2 * oy) * d.w + 2 * ox - 1..][..3];
                let bottom = &src[(2 * oy + 1) * d.w + 2 * ox - 1..][..3];
                let z = [
                    top[0], top[1], top[2], mid[0], mid[1], mid[2], bottom[0], bottom[1], bottom[2],
                ]
                .map(|v| v.to_f32() * a + b);
                let (best, slot) = window_max(z);
                let k = oy * o.w + ox;
                let active = positive_or_nan(best);
                dst[k].write(E::from_f32(if active { best } else { 0.0 }));
                if record {
                    codes[k].write(if active { slot } else { INACTIVE });
                }
                continue;
            }
            let (mut best, mut slot) = (f32::NEG_INFINITY, u8::MAX);
            for dy in 0..3 {
                let Some(y) = (2 * oy + dy).checked_sub(1).filter(|&y| y < d.h) else { continue };
                for dx in 0..3 {
                    let Some(x) = (2 * ox + dx).checked_sub(1).filter(|&x| x < d.w) else {
                        continue;
                    };
                    let v = src[y * d.w + x].to_f32() * a + b;
                    // The first maximum in row-major order, or the last NaN (PyTorch's CPU rule).
                    #[allow(clippy::eq_op)]
                    let take = slot == u8::MAX || v > best || v != v;
                    if take {
                        (best, slot) = (v, (3 * dy + dx) as u8);
                    }
                }
            }
            let k = oy * o.w + ox;
            let active = positive_or_nan(best);
            dst[k].write(E::from_f32(if active { best } else { 0.0 }));
            if record {
                codes[k].write(if active { slot } else { INACTIVE });
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
/// PyTorch's CPU max-pool (`val > max || isnan(val)`); slots count in row-major order.
#[inline]
fn window_max<const N: usize>(z: [f32; N]) -> (f32, u8) {
    let (mut best, mut slot) = (z[0], 0u8);
    for (s, &v) in z.iter().enumerate().skip(1) {
        #[allow(clippy::eq_op)]
        let take = (v > best) | (v != v);
        best = if take { v } else { best };
        slot = if take { s as u8 } else { slot };
    }
    (best, slot)
}
