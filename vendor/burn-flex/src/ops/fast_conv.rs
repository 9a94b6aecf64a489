//! fsct's 2D convolution for Flex: forward, input gradient, weight gradient and bias gradient,
//! all on NCHW data with im2col + `gemm`, no layout conversions.
//!
//! Why this file exists (fsct, not upstream): Flex 0.21 runs conv2d as a 3D convolution in
//! channels-last layout and leaves the backward pass to Burn's generic decomposition
//! (`conv_transpose2d` for the input gradient; swapped-axis convolutions for the weight
//! gradient). On a Conv4 training step at 84 px that spent most of the time in strided copies
//! (`StridedIter`), not in arithmetic. Here every pass walks the NCHW buffers directly:
//!
//! - forward: `out[n] = W · im2col(x[n])`;
//! - input gradient: `dx[n] = col2im(Wᵀ · dy[n])`;
//! - weight gradient: `dW = Σₙ dy[n] · im2col(x[n])ᵀ`, one accumulator per thread;
//! - bias gradient: `db = Σₙ,ₚ dy`.
//!
//! Images are processed in chunks (enough of them that the gemm's column count is at least
//! [`MIN_COLUMNS`]) so deep layers with tiny feature maps still feed the gemm a wide matrix.
//! Chunks run in parallel on rayon with single-threaded gemms; when there are too few chunks to
//! keep every thread busy, the gemm itself goes parallel instead. Groups, stride, padding and
//! dilation are supported. f32 and f64 compute natively; f16 and bf16 are computed in f32 and
//! rounded once at the end (more accurate than half accumulation, and faster on the CPU).
//!
//! 3×3 stride-1 "same" convolutions with enough channels take Winograd F(2×2, 3×3) or
//! F(3×3, 3×3) instead ([`winograd`], chosen per geometry by [`Algorithm`]): 2.25× or 3.24×
//! fewer multiplications.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_std::{Bytes, Shape, bf16, f16};

use crate::{FlexTensor, Layout};

mod winograd;

/// Minimum gemm width (columns = images in a chunk × output pixels).
const MIN_COLUMNS: usize = 512;

/// Element types computed natively.
trait Elem:
    Copy
    + Send
    + Sync
    + 'static
    + core::ops::AddAssign
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + bytemuck::Pod
    + burn_backend::Element
{
    const ZERO: Self;
    const ONE: Self;
    const HALF: Self;
    /// 1/6, for Winograd F(3×3, 3×3)'s filter transform.
    const SIXTH: Self;
}
impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    const SIXTH: Self = 1.0 / 6.0;
}
impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;
    const SIXTH: Self = 1.0 / 6.0;
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &Shape, weight: &Shape, options: &ConvOptions<2>) -> Self {
        let (kh, kw) = (weight[2], weight[3]);
        let ho = calculate_conv_output_size(kh, options.stride[0], options.padding[0], options.dilation[0], x[2]);
        let wo = calculate_conv_output_size(kw, options.stride[1], options.padding[1], options.dilation[1], x[3]);
        Self {
            batch: x[0],
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: weight[0],
            kh,
            kw,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
            groups: options.groups,
            ho,
            wo,
        }
    }
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }
    fn in_per_group(&self) -> usize {
        self.c_in / self.groups
    }
    fn out_per_group(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the im2col matrix of one group.
    fn k(&self) -> usize {
        self.in_per_group() * self.kh * self.kw
    }
    fn image_in(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn image_out(&self) -> usize {
        self.c_out * self.pixels()
    }
    /// Images per chunk.
    fn chunk(&self) -> usize {
        MIN_COLUMNS.div_ceil(self.pixels().max(1)).clamp(1, self.batch.max(1))
    }
    /// Valid output columns `[lo, hi)` for kernel column `kx` (input column inside the image).
    fn valid_cols(&self, kx: usize) -> (usize, usize) {
        valid_range(kx * self.dilation[1], self.padding[1], self.stride[1], self.w, self.wo)
    }
}

/// Output positions `o` in `[0, n_out)` with `0 <= o*stride + offset - pad < n_in`.
fn valid_range(offset: usize, pad: usize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    // o*stride + offset >= pad
    let lo = if offset >= pad { 0 } else { (pad - offset).div_ceil(stride) };
    // o*stride + offset - pad <= n_in - 1
    let hi = if n_in + pad > offset { (n_in + pad - offset - 1) / stride + 1 } else { 0 };
    (lo.min(n_out), hi.min(n_out).max(lo.min(n_out)))
}

/// Writes the im2col matrix of one image and one group into `col` (row length `ld`, starting
/// at column `col0`): row `(c, ky, kx)`, column `oy * wo + ox`.
///
/// A strided convolution first splits each input row into its `sw` column phases (columns
/// `q, q + sw, q + 2·sw, …` side by side), so every row of the matrix is a contiguous copy: the
/// element-by-element strided gather was a third of a 224 px ResNet stem's forward pass (fsct:
/// perf, 7×7 stride 2, K = 147).
fn im2col<T: Elem>(g: &Geometry, x: &[T], group: usize, col: &mut [T], ld: usize, col0: usize) {
    let cpg = g.in_per_group();
    let (ho, wo) = (g.ho, g.wo);
    let [sh, sw] = g.stride;
    // Phase `q` of input row `iy` starts at `(iy * sw + q) * phase_w`.
    let phase_w = g.w.div_ceil(sw);
    let mut phases: Vec<T> = if sw > 1 { vec![T::ZERO; g.h * sw * phase_w] } else { Vec::new() };
    for c in 0..cpg {
        let plane = &x[(group * cpg + c) * g.h * g.w..][..g.h * g.w];
        if sw > 1 {
            for (iy, row) in plane.chunks_exact(g.w).enumerate() {
                for q in 0..sw.min(g.w) {
                    let dst = &mut phases[(iy * sw + q) * phase_w..][..phase_w];
                    for (d, v) in dst.iter_mut().zip(row[q..].iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
        for ky in 0..g.kh {
            let (ylo, yhi) = valid_range(ky * g.dilation[0], g.padding[0], sh, g.h, ho);
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld + col0..][..ho * wo];
                let (xlo, xhi) = g.valid_cols(kx);
                for oy in 0..ho {
                    let out = &mut dst[oy * wo..][..wo];
                    if oy < ylo || oy >= yhi || xlo >= xhi {
                        out.fill(T::ZERO);
                        continue;
                    }
                    let iy = oy * sh + ky * g.dilation[0] - g.padding[0];
                    let src = &plane[iy * g.w..][..g.w];
                    out[..xlo].fill(T::ZERO);
                    out[xhi..].fill(T::ZERO);
                    let ix0 = xlo * sw + kx * g.dilation[1] - g.padding[1];
                    if sw == 1 {
                        out[xlo..xhi].copy_from_slice(&src[ix0..ix0 + (xhi - xlo)]);
                    } else {
                        let phase = &phases[(iy * sw + ix0 % sw) * phase_w..][..phase_w];
                        let start = ix0 / sw;
                        out[xlo..xhi].copy_from_slice(&phase[start..start + (xhi - xlo)]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds the columns of one image back into its input gradient.
fn col2im<T: Elem>(g: &Geometry, col: &[T], ld: usize, col0: usize, group: usize, dx: &mut [T]) {
    let cpg = g.in_per_group();
    let (ho, wo) = (g.ho, g.wo);
    let [sh, sw] = g.stride;
    for c in 0..cpg {
        let plane = &mut dx[(group * cpg + c) * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            let (ylo, yhi) = valid_range(ky * g.dilation[0], g.padding[0], sh, g.h, ho);
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                let src = &col[row * ld + col0..][..ho * wo];
                let (xlo, xhi) = g.valid_cols(kx);
                if xlo >= xhi {
                    continue;
                }
                let ix0 = xlo * sw + kx * g.dilation[1] - g.padding[1];
                for oy in ylo..yhi {
                    let iy = oy * sh + ky * g.dilation[0] - g.padding[0];
                    let dst = &mut plane[iy * g.w..][..g.w];
                    let s = &src[oy * wo + xlo..oy * wo + xhi];
                    if sw == 1 {
                        for (d, v) in dst[ix0..ix0 + s.len()].iter_mut().zip(s) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[ix0..].iter_mut().step_by(sw).zip(s) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` with explicit (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds: the last element each operand touches lies inside its slice.
    assert!((m - 1) * dst_rs + n <= dst.len(), "fast_conv: gemm dst out of bounds");
    if k > 0 {
        assert!((m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(), "fast_conv: gemm lhs out of bounds");
        assert!((k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(), "fast_conv: gemm rhs out of bounds");
    }
    #[cfg(feature = "rayon")]
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    #[cfg(not(feature = "rayon"))]
    let parallelism = {
        let _ = parallel;
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access inside the slices; `dst` is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// The images of a batch as chunks for each worker: `(first image, images)`.
///
/// The batch is split into one contiguous run per worker whose sizes differ by at most one image,
/// and each run into as few chunks of at most `nb` images as it takes (so no chunk's scratch
/// buffers outgrow those of an `nb`-image chunk; chunks of more than half `nb`), the larger
/// chunks first so a worker's chunk size changes at most once (its scratch buffers keep their
/// layout). Cutting the batch into `nb`-image chunks and handing each worker the same number
/// of chunks left the workers up to 19 % apart on ResNet18's small maps (105 images in 4 chunks of
/// 29, 29, 29 and 18) while the other one waited (performance log, row 27).
fn worker_chunks(batch: usize, nb: usize) -> Vec<Vec<(usize, usize)>> {
    let nb = nb.max(1);
    let workers = threads().min(batch.div_ceil(nb)).max(1);
    (0..workers)
        .map(|w| {
            let (lo, hi) = (w * batch / workers, (w + 1) * batch / workers);
            let m = hi - lo;
            let k = m.div_ceil(nb);
            let (q, r) = if k == 0 { (0, 0) } else { (m / k, m % k) };
            let mut n0 = lo;
            (0..k)
                .map(|i| {
                    let imgs = q + usize::from(i < r);
                    n0 += imgs;
                    (n0 - imgs, imgs)
                })
                .collect()
        })
        .collect()
}

/// Splits `data` (`per_image` elements per image) into the chunks of `chunks`, in order.
fn split_chunks<'a, T>(mut data: &'a mut [T], chunks: &[(usize, usize)], per_image: usize) -> Vec<(usize, &'a mut [T])> {
    chunks
        .iter()
        .map(|&(n0, imgs)| {
            let (head, tail) = core::mem::take(&mut data).split_at_mut(imgs * per_image);
            data = tail;
            (n0, head)
        })
        .collect()
}

/// Scratch buffers of one worker, reused across the chunks it processes (fresh multi-MiB
/// buffers per chunk cost more in page faults than the im2col itself).
#[derive(Default)]
struct Scratch<T> {
    col: Vec<T>,
    tmp: Vec<T>,
}

/// Runs `f(scratch, index, item)` over `items`, in parallel when rayon is on.
fn for_each_chunk<T: Send, E: Elem, F: Fn(&mut Scratch<E>, usize, T) + Sync + Send>(items: Vec<T>, f: F) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        items
            .into_par_iter()
            .enumerate()
            .for_each_init(|| Scratch { col: Vec::new(), tmp: Vec::new() }, |scratch, (i, item)| f(scratch, i, item));
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = Scratch { col: Vec::new(), tmp: Vec::new() };
        items.into_iter().enumerate().for_each(|(i, item)| f(&mut scratch, i, item));
    }
}

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    /// im2col + gemm: every geometry.
    Im2col,
    /// Winograd F(2×2, 3×3) or F(3×3, 3×3): 3×3 stride-1 "same" convolutions with enough
    /// channels (see [`winograd::choose`]).
    Winograd(winograd::Variant),
}

impl Algorithm {
    fn for_geometry(g: &Geometry) -> Self {
        winograd::choose(g).map_or(Self::Im2col, Self::Winograd)
    }
    fn forward<T: Elem>(self, g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
        match self {
            Self::Im2col => forward(g, x, w, bias),
            Self::Winograd(variant) => winograd::forward(variant, g, x, w, bias),
        }
    }
    fn input_grad<T: Elem>(self, g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
        match self {
            Self::Im2col => input_grad(g, w, dy),
            Self::Winograd(variant) => winograd::input_grad(variant, g, w, dy),
        }
    }
    fn weight_grad<T: Elem>(self, g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
        match self {
            Self::Im2col => weight_grad(g, x, dy),
            Self::Winograd(variant) => winograd::weight_grad(variant, g, x, dy),
        }
    }
}

fn forward<T: Elem>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (p, k, cog) = (g.pixels(), g.k(), g.out_per_group());
    let mut out = vec![T::ZERO; g.batch * g.image_out()];
    let chunks: Vec<(usize, usize)> = worker_chunks(g.batch, g.chunk()).concat();
    let inner_parallel = chunks.len() < 2 * threads();
    let chunks = split_chunks(&mut out, &chunks, g.image_out());
    for_each_chunk(chunks, |scratch: &mut Scratch<T>, _, (n0, out_chunk)| {
        let imgs = out_chunk.len() / g.image_out();
        let ld = imgs * p;
        // im2col writes every element of `col` and the gemm every element of `tmp`.
        scratch.col.resize(k * ld, T::ZERO);
        scratch.tmp.resize(if imgs > 1 { cog * ld } else { 0 }, T::ZERO);
        let Scratch { col, tmp } = scratch;
        for group in 0..g.groups {
            for j in 0..imgs {
                im2col(g, &x[(n0 + j) * g.image_in()..][..g.image_in()], group, col, ld, j * p);
            }
            let wg = &w[group * cog * k..][..cog * k];
            if imgs == 1 {
                let dst = &mut out_chunk[group * cog * p..][..cog * p];
                gemm(cog, p, k, dst, p, false, wg, (k, 1), col, (ld, 1), inner_parallel);
            } else {
                gemm(cog, ld, k, tmp, ld, false, wg, (k, 1), col, (ld, 1), inner_parallel);
                for j in 0..imgs {
                    for o in 0..cog {
                        let dst = &mut out_chunk[j * g.image_out() + (group * cog + o) * p..][..p];
                        dst.copy_from_slice(&tmp[o * ld + j * p..][..p]);
                    }
                }
            }
        }
        if let Some(bias) = bias {
            // Planes run image by image, channel by channel.
            for (i, plane) in out_chunk.chunks_mut(p).enumerate() {
                let b = bias[i % g.c_out];
                for v in plane {
                    *v += b;
                }
            }
        }
    });
    out
}

/// Gathers `dy` of the images of a chunk and one group into a `cog × (imgs·p)` matrix; a single
/// image is used in place.
fn gather_dy<'a, T: Elem>(g: &Geometry, dy: &'a [T], n0: usize, imgs: usize, group: usize, buf: &'a mut Vec<T>) -> (&'a [T], usize) {
    let (p, cog) = (g.pixels(), g.out_per_group());
    if imgs == 1 {
        return (&dy[n0 * g.image_out() + group * cog * p..][..cog * p], p);
    }
    let ld = imgs * p;
    buf.resize(cog * ld, T::ZERO);
    for j in 0..imgs {
        for o in 0..cog {
            buf[o * ld + j * p..][..p].copy_from_slice(&dy[(n0 + j) * g.image_out() + (group * cog + o) * p..][..p]);
        }
    }
    (&buf[..], ld)
}

fn input_grad<T: Elem>(g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    let (p, k, cog) = (g.pixels(), g.k(), g.out_per_group());
    let mut dx = vec![T::ZERO; g.batch * g.image_in()];
    let chunks: Vec<(usize, usize)> = worker_chunks(g.batch, g.chunk()).concat();
    let inner_parallel = chunks.len() < 2 * threads();
    let chunks = split_chunks(&mut dx, &chunks, g.image_in());
    for_each_chunk(chunks, |scratch: &mut Scratch<T>, _, (n0, dx_chunk)| {
        let imgs = dx_chunk.len() / g.image_in();
        let ld = imgs * p;
        // The gemm overwrites all of `dcol`.
        scratch.col.resize(k * ld, T::ZERO);
        let Scratch { col: dcol, tmp: buf } = scratch;
        for group in 0..g.groups {
            let (dyg, dy_ld) = gather_dy(g, dy, n0, imgs, group, buf);
            let wg = &w[group * cog * k..][..cog * k];
            // Wᵀ: element (r, o) of the k × cog matrix is wg[o * k + r].
            gemm(k, ld, cog, dcol, ld, false, wg, (1, k), dyg, (dy_ld, 1), inner_parallel);
            for j in 0..imgs {
                col2im(g, dcol, ld, j * p, group, &mut dx_chunk[j * g.image_in()..][..g.image_in()]);
            }
        }
    });
    dx
}

fn weight_grad<T: Elem>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (p, k, cog) = (g.pixels(), g.k(), g.out_per_group());
    let size = g.c_out * k;
    // Each worker takes a contiguous run of chunks and keeps its own accumulator.
    let chunks = worker_chunks(g.batch, g.chunk());
    let workers = chunks.len();
    let inner_parallel = workers < threads();
    let partials: Vec<Vec<T>> = {
        let work = |wid: usize| -> Vec<T> {
            let mut acc = vec![T::ZERO; size];
            let mut col = Vec::new();
            let mut buf = Vec::new();
            for &(n0, imgs) in &chunks[wid] {
                let ld = imgs * p;
                col.resize(k * ld, T::ZERO);
                for group in 0..g.groups {
                    for j in 0..imgs {
                        im2col(g, &x[(n0 + j) * g.image_in()..][..g.image_in()], group, &mut col, ld, j * p);
                    }
                    let (dyg, dy_ld) = gather_dy(g, dy, n0, imgs, group, &mut buf);
                    // colᵀ: element (c, r) of the (imgs·p) × k matrix is col[r * ld + c].
                    let accg = &mut acc[group * cog * k..][..cog * k];
                    gemm(cog, k, ld, accg, k, true, dyg, (dy_ld, 1), &col, (1, ld), inner_parallel);
                }
            }
            acc
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            (0..workers).into_par_iter().map(work).collect()
        }
        #[cfg(not(feature = "rayon"))]
        {
            (0..workers).map(work).collect()
        }
    };
    sum_partials(partials, size)
}

/// The element-wise sum of the workers' accumulators (`size` values each; zeros when there
/// were none).
fn sum_partials<T: Elem>(partials: Vec<Vec<T>>, size: usize) -> Vec<T> {
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| vec![T::ZERO; size]);
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

fn bias_grad<T: Elem>(batch: usize, c_out: usize, p: usize, dy: &[T]) -> Vec<T> {
    let mut db = vec![T::ZERO; c_out];
    for n in 0..batch {
        for (o, acc) in db.iter_mut().enumerate() {
            *acc += lane_sum(&dy[(n * c_out + o) * p..][..p]);
        }
    }
    db
}

/// `Σ v` over eight independent lanes: a single running sum is one dependent add per element,
/// which on the 190 MiB gradient of a Conv4's first block cost ~3 % of a training step
/// (fsct: perf, after the fused batch-norm tail).
fn lane_sum<T: Elem>(values: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let chunks = values.chunks_exact(8);
    let mut total = T::ZERO;
    for &v in chunks.remainder() {
        total += v;
    }
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    for lane in lanes {
        total += lane;
    }
    total
}

// ----------------------------------------------------------------------------------------------
// Dtype dispatch: the entry points Flex's `ModuleOps` calls.
// ----------------------------------------------------------------------------------------------

/// A tensor's values in logical order, as f32 (f32/f16/bf16) or f64.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn values(t: &FlexTensor) -> Values {
    let t = t.to_contiguous();
    let n = t.layout().num_elements();
    match t.dtype() {
        DType::F64 => Values::F64(t.storage::<f64>()[..n].to_vec()),
        DType::F32 => Values::F32(t.storage::<f32>()[..n].to_vec()),
        DType::F16 => Values::F32(t.storage::<f16>()[..n].iter().map(|v| v.to_f32()).collect()),
        DType::BF16 => Values::F32(t.storage::<bf16>()[..n].iter().map(|v| v.to_f32()).collect()),
        other => panic!("conv2d: unsupported dtype {other:?}"),
    }
}

/// Borrows an f32 tensor's contiguous storage without copying when possible.
fn with_values<R>(t: &FlexTensor, f: impl FnOnce(ValuesRef<'_>) -> R) -> R {
    let t = t.to_contiguous();
    let n = t.layout().num_elements();
    match t.dtype() {
        DType::F32 => f(ValuesRef::F32(&t.storage::<f32>()[..n])),
        DType::F64 => f(ValuesRef::F64(&t.storage::<f64>()[..n])),
        _ => match values(&t) {
            Values::F32(v) => f(ValuesRef::F32(&v)),
            Values::F64(v) => f(ValuesRef::F64(&v)),
        },
    }
}

enum ValuesRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

fn output(values: Values, shape: Shape, dtype: DType) -> FlexTensor {
    let layout = Layout::contiguous(shape);
    match (values, dtype) {
        (Values::F32(v), DType::F32) => FlexTensor::new(Bytes::from_elems(v), layout, dtype),
        (Values::F64(v), DType::F64) => FlexTensor::new(Bytes::from_elems(v), layout, dtype),
        (Values::F32(v), DType::F16) => {
            FlexTensor::new(Bytes::from_elems(v.into_iter().map(f16::from_f32).collect::<Vec<_>>()), layout, dtype)
        }
        (Values::F32(v), DType::BF16) => {
            FlexTensor::new(Bytes::from_elems(v.into_iter().map(bf16::from_f32).collect::<Vec<_>>()), layout, dtype)
        }
        (_, dtype) => panic!("conv2d: unsupported dtype {dtype:?}"),
    }
}

fn mismatch(op: &str) -> ! {
    panic!("{op}: operands have different float dtypes")
}

/// `conv2d` forward.
pub(crate) fn conv2d(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, options: &ConvOptions<2>) -> FlexTensor {
    let g = Geometry::new(x.layout().shape(), weight.layout().shape(), options);
    let dtype = x.dtype();
    let bias = bias.map(|b| values(&b));
    let alg = Algorithm::for_geometry(&g);
    let out = with_values(&x, |xv| {
        with_values(&weight, |wv| match (xv, wv, &bias) {
            (ValuesRef::F32(x), ValuesRef::F32(w), None) => Values::F32(alg.forward(&g, x, w, None)),
            (ValuesRef::F32(x), ValuesRef::F32(w), Some(Values::F32(b))) => Values::F32(alg.forward(&g, x, w, Some(b))),
            (ValuesRef::F64(x), ValuesRef::F64(w), None) => Values::F64(alg.forward(&g, x, w, None)),
            (ValuesRef::F64(x), ValuesRef::F64(w), Some(Values::F64(b))) => Values::F64(alg.forward(&g, x, w, Some(b))),
            _ => mismatch("conv2d"),
        })
    });
    output(out, Shape::from(vec![g.batch, g.c_out, g.ho, g.wo]), dtype)
}

/// Gradient of `conv2d` with respect to its input.
pub(crate) fn conv2d_x_backward(x: FlexTensor, weight: FlexTensor, grad: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
    let g = Geometry::new(x.layout().shape(), weight.layout().shape(), options);
    let dtype = x.dtype();
    let alg = Algorithm::for_geometry(&g);
    let dx = with_values(&weight, |wv| {
        with_values(&grad, |dv| match (wv, dv) {
            (ValuesRef::F32(w), ValuesRef::F32(d)) => Values::F32(alg.input_grad(&g, w, d)),
            (ValuesRef::F64(w), ValuesRef::F64(d)) => Values::F64(alg.input_grad(&g, w, d)),
            _ => mismatch("conv2d_x_backward"),
        })
    });
    output(dx, x.layout().shape().clone(), dtype)
}

/// Gradient of `conv2d` with respect to its weight.
pub(crate) fn conv2d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let g = Geometry::new(x.layout().shape(), weight.layout().shape(), options);
    let dtype = weight.dtype();
    let alg = Algorithm::for_geometry(&g);
    let dw = with_values(&x, |xv| {
        with_values(&grad, |dv| match (xv, dv) {
            (ValuesRef::F32(x), ValuesRef::F32(d)) => Values::F32(alg.weight_grad(&g, x, d)),
            (ValuesRef::F64(x), ValuesRef::F64(d)) => Values::F64(alg.weight_grad(&g, x, d)),
            _ => mismatch("conv2d_weight_backward"),
        })
    });
    output(dw, weight.layout().shape().clone(), dtype)
}

/// Gradient of `conv2d` with respect to its bias.
pub(crate) fn conv2d_bias_backward(bias: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let shape = grad.layout().shape().clone();
    let (batch, c_out, p) = (shape[0], shape[1], shape[2] * shape[3]);
    let dtype = bias.dtype();
    let db = with_values(&grad, |dv| match dv {
        ValuesRef::F32(d) => Values::F32(bias_grad(batch, c_out, p, d)),
        ValuesRef::F64(d) => Values::F64(bias_grad(batch, c_out, p, d)),
    });
    output(db, bias.layout().shape().clone(), dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct f64 convolution: the reference the gemm paths are checked against.
    pub(super) fn naive(g: &Geometry, x: &[f64], w: &[f64]) -> Vec<f64> {
        let (cpg, cog) = (g.in_per_group(), g.out_per_group());
        let mut out = vec![0.0; g.batch * g.image_out()];
        for n in 0..g.batch {
            for o in 0..g.c_out {
                let grp = o / cog;
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut s = 0.0;
                        for c in 0..cpg {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.c_in + grp * cpg + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * cpg + c) * g.kh + ky) * g.kw + kx;
                                    s += x[xi] * w[wi];
                                }
                            }
                        }
                        out[((n * g.c_out + o) * g.ho + oy) * g.wo + ox] = s;
                    }
                }
            }
        }
        out
    }

    pub(super) fn pseudo(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    fn cases() -> Vec<(Geometry, [usize; 4], [usize; 4])> {
        // (batch, c_in, h, w), (c_out, kh, kw, groups), stride, padding, dilation
        let specs: &[([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2])] = &[
            ([3, 3, 9, 9], [4, 3, 3, 1], [1, 1], [1, 1], [1, 1]),
            ([2, 4, 8, 7], [6, 3, 3, 1], [2, 2], [1, 1], [1, 1]),
            ([5, 2, 6, 6], [3, 1, 1, 1], [2, 2], [0, 0], [1, 1]),
            ([2, 3, 11, 10], [4, 7, 7, 1], [2, 2], [3, 3], [1, 1]),
            ([2, 4, 9, 9], [4, 3, 3, 2], [1, 2], [2, 0], [2, 1]),
            ([40, 2, 3, 3], [3, 3, 3, 1], [1, 1], [1, 1], [1, 1]),
            ([1, 2, 5, 5], [2, 3, 3, 1], [1, 1], [0, 0], [1, 1]),
            // Column stride 3 on widths that are not multiples of it (im2col's column phases),
            // with a dilated kernel and padding.
            ([2, 2, 7, 8], [3, 2, 3, 1], [1, 3], [0, 2], [1, 2]),
            ([1, 1, 4, 2], [2, 1, 2, 1], [2, 3], [1, 1], [1, 1]),
            // Output rows of 17 and 18 columns, stride 1 and 2.
            ([1, 2, 6, 18], [2, 3, 3, 1], [1, 1], [1, 1], [1, 1]),
            ([2, 2, 5, 34], [3, 3, 3, 1], [1, 2], [1, 1], [1, 1]),
        ];
        specs
            .iter()
            .map(|&([n, c, h, w], [co, kh, kw, groups], stride, padding, dilation)| {
                let options = ConvOptions::new(stride, padding, dilation, groups);
                let xs = Shape::from(vec![n, c, h, w]);
                let ws = Shape::from(vec![co, c / groups, kh, kw]);
                (Geometry::new(&xs, &ws, &options), [n, c, h, w], [co, c / groups, kh, kw])
            })
            .collect()
    }

    #[test]
    fn forward_matches_naive() {
        for (g, xs, ws) in cases() {
            let x = pseudo(xs.iter().product(), 1);
            let w = pseudo(ws.iter().product(), 2);
            let b = pseudo(g.c_out, 3);
            let mut expected = naive(&g, &x, &w);
            for (i, v) in expected.iter_mut().enumerate() {
                *v += b[(i / g.pixels()) % g.c_out];
            }
            let got = forward(&g, &x, &w, Some(&b));
            let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?}: max error {err}");
        }
    }

    /// ⟨conv(x), dy⟩ = ⟨x, dx(dy)⟩ = ⟨w, dW(dy)⟩: both gradients are the exact adjoints.
    #[test]
    fn gradients_are_adjoints_of_forward() {
        for (g, xs, ws) in cases() {
            let x = pseudo(xs.iter().product(), 4);
            let w = pseudo(ws.iter().product(), 5);
            let dy = pseudo(g.batch * g.image_out(), 6);
            let y = naive(&g, &x, &w);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
            let dx = input_grad(&g, &w, &dy);
            let via_x: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            let dw = weight_grad(&g, &x, &dy);
            let via_w: f64 = w.iter().zip(&dw).map(|(a, b)| a * b).sum();
            assert!((lhs - via_x).abs() < 1e-9 * (1.0 + lhs.abs()), "{g:?}: dx {lhs} vs {via_x}");
            assert!((lhs - via_w).abs() < 1e-9 * (1.0 + lhs.abs()), "{g:?}: dw {lhs} vs {via_w}");
            let db = bias_grad(g.batch, g.c_out, g.pixels(), &dy);
            for (o, v) in db.iter().enumerate() {
                let expect: f64 = (0..g.batch).flat_map(|n| dy[(n * g.c_out + o) * g.pixels()..][..g.pixels()].iter()).sum();
                assert!((v - expect).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences_on_one_entry() {
        // The adjoint test pins the whole operator; this one checks a single weight by hand.
        let (g, xs, ws) = cases().remove(1);
        let x = pseudo(xs.iter().product(), 7);
        let mut w = pseudo(ws.iter().product(), 8);
        let dy = pseudo(g.batch * g.image_out(), 9);
        let f = |w: &[f64]| naive(&g, &x, w).iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        let dw = weight_grad(&g, &x, &dy);
        let i = 17;
        let h = 1e-6;
        w[i] += h;
        let up = f(&w);
        w[i] -= 2.0 * h;
        let down = f(&w);
        assert!(((up - down) / (2.0 * h) - dw[i]).abs() < 1e-6);
    }

    #[test]
    fn worker_chunks_partition_the_batch_evenly() {
        for batch in [0, 1, 2, 7, 105, 106, 600] {
            for nb in [1, 3, 8, 29, 57, 1000] {
                let runs = worker_chunks(batch, nb);
                assert!(!runs.is_empty() && runs.len() <= threads().max(1), "{batch}/{nb}: {} runs", runs.len());
                // In order, every image once.
                let flat: Vec<(usize, usize)> = runs.concat();
                let mut next = 0;
                for &(n0, imgs) in &flat {
                    assert_eq!(n0, next, "{batch}/{nb}: a gap or an overlap at {n0}");
                    assert!(imgs > 0, "{batch}/{nb}: an empty chunk");
                    next += imgs;
                }
                assert_eq!(next, batch, "{batch}/{nb}: images left out");
                let totals: Vec<usize> = runs.iter().map(|r| r.iter().map(|c| c.1).sum()).collect();
                let (lo, hi) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
                assert!(hi - lo <= 1, "{batch}/{nb}: workers get {totals:?} images");
                for run in &runs {
                    let total: usize = run.iter().map(|c| c.1).sum();
                    for w in run.windows(2) {
                        assert!(w[0].1 >= w[1].1 && w[0].1 - w[1].1 <= 1, "{batch}/{nb}: chunk sizes {run:?}");
                    }
                    for c in run {
                        assert!(c.1 <= nb, "{batch}/{nb}: a chunk of {} over {nb}", c.1);
                        assert!(2 * c.1 + 1 >= nb.min(total), "{batch}/{nb}: a chunk of {} under half {nb}", c.1);
                    }
                }
            }
        }
    }
}
