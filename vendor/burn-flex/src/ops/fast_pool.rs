//! fsct's 2×2, stride-2 max pooling for Flex: forward, forward with indices, and backward, on
//! NCHW data, f32 and f64.
//!
//! Why this file exists (fsct, not upstream): Flex 0.21 runs every 2D max pool through its
//! generic 3D kernel (`pool::max_pool3d_with_indices_impl`): per output element it walks a
//! kernel-sized loop nest with signed bounds checks on every tap, after pre-filling the output
//! and index buffers, and its backward is a single-threaded scatter-add. On a Conv4 training step
//! (105 × 64 × 84 × 84, f32) that was ~12% of the step. The layer is almost always
//! `MaxPool2d(2)` (kernel 2×2, stride 2, no padding, dilation 1, `ceil_mode = false`), whose
//! windows tile the input without overlap, so here:
//!
//! - forward: each output row reads two input rows straight through, four compares per output;
//! - backward: windows do not overlap, so each output gradient is stored (not accumulated) at its
//!   argmax in a zeroed buffer, planes in parallel.
//!
//! Results are bit-identical to the generic kernels, which the tests check:
//!
//! - indices are `i64` (the generic kernel writes `DType::I64` on every platform), flat inside
//!   each input plane: `h * W + w`;
//! - a window's candidates are scanned in row-major order (top-left, top-right, bottom-left,
//!   bottom-right) and a later one wins only if strictly greater (`>`), so ties keep the first;
//! - NaN follows from that scan: a NaN in the top-left corner is kept (nothing compares greater),
//!   a NaN elsewhere is skipped;
//! - the gradient is `0 + dy` (so `-0.0` becomes `+0.0`, as in the generic scatter-add);
//! - odd sizes drop the last row / column (`ceil_mode = false`); they get a zero gradient.
//!
//! The backward trusts the given indices only where each lies inside its own window (always true
//! for indices produced by the forward with these options); a plane with any other index is redone
//! with the generic scatter-add semantics (zero, then `dx[idx] += dy` for `idx >= 0`), restricted
//! to that plane.
//!
//! Anything else (other kernels, strides, padding, dilation, `ceil_mode`, f16/bf16, empty
//! outputs) returns `None` and the caller keeps using Flex's generic code.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// Element types handled natively.
trait Elem:
    Copy + Send + Sync + PartialOrd + core::ops::Add<Output = Self> + bytemuck::Pod + burn_backend::Element
{
    const ZERO: Self;
}
impl Elem for f32 {
    const ZERO: Self = 0.0;
}
impl Elem for f64 {
    const ZERO: Self = 0.0;
}

/// Whether the pooling options are the ones this file handles.
fn is_2x2_stride_2(
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> bool {
    kernel_size == [2, 2] && stride == [2, 2] && padding == [0, 0] && dilation == [1, 1] && !ceil_mode
}

/// `(planes, h, w)` of a rank-4 float tensor of a handled dtype whose pooled output is not empty.
fn geometry(x: &FlexTensor) -> Option<(usize, usize, usize)> {
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    let shape = x.layout().shape();
    if shape.num_dims() != 4 {
        return None;
    }
    let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
    if planes == 0 || h < 2 || w < 2 {
        return None;
    }
    Some((planes, h, w))
}

/// Whether `total` elements are worth fanning out over rayon.
#[cfg(feature = "rayon")]
fn parallel(total: usize) -> bool {
    total >= super::PARALLEL_THRESHOLD
}

/// Max over one input plane (`h × w`) into one output plane (`h/2 × w/2`); with `idx`, also the
/// argmax as a flat index inside the input plane.
fn plane_forward<T: Elem>(x: &[T], h: usize, w: usize, out: &mut [T], idx: Option<&mut [i64]>) {
    let (ho, wo) = (h / 2, w / 2);
    let x = &x[..h * w];
    let out = &mut out[..ho * wo];
    match idx {
        Some(idx) => {
            let idx = &mut idx[..ho * wo];
            let wi = w as i64;
            for oy in 0..ho {
                let r0 = &x[2 * oy * w..][..2 * wo];
                let r1 = &x[(2 * oy + 1) * w..][..2 * wo];
                let o = &mut out[oy * wo..][..wo];
                let ix = &mut idx[oy * wo..][..wo];
                let base = (2 * oy * w) as i64;
                for ox in 0..wo {
                    let (a, b) = (r0[2 * ox], r0[2 * ox + 1]);
                    let (c, d) = (r1[2 * ox], r1[2 * ox + 1]);
                    // Same scan as the generic kernel: first candidate, then strictly greater.
                    let (mut m, mut k) = (a, 0);
                    if b > m {
                        m = b;
                        k = 1;
                    }
                    if c > m {
                        m = c;
                        k = wi;
                    }
                    if d > m {
                        m = d;
                        k = wi + 1;
                    }
                    o[ox] = m;
                    ix[ox] = base + 2 * ox as i64 + k;
                }
            }
        }
        None => {
            for oy in 0..ho {
                let r0 = &x[2 * oy * w..][..2 * wo];
                let r1 = &x[(2 * oy + 1) * w..][..2 * wo];
                let o = &mut out[oy * wo..][..wo];
                for ox in 0..wo {
                    let (a, b) = (r0[2 * ox], r0[2 * ox + 1]);
                    let (c, d) = (r1[2 * ox], r1[2 * ox + 1]);
                    let mut m = a;
                    if b > m {
                        m = b;
                    }
                    if c > m {
                        m = c;
                    }
                    if d > m {
                        m = d;
                    }
                    o[ox] = m;
                }
            }
        }
    }
}

/// Input gradient of one plane (`h × w`) from the output gradient and argmax of one pooled plane;
/// `dx` must be zeroed.
fn plane_backward<T: Elem>(dy: &[T], idx: &[i64], h: usize, w: usize, dx: &mut [T]) {
    let (ho, wo) = (h / 2, w / 2);
    let dy = &dy[..ho * wo];
    let idx = &idx[..ho * wo];
    let dx = &mut dx[..h * w];
    let wi = w as i64;
    let mut inside = true;
    for oy in 0..ho {
        let g = &dy[oy * wo..][..wo];
        let ix = &idx[oy * wo..][..wo];
        let base = (2 * oy * w) as i64;
        for ox in 0..wo {
            let i = ix[ox];
            let k = i.wrapping_sub(base + 2 * ox as i64);
            if k == 0 || k == 1 || k == wi || k == wi + 1 {
                // Windows do not overlap: one write per window. `0 + dy` like the generic
                // scatter-add (turns -0.0 into +0.0).
                dx[i as usize] = T::ZERO + g[ox];
            } else {
                inside = false;
            }
        }
    }
    if !inside {
        // Not indices of this pooling: the generic scatter-add, within the plane.
        dx.fill(T::ZERO);
        for (&i, &g) in idx.iter().zip(dy) {
            if i >= 0 {
                let i = i as usize;
                dx[i] = dx[i] + g;
            }
        }
    }
}

fn forward_typed<T: Elem>(x: &FlexTensor, planes: usize, h: usize, w: usize, with_indices: bool) -> (Vec<T>, Vec<i64>) {
    let x: &[T] = x.storage();
    let (pin, pout) = (h * w, (h / 2) * (w / 2));
    let mut out = vec![T::ZERO; planes * pout];
    let mut idx = if with_indices { vec![0i64; planes * pout] } else { Vec::new() };
    #[cfg(feature = "rayon")]
    if parallel(planes * pin) {
        use rayon::prelude::*;
        if with_indices {
            out.par_chunks_mut(pout)
                .zip(idx.par_chunks_mut(pout))
                .zip(x.par_chunks(pin))
                .for_each(|((o, i), xp)| plane_forward(xp, h, w, o, Some(i)));
        } else {
            out.par_chunks_mut(pout)
                .zip(x.par_chunks(pin))
                .for_each(|(o, xp)| plane_forward(xp, h, w, o, None));
        }
        return (out, idx);
    }
    if with_indices {
        for ((o, i), xp) in out.chunks_mut(pout).zip(idx.chunks_mut(pout)).zip(x.chunks(pin)) {
            plane_forward(xp, h, w, o, Some(i));
        }
    } else {
        for (o, xp) in out.chunks_mut(pout).zip(x.chunks(pin)) {
            plane_forward(xp, h, w, o, None);
        }
    }
    (out, idx)
}

fn backward_typed<T: Elem>(dy: &FlexTensor, idx: &[i64], planes: usize, h: usize, w: usize) -> Vec<T> {
    let dy: &[T] = dy.storage();
    let (pin, pout) = (h * w, (h / 2) * (w / 2));
    // Zeroed: the kernel writes only each window's argmax (fresh pages come zeroed from the OS).
    let mut dx = vec![T::ZERO; planes * pin];
    #[cfg(feature = "rayon")]
    if parallel(planes * pin) {
        use rayon::prelude::*;
        dx.par_chunks_mut(pin)
            .zip(dy.par_chunks(pout))
            .zip(idx.par_chunks(pout))
            .for_each(|((d, g), i)| plane_backward(g, i, h, w, d));
        return dx;
    }
    for ((d, g), i) in dx.chunks_mut(pin).zip(dy.chunks(pout)).zip(idx.chunks(pout)) {
        plane_backward(g, i, h, w, d);
    }
    dx
}

fn pooled_shape(x: &FlexTensor) -> Shape {
    let s = x.layout().shape();
    Shape::from(vec![s[0], s[1], s[2] / 2, s[3] / 2])
}

fn forward(x: &FlexTensor, with_indices: bool) -> Option<(FlexTensor, Option<FlexTensor>)> {
    let (planes, h, w) = geometry(x)?;
    let x = x.to_contiguous();
    let dtype = x.dtype();
    let (out, idx) = match dtype {
        DType::F32 => {
            let (o, i) = forward_typed::<f32>(&x, planes, h, w, with_indices);
            (Bytes::from_elems(o), i)
        }
        DType::F64 => {
            let (o, i) = forward_typed::<f64>(&x, planes, h, w, with_indices);
            (Bytes::from_elems(o), i)
        }
        _ => return None,
    };
    let shape = pooled_shape(&x);
    let indices =
        with_indices.then(|| FlexTensor::new(Bytes::from_elems(idx), Layout::contiguous(shape.clone()), DType::I64));
    Some((FlexTensor::new(out, Layout::contiguous(shape), dtype), indices))
}

/// `max_pool2d` for kernel 2×2, stride 2, no padding, dilation 1, floor mode, f32/f64;
/// `None` for anything else.
pub(crate) fn max_pool2d(
    x: &FlexTensor,
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Option<FlexTensor> {
    if !is_2x2_stride_2(kernel_size, stride, padding, dilation, ceil_mode) {
        return None;
    }
    forward(x, false).map(|(out, _)| out)
}

/// `max_pool2d_with_indices` (output, `i64` indices) for the same case as [`max_pool2d`].
pub(crate) fn max_pool2d_with_indices(
    x: &FlexTensor,
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Option<(FlexTensor, FlexTensor)> {
    if !is_2x2_stride_2(kernel_size, stride, padding, dilation, ceil_mode) {
        return None;
    }
    forward(x, true).map(|(out, idx)| (out, idx.expect("indices requested")))
}

/// `max_pool2d_with_indices_backward` for the same case as [`max_pool2d`]: `x` gives the input
/// shape, `output_grad` and `indices` have the pooled shape.
#[allow(clippy::too_many_arguments)]
pub(crate) fn max_pool2d_with_indices_backward(
    x: &FlexTensor,
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
    output_grad: &FlexTensor,
    indices: &FlexTensor,
) -> Option<FlexTensor> {
    if !is_2x2_stride_2(kernel_size, stride, padding, dilation, ceil_mode) {
        return None;
    }
    let (planes, h, w) = geometry(x)?;
    let dtype = x.dtype();
    let pooled = pooled_shape(x);
    if output_grad.dtype() != dtype
        || indices.dtype() != DType::I64
        || output_grad.layout().shape() != &pooled
        || indices.layout().shape() != &pooled
    {
        return None;
    }
    let dy = output_grad.to_contiguous();
    let indices = indices.to_contiguous();
    let idx: &[i64] = indices.storage();
    let dx = match dtype {
        DType::F32 => Bytes::from_elems(backward_typed::<f32>(&dy, idx, planes, h, w)),
        DType::F64 => Bytes::from_elems(backward_typed::<f64>(&dy, idx, planes, h, w)),
        _ => return None,
    };
    Some(FlexTensor::new(dx, Layout::contiguous(x.layout().shape().clone()), dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pool;
    use burn_backend::TensorData;

    const K: [usize; 2] = [2, 2];
    const S: [usize; 2] = [2, 2];
    const P: [usize; 2] = [0, 0];
    const D: [usize; 2] = [1, 1];

    fn lcg(n: usize, seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407 ^ n as u64);
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s >> 33
        }
    }

    /// Random values in [-0.5, 0.5).
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = lcg(n, seed);
        (0..n).map(|_| (r() as f32 / (1u64 << 31) as f32) - 0.5).collect()
    }

    /// Values from {-1, 0, 1}: plenty of ties, including all-equal windows.
    fn ties(n: usize, seed: u64) -> Vec<f32> {
        let mut r = lcg(n, seed);
        (0..n).map(|_| (r() % 3) as f32 - 1.0).collect()
    }

    /// Random values with NaN, ±inf and -0.0 sprinkled in.
    fn specials(n: usize, seed: u64) -> Vec<f32> {
        let mut r = lcg(n, seed);
        (0..n)
            .map(|_| match r() % 8 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -0.0,
                4 => 0.0,
                v => v as f32 - 6.0,
            })
            .collect()
    }

    fn tensor<T: Elem>(v: Vec<T>, shape: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(v, shape.to_vec()))
    }

    fn bits32(t: &FlexTensor) -> Vec<u32> {
        t.to_contiguous().storage::<f32>().iter().map(|v| v.to_bits()).collect()
    }

    fn bits64(t: &FlexTensor) -> Vec<u64> {
        t.to_contiguous().storage::<f64>().iter().map(|v| v.to_bits()).collect()
    }

    fn ints(t: &FlexTensor) -> Vec<i64> {
        assert_eq!(t.dtype(), DType::I64);
        t.to_contiguous().storage::<i64>().to_vec()
    }

    const SHAPES: &[[usize; 4]] = &[
        [1, 1, 4, 4],
        [1, 1, 2, 2],   // 1×1 output
        [1, 1, 3, 3],   // 1×1 output, odd
        [2, 3, 8, 6],
        [3, 2, 21, 21], // odd: 10×10
        [2, 2, 7, 10],  // odd height only
        [2, 2, 10, 7],  // odd width only
        [1, 1, 2, 9],   // a single output row
        [4, 5, 84, 84], // the Conv4 geometry at a small batch, parallel path
        [2, 8, 181, 180], // > PARALLEL_THRESHOLD, odd height
    ];

    /// Forward, forward with indices and backward against the generic kernels, f32.
    fn check_f32(shape: [usize; 4], data: Vec<f32>, seed: u64) {
        let n_out = shape[0] * shape[1] * (shape[2] / 2) * (shape[3] / 2);
        let x = tensor(data, shape);
        let (ref_out, ref_idx) = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
        let (out, idx) = max_pool2d_with_indices(&x, K, S, P, D, false).expect("fast path");
        assert_eq!(out.layout().shape(), ref_out.layout().shape(), "{shape:?}");
        assert_eq!(idx.layout().shape(), ref_idx.layout().shape(), "{shape:?}");
        assert_eq!(bits32(&out), bits32(&ref_out), "{shape:?}: values");
        assert_eq!(ints(&idx), ints(&ref_idx), "{shape:?}: indices");

        let plain = max_pool2d(&x, K, S, P, D, false).expect("fast path");
        assert_eq!(bits32(&plain), bits32(&ref_out), "{shape:?}: max_pool2d");
        let ref_plain = pool::max_pool2d_f32(x.clone(), K, S, P, D, false);
        assert_eq!(bits32(&plain), bits32(&ref_plain), "{shape:?}: max_pool2d");

        // Gradients with -0.0 and exact values so the comparison is bitwise.
        let mut g = random(n_out, seed + 100);
        if !g.is_empty() {
            g[0] = -0.0;
        }
        let dy = tensor(g, [shape[0], shape[1], shape[2] / 2, shape[3] / 2]);
        let ref_dx = pool::max_pool2d_backward_f32(x.clone(), dy.clone(), ref_idx);
        let dx = max_pool2d_with_indices_backward(&x, K, S, P, D, false, &dy, &idx).expect("fast path");
        assert_eq!(dx.layout().shape(), ref_dx.layout().shape(), "{shape:?}");
        assert_eq!(bits32(&dx), bits32(&ref_dx), "{shape:?}: backward");
    }

    #[test]
    fn matches_generic_random() {
        for (i, &s) in SHAPES.iter().enumerate() {
            check_f32(s, random(s.iter().product(), i as u64), i as u64);
        }
    }

    #[test]
    fn matches_generic_with_ties() {
        for (i, &s) in SHAPES.iter().enumerate() {
            check_f32(s, ties(s.iter().product(), 10 + i as u64), i as u64);
        }
        // All-equal input: every window keeps its top-left element.
        check_f32([2, 3, 6, 5], vec![1.5; 180], 7);
    }

    #[test]
    fn matches_generic_with_nan_inf_and_signed_zero() {
        for (i, &s) in SHAPES.iter().enumerate() {
            check_f32(s, specials(s.iter().product(), 20 + i as u64), i as u64);
        }
    }

    #[test]
    fn matches_generic_f64() {
        for (i, &s) in SHAPES.iter().enumerate() {
            let n: usize = s.iter().product();
            let data: Vec<f64> = if i % 2 == 0 { random(n, i as u64) } else { ties(n, i as u64) }
                .into_iter()
                .map(f64::from)
                .collect();
            let x = tensor(data, s);
            let (ref_out, ref_idx) = pool::max_pool2d_with_indices_f64(x.clone(), K, S, P, D, false);
            let (out, idx) = max_pool2d_with_indices(&x, K, S, P, D, false).expect("fast path");
            assert_eq!(bits64(&out), bits64(&ref_out), "{s:?}");
            assert_eq!(ints(&idx), ints(&ref_idx), "{s:?}");
            let plain = max_pool2d(&x, K, S, P, D, false).expect("fast path");
            assert_eq!(bits64(&plain), bits64(&ref_out), "{s:?}");
            let pooled = [s[0], s[1], s[2] / 2, s[3] / 2];
            let g: Vec<f64> = random(pooled.iter().product(), 5).into_iter().map(f64::from).collect();
            let dy = tensor(g, pooled);
            let ref_dx = pool::max_pool2d_backward_f64(x.clone(), dy.clone(), ref_idx);
            let dx = max_pool2d_with_indices_backward(&x, K, S, P, D, false, &dy, &idx).expect("fast path");
            assert_eq!(bits64(&dx), bits64(&ref_dx), "{s:?}: backward");
        }
    }

    #[test]
    fn non_contiguous_input() {
        // NHWC buffer viewed as NCHW.
        let (n, c, h, w) = (2, 3, 9, 8);
        let nhwc = tensor(random(n * c * h * w, 3), [n, h, w, c]);
        let x = nhwc.permute(&[0, 3, 1, 2]);
        assert!(!x.is_contiguous());
        let (ref_out, ref_idx) = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
        let (out, idx) = max_pool2d_with_indices(&x, K, S, P, D, false).expect("fast path");
        assert_eq!(bits32(&out), bits32(&ref_out));
        assert_eq!(ints(&idx), ints(&ref_idx));
        // Non-contiguous gradient too.
        let g = tensor(random(n * c * 4 * 4, 4), [n, 4, 4, c]).permute(&[0, 3, 1, 2]);
        let ref_dx = pool::max_pool2d_backward_f32(x.clone(), g.clone(), ref_idx);
        let dx = max_pool2d_with_indices_backward(&x, K, S, P, D, false, &g, &idx).expect("fast path");
        assert_eq!(bits32(&dx), bits32(&ref_dx));
    }

    #[test]
    fn backward_with_foreign_indices_matches_scatter_add() {
        // Indices outside their window (not produced by this pooling) still get the generic
        // scatter-add, plane by plane, including repeated targets.
        let shape = [2, 2, 5, 4];
        let x = tensor(random(80, 1), shape);
        let idx_data: Vec<i64> = vec![0, 0, 19, 3, 5, 6, 7, 8, /* plane 2 */ 0, 1, 4, 5, /* plane 3 */ 2, 7, 8, 18];
        let (_, good) = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
        let mut idx_data = idx_data;
        // Plane 2 keeps valid indices from the forward.
        idx_data[8..12].copy_from_slice(&ints(&good)[8..12]);
        let idx = FlexTensor::from_data(TensorData::new(idx_data, vec![2, 2, 2, 2]));
        let dy = tensor(random(16, 2), [2, 2, 2, 2]);
        let ref_dx = pool::max_pool2d_backward_f32(x.clone(), dy.clone(), idx.clone());
        let dx = max_pool2d_with_indices_backward(&x, K, S, P, D, false, &dy, &idx).expect("fast path");
        assert_eq!(bits32(&dx), bits32(&ref_dx));
    }

    #[test]
    fn other_options_fall_through() {
        let x = tensor(random(2 * 3 * 8 * 8, 1), [2, 3, 8, 8]);
        assert!(max_pool2d(&x, [3, 3], S, P, D, false).is_none());
        assert!(max_pool2d(&x, K, [1, 1], P, D, false).is_none());
        assert!(max_pool2d(&x, K, S, [1, 1], D, false).is_none());
        assert!(max_pool2d(&x, K, S, P, [2, 2], false).is_none());
        assert!(max_pool2d(&x, K, S, P, D, true).is_none());
        assert!(max_pool2d_with_indices(&x, [2, 3], S, P, D, false).is_none());
        // Empty output along a dimension.
        let thin = tensor(random(2 * 3 * 1 * 8, 1), [2, 3, 1, 8]);
        assert!(max_pool2d(&thin, K, S, P, D, false).is_none());
        // Half precision.
        let half = FlexTensor::from_data(TensorData::new(vec![burn_std::f16::from_f32(1.0); 16], vec![1, 1, 4, 4]));
        assert!(max_pool2d(&half, K, S, P, D, false).is_none());
    }

    #[test]
    fn module_ops_use_the_fast_path_and_agree() {
        use crate::Flex;
        use burn_backend::ops::ModuleOps;
        let s = [3, 4, 11, 10];
        let x = tensor(ties(s.iter().product(), 9), s);
        let (ref_out, ref_idx) = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
        let r = <Flex as ModuleOps<Flex>>::max_pool2d_with_indices(x.clone(), K, S, P, D, false);
        assert_eq!(bits32(&r.output), bits32(&ref_out));
        assert_eq!(ints(&r.indices), ints(&ref_idx));
        let plain = <Flex as ModuleOps<Flex>>::max_pool2d(x.clone(), K, S, P, D, false);
        assert_eq!(bits32(&plain), bits32(&ref_out));
        let dy = tensor(random(3 * 4 * 5 * 5, 8), [3, 4, 5, 5]);
        let ref_dx = pool::max_pool2d_backward_f32(x.clone(), dy.clone(), ref_idx);
        let dx = <Flex as ModuleOps<Flex>>::max_pool2d_with_indices_backward(x, K, S, P, D, false, dy, r.indices);
        assert_eq!(bits32(&dx.x_grad), bits32(&ref_dx));
    }

    /// Old (generic) vs new kernels on the Conv4 geometry. Run with
    /// `RAYON_NUM_THREADS=2 cargo test --release --lib fast_pool::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        extern crate std;
        use std::time::Instant;
        let s = [105, 64, 84, 84];
        let x = tensor(random(s.iter().product(), 1), s);
        let pooled = [105, 64, 42, 42];
        let dy = tensor(random(pooled.iter().product(), 2), pooled);
        let reps = 7;
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let t = |f: &mut dyn FnMut()| {
            f(); // warm-up
            median((0..reps).map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64() * 1e3
            }).collect())
        };
        let (_, idx) = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
        let old_fwd = t(&mut || {
            let r = pool::max_pool2d_with_indices_f32(x.clone(), K, S, P, D, false);
            core::hint::black_box(r);
        });
        let new_fwd = t(&mut || {
            let r = max_pool2d_with_indices(&x, K, S, P, D, false).unwrap();
            core::hint::black_box(r);
        });
        let old_plain = t(&mut || {
            let r = pool::max_pool2d_f32(x.clone(), K, S, P, D, false);
            core::hint::black_box(r);
        });
        let new_plain = t(&mut || {
            let r = max_pool2d(&x, K, S, P, D, false).unwrap();
            core::hint::black_box(r);
        });
        let old_bwd = t(&mut || {
            let r = pool::max_pool2d_backward_f32(x.clone(), dy.clone(), idx.clone());
            core::hint::black_box(r);
        });
        let new_bwd = t(&mut || {
            let r = max_pool2d_with_indices_backward(&x, K, S, P, D, false, &dy, &idx).unwrap();
            core::hint::black_box(r);
        });
        // The floor under the backward: allocating and first-touching an input-sized zeroed buffer
        // (page faults; the generic backward pays the same).
        let n: usize = s.iter().product();
        let floor = t(&mut || {
            let mut v = vec![0f32; n];
            for c in v.chunks_mut(1024) {
                c[0] = 1.0;
            }
            core::hint::black_box(v);
        });
        std::println!("max_pool2d 2x2/s2 on {s:?} f32, median of {reps} (ms):");
        std::println!("  forward+indices  old {old_fwd:8.1}  new {new_fwd:8.1}  x{:.1}", old_fwd / new_fwd);
        std::println!("  forward          old {old_plain:8.1}  new {new_plain:8.1}  x{:.1}", old_plain / new_plain);
        std::println!("  backward         old {old_bwd:8.1}  new {new_bwd:8.1}  x{:.1}", old_bwd / new_bwd);
        std::println!("  zeroed input-sized buffer, first touch only: {floor:8.1}");
    }
}
