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
    // One plane's inputs and affine map, hoisted: a per-element closure indexing the whole
    // tensors compiled to an out-of-line scalar call per element (~1–3 % of a ResNet18 step at
    // 84 px in perf, 2026-12-01); zipped plane slices vectorise.
    let inputs = |p: usize| {
        let ch = p % d.c;
        (&x[p * plane..][..plane], &residual[p * plane..][..plane], scale[ch], shift[ch])
    };
    let out_planes = out.spare_capacity_mut().par_chunks_mut(plane).enumerate();
    if with_mask {
        out_planes.zip(mask.spare_capacity_mut().par_chunks_mut(plane)).for_each(
            |((p, dst), m)| {
                let (xs, rs, a, b) = inputs(p);
                for ((o, m), (&v, &r)) in dst.iter_mut().zip(m.iter_mut()).zip(xs.iter().zip(rs)) {
                    let z = v.to_f32() * a + b + r.to_f32();
                    let on = positive_or_nan(z);
                    o.write(E::from_f32(if on { z } else { 0.0 }));
                    m.write(on as u8);
                }
            },
        );
    } else {
        out_planes.for_each(|(p, dst)| {
            let (xs, rs, a, b) = inputs(p);
            for (o, (&v, &r)) in dst.iter_mut().zip(xs.iter().zip(rs)) {
                o.write(E::from_f32(relu(v.to_f32() * a + b + r.to_f32())));
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
/// window code (`3·dy + dx`, or [`INACTIVE`]) per output when `codes` is not empty.
///
/// Separable: each input row is reduced to its stride-2 maxima over three columns first, then
/// each output row combines three of those rows. Taking the rows in order with the same rule as
/// the columns (a later candidate wins when it is larger, or NaN) gives the window's first
/// maximum in row-major order, or its last NaN, exactly as scanning the nine taps does. The
/// per-window scan it replaced was ~6 % of a ResNet18 training step at 84 px (fsct: perf,
/// 2026-12-01): nine dependent compare-and-selects per output, none of them vectorised; here
/// every loop runs along a row with unit stride (the even and odd columns are split first).
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
    let mut scratch = RowScratch::new(d.w, o.w);
    let mut top = RowMax::new(o.w);
    let mut mid = RowMax::new(o.w);
    let mut bottom = RowMax::new(o.w);
    for oy in 0..o.h {
        // Input rows 2·oy − 1 (`top`, the previous output row's `bottom`), 2·oy and 2·oy + 1.
        // The window maxima accumulate in `top` (or in `mid` on the first output row): neither
        // is read again before `row_max` refills it.
        let has_top = oy >= 1;
        if has_top {
            std::mem::swap(&mut top, &mut bottom);
        }
        scratch.row_max(&src[2 * oy * d.w..][..d.w], a, b, &mut mid);
        let has_bottom = 2 * oy + 1 < d.h;
        if has_bottom {
            scratch.row_max(&src[(2 * oy + 1) * d.w..][..d.w], a, b, &mut bottom);
        }
        let window = if has_top {
            combine(&mut top, &mid, 3);
            &mut top
        } else {
            for s in &mut mid.slot {
                *s += 3;
            }
            &mut mid
        };
        if has_bottom {
            combine(window, &bottom, 6);
        }
        let row = oy * o.w;
        for (k, (&v, &s)) in window.value.iter().zip(&window.slot).enumerate() {
            let active = positive_or_nan(v);
            dst[row + k].write(E::from_f32(if active { v } else { 0.0 }));
            if record {
                codes[row + k].write(if active { s } else { INACTIVE });
            }
        }
    }
}

/// The stride-2 maxima over three columns of one input row (`value`) and the column of each
/// within its window (`slot`, 0 to 2).
struct RowMax {
    value: Vec<f32>,
    slot: Vec<u8>,
}

impl RowMax {
    fn new(len: usize) -> Self {
        Self { value: vec![0.0; len], slot: vec![0; len] }
    }
}

/// The even and odd columns of one row after the affine map.
struct RowScratch {
    even: Vec<f32>,
    odd: Vec<f32>,
}

impl RowScratch {
    fn new(w: usize, out_w: usize) -> Self {
        Self { even: vec![0.0; out_w], odd: vec![0.0; w / 2] }
    }

    /// Column `ox` of the output sees columns `2·ox − 1` (`odd[ox − 1]`), `2·ox` (`even[ox]`)
    /// and `2·ox + 1` (`odd[ox]`) of the row, those inside it.
    fn row_max<E: Element>(&mut self, row: &[E], a: f32, b: f32, out: &mut RowMax) {
        let (even, odd) = (&mut self.even, &mut self.odd);
        for (j, e) in even.iter_mut().enumerate() {
            *e = row[2 * j].to_f32() * a + b;
        }
        for (j, o) in odd.iter_mut().enumerate() {
            *o = row[2 * j + 1].to_f32() * a + b;
        }
        let n = even.len();
        let full = odd.len(); // columns `ox < full` have all three taps from `ox = 1` on
        out.value[0] = even[0];
        out.slot[0] = 1;
        if full > 0 {
            (out.value[0], out.slot[0]) = later_wins(even[0], 1, odd[0], 2);
        }
        for ox in 1..full {
            let (v, s) = later_wins(odd[ox - 1], 0, even[ox], 1);
            (out.value[ox], out.slot[ox]) = later_wins(v, s, odd[ox], 2);
        }
        // An odd width leaves the last window without its right column.
        for ox in full.max(1)..n {
            (out.value[ox], out.slot[ox]) = later_wins(odd[ox - 1], 0, even[ox], 1);
        }
    }
}

/// Folds the next row of a window into the running maximum (`slot` offset by `3·dy`).
fn combine(window: &mut RowMax, row: &RowMax, offset: u8) {
    let running = window.value.iter_mut().zip(window.slot.iter_mut());
    for ((b, s), (&v, &t)) in running.zip(row.value.iter().zip(&row.slot)) {
        (*b, *s) = later_wins(*b, *s, v, t + offset);
    }
}

/// The rule of a max-pool scan: a later candidate wins when it is larger or NaN (so the first
/// maximum, or the last NaN, is kept: PyTorch's CPU rule).
#[inline(always)]
fn later_wins(best: f32, slot: u8, v: f32, s: u8) -> (f32, u8) {
    #[allow(clippy::eq_op)]
    let take = (v > best) | (v != v);
    (if take { v } else { best }, if take { s } else { slot })
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
        (best, slot) = later_wins(best, slot, v, s as u8);
    }
    (best, slot)
}
