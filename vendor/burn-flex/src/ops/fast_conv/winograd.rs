//! fsct: Winograd F(2×2, 3×3) for the 3×3 stride-1 "same" convolutions of Flex's NCHW conv2d:
//! forward, input gradient and weight gradient (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! Why (fsct, not upstream): these convolutions are ~83 % of a ResNet18's forward FLOPs at
//! 84 px, and PyTorch's oneDNN runs its im2col-free kernels at 85–100 % of the CPU's peak, so
//! direct convolution cannot beat it by much. Winograd does 16 multiplications per 2×2 output
//! tile and input channel where direct convolution does 36 (2.25× fewer); the price is three
//! memory-bound transforms and an f32 error a few times that of direct convolution (still far
//! inside fsct's 1e-4 parity tolerance).
//!
//! Each output tile `Y` (2×2, origin `(2ty, 2tx)`) of output channel `k` is
//! `Y = Aᵀ [Σ_c (G g_kc Gᵀ) ⊙ (Bᵀ d_c B)] A`, where `d_c` is the 4×4 input patch at
//! `(2ty − 1, 2tx − 1)` (zero outside the image). With `U[ξ][k][c]` the transformed filters and
//! `V[ξ][p][c]` the transformed patches (`ξ` one of the 16 positions of the 4×4 tile, `p` a tile
//! of a chunk of images), the sum is 16 independent gemms `M[ξ] = U[ξ] · V[ξ]`.
//!
//! Layout: a chunk of images is first copied channels-last (`[pixel][image · channel]`), so that
//! every transform is one element-wise formula over a long run of lanes (`images · channels`),
//! computed in blocks of 16 lanes that the compiler vectorises (AVX-512 or AVX2 where the CPU has it, by
//! runtime detection); the per-tile loops over short NCHW rows (2 to 11 tiles wide at 84 px) ran
//! scalar and cost more than the gemms they fed. The gemm reads `V` and writes `M` through
//! strides, in the same layout, and the output goes back to NCHW in one pass.
//!
//! - forward: transform the input (`V`), 16 gemms, transform back (`Aᵀ M A`);
//! - input gradient: the same "same" convolution of `dy` with the filters transposed and rotated
//!   by 180°, so it is [`forward`] again;
//! - weight gradient: the exact adjoint of the forward pass, `dU[ξ] = Σ_p dM[ξ] · V[ξ]ᵀ` with
//!   `dM = A dY Aᵀ`, then `dg = Gᵀ dU G`.
//!
//! Transforms (rows of the matrices):
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.

use alloc::vec;
use alloc::vec::Vec;
use core::mem::MaybeUninit;

use super::{Elem, Geometry, gemm, sum_partials, threads, worker_chunks};

/// Tiles per chunk of images the gemms see at least (wider is more efficient for the gemm,
/// narrower keeps `V` and `M` of a chunk in cache).
const MIN_TILES: usize = 256;

/// Input and output channels below which the transforms cost more than the multiplications
/// they save (an RGB input layer stays on im2col).
const MIN_CHANNELS: usize = 16;

/// Multiplications saved (direct ÷ Winograd, counting the cut tiles' wasted outputs as work)
/// below which im2col stays: a 3×3 map is one 2×2 grid of tiles that computes 16 outputs for 9
/// (9·9 / (4·16) = 1.27), not worth three transforms.
const MIN_SAVING: f64 = 1.5;

/// Smallest map side computed here. On 2×2 maps (one tile) the rounding differs enough from
/// direct convolution that the training-trace test (`crates/fsct-train/tests/trace.rs`, Conv6
/// softmax at 16 px, ten AdamW steps) drifts from PyTorch by 2.2e-3 in the loss, against 1.9e-6
/// on im2col: a parameter whose gradient nearly cancels (the third block's batch-norm shift)
/// turns the difference into lr-sized AdamW steps. With 4×4 and larger maps on Winograd the
/// trace stays at 1.2e-6. No 84 or 224 px backbone convolves a map this small with Winograd
/// anyway (ResNets end at 3×3 and 7×7, Conv4 at 10×10).
const MIN_SIDE: usize = 4;

/// Whether `g` is a convolution this file computes: 3×3 kernel, stride 1, padding 1, no
/// dilation, one group, at least [`MIN_CHANNELS`] channels on each side, maps of at least
/// [`MIN_SIDE`] on each side that save [`MIN_SAVING`]× the multiplications.
pub(super) fn applies(g: &Geometry) -> bool {
    let tiles = Tiles::new(g);
    let saving = (9 * g.ho * g.wo) as f64 / (16 * tiles.per_image()).max(1) as f64;
    saving >= MIN_SAVING
        && g.ho.min(g.wo) >= MIN_SIDE
        && g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.padding == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
}

/// Tile grid of one image: `th × tw` tiles of 2×2 outputs (the last row/column of tiles is cut
/// where the output size is odd).
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
}

impl Tiles {
    fn new(g: &Geometry) -> Self {
        Self { th: g.ho.div_ceil(2), tw: g.wo.div_ceil(2) }
    }
    fn per_image(&self) -> usize {
        self.th * self.tw
    }
    /// Images per chunk.
    fn chunk(&self, batch: usize) -> usize {
        MIN_TILES.div_ceil(self.per_image().max(1)).clamp(1, batch.max(1))
    }
}

/// `U[ξ][k][c] = (G g_kc Gᵀ)[ξ]` for weights `[c_out, c_in, 3, 3]`.
fn filter_transform<T: Elem>(c_out: usize, c_in: usize, w: &[T]) -> Vec<T> {
    let stride = c_out * c_in;
    let mut u = vec![T::ZERO; 16 * stride];
    for k in 0..c_out {
        for c in 0..c_in {
            let g = &w[(k * c_in + c) * 9..][..9];
            // t = G g (4×3), row by row.
            let mut t = [[T::ZERO; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = g0;
                t[1][j] = (g0 + g1 + g2) * T::HALF;
                t[2][j] = (g0 - g1 + g2) * T::HALF;
                t[3][j] = g2;
            }
            // u = t Gᵀ (4×4).
            for (i, row) in t.iter().enumerate() {
                let [r0, r1, r2] = *row;
                let o = i * 4 * stride + k * c_in + c;
                u[o] = r0;
                u[o + stride] = (r0 + r1 + r2) * T::HALF;
                u[o + 2 * stride] = (r0 - r1 + r2) * T::HALF;
                u[o + 3 * stride] = r2;
            }
        }
    }
    u
}

/// The adjoint of [`filter_transform`]: `dg_kc = Gᵀ dU[·][k][c] G`, as `[c_out, c_in, 3, 3]`.
fn filter_transform_adjoint<T: Elem>(c_out: usize, c_in: usize, du: &[T]) -> Vec<T> {
    let stride = c_out * c_in;
    let mut dw = vec![T::ZERO; stride * 9];
    for k in 0..c_out {
        for c in 0..c_in {
            let at = |i: usize, j: usize| du[(i * 4 + j) * stride + k * c_in + c];
            // t = dU G (4×3): Gᵀ applied to each row.
            let mut t = [[T::ZERO; 3]; 4];
            for (i, row) in t.iter_mut().enumerate() {
                let (v0, v1, v2, v3) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
                row[0] = v0 + (v1 + v2) * T::HALF;
                row[1] = (v1 - v2) * T::HALF;
                row[2] = (v1 + v2) * T::HALF + v3;
            }
            // dg = Gᵀ t (3×3).
            let g = &mut dw[(k * c_in + c) * 9..][..9];
            for j in 0..3 {
                let (v0, v1, v2, v3) = (t[0][j], t[1][j], t[2][j], t[3][j]);
                g[j] = v0 + (v1 + v2) * T::HALF;
                g[3 + j] = (v1 - v2) * T::HALF;
                g[6 + j] = (v1 + v2) * T::HALF + v3;
            }
        }
    }
    dw
}

/// Lanes per block of the layout transposes (one cache line of f32 per pixel).
const LANE_BLOCK: usize = 16;

/// Runs `$body` (a call of an `#[inline(always)]` generic kernel) compiled for the widest of the
/// listed instruction sets the CPU has (runtime detection): the crate itself targets baseline
/// x86-64 (SSE2), where the transforms' element-wise loops get 4 lanes instead of 8 or 16.
///
/// `avx512, avx2`: with AVX-512 a block of [`LB`] f32 lanes is one register and the 16 rows a
/// tile reads fit the 32 registers (with AVX2 they take 32 of 16 and spill): the input transform
/// took 35 % fewer cycles on the Xeon of the performance log (row 25). `avx2` only: the output
/// transform, whose cut-edge stores took 40 % more cycles compiled for AVX-512 there.
macro_rules! with_simd {
    (avx512, avx2; $name:ident, $body:expr) => {{
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn $name<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { $name(|| $body) };
            }
        }
        with_simd!(avx2; $name, $body)
    }};
    (avx2; $name:ident, $body:expr) => {{
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            mod $name {
                #[target_feature(enable = "avx2")]
                pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { $name::avx2(|| $body) };
            }
        }
        $body
    }};
}

/// Copies `lanes` planes of `h × w` (`src`, plane after plane) into the channels-last buffer
/// `dst` of rows `wp` pixels long: pixel `(y, x)` of plane `l` goes to
/// `dst[((y + border) · wp + x + border) · lanes + l]` (the caller keeps a border zero).
fn planes_to_lanes<T: Elem>(src: &[T], lanes: usize, h: usize, w: usize, wp: usize, border: usize, dst: &mut [T]) {
    with_simd!(avx2; planes_to_lanes_simd, planes_to_lanes_kernel(src, lanes, h, w, wp, border, dst))
}

#[inline(always)]
fn planes_to_lanes_kernel<T: Elem>(src: &[T], lanes: usize, h: usize, w: usize, wp: usize, border: usize, dst: &mut [T]) {
    let hw = h * w;
    for lb in (0..lanes).step_by(LANE_BLOCK) {
        let nl = LANE_BLOCK.min(lanes - lb);
        let planes: [&[T]; LANE_BLOCK] = core::array::from_fn(|i| if i < nl { &src[(lb + i) * hw..][..hw] } else { &[] });
        for y in 0..h {
            for x in 0..w {
                let d = &mut dst[((y + border) * wp + x + border) * lanes + lb..][..nl];
                for (i, v) in d.iter_mut().enumerate() {
                    *v = planes[i][y * w + x];
                }
            }
        }
    }
}

/// The inverse layout: `dst[l · h · w + y · w + x] = src[(y · w + x) · lanes + l] + bias[l % k]`,
/// writing every element of `dst[..lanes · hw]` (which may be uninitialised).
fn lanes_to_planes<T: Elem>(src: &[T], lanes: usize, hw: usize, bias: Option<&[T]>, k: usize, dst: &mut [MaybeUninit<T>]) {
    with_simd!(avx2; lanes_to_planes_simd, lanes_to_planes_kernel(src, lanes, hw, bias, k, dst))
}

#[inline(always)]
fn lanes_to_planes_kernel<T: Elem>(src: &[T], lanes: usize, hw: usize, bias: Option<&[T]>, k: usize, dst: &mut [MaybeUninit<T>]) {
    for (l, plane) in dst[..lanes * hw].chunks_exact_mut(hw).enumerate() {
        let b = bias.map_or(T::ZERO, |b| b[l % k]);
        for (p, v) in plane.iter_mut().enumerate() {
            v.write(src[p * lanes + l] + b);
        }
    }
}

/// Lanes computed together by the transforms: fixed-size arrays of this many values are what
/// the compiler turns into vector instructions (the 16 slices a tile reads or writes would
/// otherwise be re-loaded and bounds-checked per lane).
const LB: usize = 16;

/// Copies lanes `l0..l0 + n` of each row into a block (the rest zero). Full blocks copy a
/// constant length, which compiles to vector moves instead of `memcpy` calls.
#[inline(always)]
fn load<T: Elem, const R: usize>(rows: &[&[T]; R], l0: usize, n: usize) -> [[T; LB]; R] {
    let mut out = [[T::ZERO; LB]; R];
    for (b, row) in out.iter_mut().zip(rows) {
        if n == LB {
            *b = row[l0..l0 + LB].try_into().expect("winograd: full block");
        } else {
            b[..n].copy_from_slice(&row[l0..l0 + n]);
        }
    }
    out
}

/// Writes the first `n` lanes of `block` to `dst[at..]`.
#[inline(always)]
fn store<T: Elem>(dst: &mut [T], at: usize, block: &[T; LB], n: usize) {
    if n == LB {
        dst[at..at + LB].copy_from_slice(block);
    } else {
        dst[at..at + n].copy_from_slice(&block[..n]);
    }
}

/// `V[ξ][t][l] = (Bᵀ d B)[ξ]` for every tile `t` of the `th × tw` grid and lane `l`, from the
/// padded channels-last input (`(2·th + 2) × (2·tw + 2)` pixels of `lanes` values).
fn input_transform<T: Elem>(tiles: Tiles, lanes: usize, pad: &[T], v: &mut [T]) {
    with_simd!(avx512, avx2; input_transform_simd, input_transform_kernel(tiles, lanes, pad, v))
}

#[inline(always)]
fn input_transform_kernel<T: Elem>(tiles: Tiles, lanes: usize, pad: &[T], v: &mut [T]) {
    let (th, tw) = (tiles.th, tiles.tw);
    let wp = 2 * tw + 2;
    let block = th * tw * lanes;
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let d: [&[T]; 16] = core::array::from_fn(|i| &pad[((2 * ty + i / 4) * wp + 2 * tx + i % 4) * lanes..][..lanes]);
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let x = load(&d, l0, n);
                // Bᵀ d: rows mix.
                let mut r = [[T::ZERO; LB]; 16];
                for j in 0..4 {
                    for k in 0..LB {
                        r[j][k] = x[j][k] - x[8 + j][k];
                        r[4 + j][k] = x[4 + j][k] + x[8 + j][k];
                        r[8 + j][k] = x[8 + j][k] - x[4 + j][k];
                        r[12 + j][k] = x[4 + j][k] - x[12 + j][k];
                    }
                }
                // (Bᵀ d) B: columns mix.
                let mut o = [[T::ZERO; LB]; 16];
                for i in 0..4 {
                    for k in 0..LB {
                        let (a, b, c, e) = (r[4 * i][k], r[4 * i + 1][k], r[4 * i + 2][k], r[4 * i + 3][k]);
                        o[4 * i][k] = a - c;
                        o[4 * i + 1][k] = b + c;
                        o[4 * i + 2][k] = c - b;
                        o[4 * i + 3][k] = b - e;
                    }
                }
                for (xi, row) in o.iter().enumerate() {
                    store(v, xi * block + t * lanes + l0, row, n);
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` for every tile: `m[ξ][t][l]` to the channels-last output `y[(oy · wo + ox) ·
/// lanes + l]`, cut at the image's edge.
fn output_transform<T: Elem>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, m: &[T], y: &mut [T]) {
    with_simd!(avx2; output_transform_simd, output_transform_kernel(tiles, lanes, ho, wo, m, y))
}

#[inline(always)]
fn output_transform_kernel<T: Elem>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, m: &[T], y: &mut [T]) {
    let (th, tw) = (tiles.th, tiles.tw);
    let block = th * tw * lanes;
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let src: [&[T]; 16] = core::array::from_fn(|i| &m[i * block + t * lanes..][..lanes]);
            let (oy, ox) = (2 * ty, 2 * tx);
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let q = load(&src, l0, n);
                // S = Aᵀ M (2×4), then Y = S A (2×2).
                let mut s = [[T::ZERO; LB]; 8];
                for j in 0..4 {
                    for k in 0..LB {
                        s[j][k] = q[j][k] + q[4 + j][k] + q[8 + j][k];
                        s[4 + j][k] = q[4 + j][k] - q[8 + j][k] - q[12 + j][k];
                    }
                }
                let mut out = [[T::ZERO; LB]; 4];
                for i in 0..2 {
                    for k in 0..LB {
                        out[2 * i][k] = s[4 * i][k] + s[4 * i + 1][k] + s[4 * i + 2][k];
                        out[2 * i + 1][k] = s[4 * i + 1][k] - s[4 * i + 2][k] - s[4 * i + 3][k];
                    }
                }
                for (o, (dy, dx)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    if oy + dy < ho && ox + dx < wo {
                        store(y, ((oy + dy) * wo + ox + dx) * lanes + l0, &out[o], n);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`output_transform`]: `dM[ξ][t][l] = (A dY Aᵀ)[ξ]` from the channels-last
/// `dy` (`ho × wo` pixels of `lanes` values; zero past the edge).
fn output_transform_adjoint<T: Elem>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, dy: &[T], dm: &mut [T]) {
    with_simd!(avx2; output_transform_adjoint_simd, output_transform_adjoint_kernel(tiles, lanes, ho, wo, dy, dm))
}

#[inline(always)]
fn output_transform_adjoint_kernel<T: Elem>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, dy: &[T], dm: &mut [T]) {
    let (th, tw) = (tiles.th, tiles.tw);
    let block = th * tw * lanes;
    let zeros = vec![T::ZERO; lanes];
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let (oy, ox) = (2 * ty, 2 * tx);
            let src: [&[T]; 4] = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy_, dx_)| {
                if oy + dy_ < ho && ox + dx_ < wo { &dy[((oy + dy_) * wo + ox + dx_) * lanes..][..lanes] } else { &zeros[..] }
            });
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let [y00, y01, y10, y11] = load(&src, l0, n);
                // A dY (4×2), then (A dY) Aᵀ (4×4).
                let mut r = [[T::ZERO; LB]; 8];
                for k in 0..LB {
                    r[0][k] = y00[k];
                    r[1][k] = y01[k];
                    r[2][k] = y00[k] + y10[k];
                    r[3][k] = y01[k] + y11[k];
                    r[4][k] = y00[k] - y10[k];
                    r[5][k] = y01[k] - y11[k];
                    r[6][k] = T::ZERO - y10[k];
                    r[7][k] = T::ZERO - y11[k];
                }
                let mut o = [[T::ZERO; LB]; 16];
                for i in 0..4 {
                    for k in 0..LB {
                        let (a, b) = (r[2 * i][k], r[2 * i + 1][k]);
                        o[4 * i][k] = a;
                        o[4 * i + 1][k] = a + b;
                        o[4 * i + 2][k] = a - b;
                        o[4 * i + 3][k] = T::ZERO - b;
                    }
                }
                for (xi, row) in o.iter().enumerate() {
                    store(dm, xi * block + t * lanes + l0, row, n);
                }
            }
        }
    }
}

/// Per-worker buffers, reused across the chunks a worker processes.
#[derive(Default)]
struct Scratch<T> {
    /// Padded channels-last input of a chunk.
    pad: Vec<T>,
    /// `V[ξ][t][img · c_in + c]`.
    v: Vec<T>,
    /// `M[ξ][t][img · c_out + k]` (or `dM`).
    m: Vec<T>,
    /// Channels-last output (or `dy`) of a chunk.
    y: Vec<T>,
}

impl<T: Elem> Scratch<T> {
    fn size(&mut self, g: &Geometry, tiles: Tiles, imgs: usize) {
        let t = tiles.per_image();
        // The transforms and gemms write every element of `v`, `m` and `y` they later read;
        // `pad`'s border must be zero. Only the images' window is written, at the same places
        // for every chunk of one size, so a border zeroed once stays zero: `pad` is zeroed only
        // when its size (its layout) changes, not once per chunk (a whole pass over the input
        // per convolution, ~1 % of a ResNet18 step at 224 px; performance log, row 25).
        let pad = (2 * tiles.th + 2) * (2 * tiles.tw + 2) * imgs * g.c_in;
        if self.pad.len() != pad {
            self.pad.clear();
            self.pad.resize(pad, T::ZERO);
        }
        self.v.resize(16 * t * imgs * g.c_in, T::ZERO);
        self.m.resize(16 * t * imgs * g.c_out, T::ZERO);
        self.y.resize(g.ho * g.wo * imgs * g.c_out, T::ZERO);
    }
}

/// Runs `f(scratch, accumulator, first image, images)` for every chunk of images, each worker
/// over its run of chunks (`chunks[worker]`, see `worker_chunks`) with its own accumulator from
/// `init` (in parallel when rayon is on); returns the accumulators, one per worker.
fn for_each_chunk<T: Elem, A: Send, F>(chunks: &[Vec<(usize, usize)>], init: impl Fn() -> A + Sync + Send, f: F) -> Vec<A>
where
    F: Fn(&mut Scratch<T>, &mut A, usize, usize) + Sync + Send,
{
    let workers = chunks.len();
    let work = |wid: usize| -> A {
        let mut acc = init();
        let mut scratch = Scratch::default();
        for &(n0, imgs) in &chunks[wid] {
            f(&mut scratch, &mut acc, n0, imgs);
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
}

/// A raw pointer to the output, shared by workers that write disjoint images.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: workers write disjoint ranges (their own images); see `forward`.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Through a method, so that closures capture the whole (Sync) wrapper, not its field.
    fn get(self) -> *mut T {
        self.0
    }
}

/// The convolution `g` (see [`applies`]) of `x` with weights `w` (`[c_out, c_in, 3, 3]`).
pub(super) fn forward<T: Elem>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let tiles = Tiles::new(g);
    let u = filter_transform(g.c_out, g.c_in, w);
    // Not zeroed first: the chunks together write every element (below); zeroing cost a pass
    // over the output (performance log, row 25).
    let len = g.batch * g.image_out();
    let mut out: Vec<T> = Vec::with_capacity(len);
    let chunks = worker_chunks(g.batch, tiles.chunk(g.batch));
    let inner_parallel = chunks.iter().map(Vec::len).sum::<usize>() < 2 * threads();
    let shared = SharedOut(out.spare_capacity_mut().as_mut_ptr());
    let image_out = g.image_out();
    for_each_chunk(
        &chunks,
        || (),
        |scratch: &mut Scratch<T>, _, n0, imgs| {
            scratch.size(g, tiles, imgs);
            let Scratch { pad, v, m, y } = scratch;
            let (lanes_in, lanes_out) = (imgs * g.c_in, imgs * g.c_out);
            let cols = tiles.per_image() * imgs;
            planes_to_lanes(&x[n0 * g.image_in()..][..imgs * g.image_in()], lanes_in, g.h, g.w, 2 * tiles.tw + 2, 1, pad);
            input_transform(tiles, lanes_in, pad, v);
            for xi in 0..16 {
                // Mᵀ[ξ] (cols × c_out) = Vᵀ[ξ] (cols × c_in) · Uᵀ[ξ] (c_in × c_out): column
                // (t, img) of V is `v[ξ][t][img · c_in ..]`, so Vᵀ is row-major with row length c_in.
                let uk = &u[xi * g.c_out * g.c_in..][..g.c_out * g.c_in];
                let vk = &v[xi * cols * g.c_in..][..cols * g.c_in];
                let mk = &mut m[xi * cols * g.c_out..][..cols * g.c_out];
                gemm(cols, g.c_out, g.c_in, mk, g.c_out, false, vk, (g.c_in, 1), uk, (1, g.c_in), inner_parallel);
            }
            output_transform(tiles, lanes_out, g.ho, g.wo, m, y);
            // SAFETY: chunk `n0..n0 + imgs` is this call's alone (chunks partition the batch), and
            // `out`'s capacity outlives `for_each_chunk`, which joins every worker before returning.
            let out_chunk = unsafe { core::slice::from_raw_parts_mut(shared.get().add(n0 * image_out), imgs * image_out) };
            lanes_to_planes(y, lanes_out, g.ho * g.wo, bias, g.c_out, out_chunk);
        },
    );
    // SAFETY: the chunks partition the batch and `lanes_to_planes` wrote all `imgs · image_out`
    // elements of each, so the first `len` elements are initialised.
    unsafe { out.set_len(len) };
    out
}

/// The input gradient of the convolution `g` (see [`applies`]): the "same" convolution of `dy`
/// with `w` transposed (`c_in` ↔ `c_out`) and rotated by 180°.
pub(super) fn input_grad<T: Elem>(g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    let mut wt = vec![T::ZERO; w.len()];
    for k in 0..g.c_out {
        for c in 0..g.c_in {
            for tap in 0..9 {
                wt[(c * g.c_out + k) * 9 + 8 - tap] = w[(k * g.c_in + c) * 9 + tap];
            }
        }
    }
    let gt = Geometry { c_in: g.c_out, c_out: g.c_in, h: g.ho, w: g.wo, ho: g.h, wo: g.w, ..*g };
    forward(&gt, dy, &wt, None)
}

/// The weight gradient of the convolution `g` (see [`applies`]), `[c_out, c_in, 3, 3]`.
pub(super) fn weight_grad<T: Elem>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let tiles = Tiles::new(g);
    let chunks = worker_chunks(g.batch, tiles.chunk(g.batch));
    let inner_parallel = chunks.len() < threads();
    let size = 16 * g.c_out * g.c_in;
    let partials = for_each_chunk(
        &chunks,
        || vec![T::ZERO; size],
        |scratch: &mut Scratch<T>, du: &mut Vec<T>, n0, imgs| {
            scratch.size(g, tiles, imgs);
            let Scratch { pad, v, m: dm, y: dyl } = scratch;
            let (lanes_in, lanes_out) = (imgs * g.c_in, imgs * g.c_out);
            let cols = tiles.per_image() * imgs;
            planes_to_lanes(&x[n0 * g.image_in()..][..imgs * g.image_in()], lanes_in, g.h, g.w, 2 * tiles.tw + 2, 1, pad);
            input_transform(tiles, lanes_in, pad, v);
            // dy channels-last, without a border.
            planes_to_lanes(&dy[n0 * g.image_out()..][..imgs * g.image_out()], lanes_out, g.ho, g.wo, g.wo, 0, dyl);
            output_transform_adjoint(tiles, lanes_out, g.ho, g.wo, dyl, dm);
            for xi in 0..16 {
                // dU[ξ] (c_out × c_in) += dM[ξ] (c_out × cols) · Vᵀ[ξ] (cols × c_in).
                let dmk = &dm[xi * cols * g.c_out..][..cols * g.c_out];
                let vk = &v[xi * cols * g.c_in..][..cols * g.c_in];
                let duk = &mut du[xi * g.c_out * g.c_in..][..g.c_out * g.c_in];
                gemm(g.c_out, g.c_in, cols, duk, g.c_in, true, dmk, (1, g.c_out), vk, (g.c_in, 1), inner_parallel);
            }
        },
    );
    filter_transform_adjoint(g.c_out, g.c_in, &sum_partials(partials, size))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{naive, pseudo};
    use super::*;
    use burn_backend::ops::ConvOptions;
    use burn_std::Shape;

    fn geometry(n: usize, c: usize, h: usize, w: usize, k: usize) -> Geometry {
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        Geometry::new(&Shape::from(vec![n, c, h, w]), &Shape::from(vec![k, c, 3, 3]), &options)
    }

    /// Odd and even sizes (a cut last tile row/column), one image and chunks of many, lane
    /// counts that are not a multiple of the transforms' block, more output than input
    /// channels and fewer.
    fn cases() -> Vec<Geometry> {
        vec![
            geometry(2, 16, 7, 7, 16),
            geometry(3, 16, 8, 6, 20),
            geometry(1, 24, 5, 9, 16),
            geometry(70, 16, 5, 4, 17),
            geometry(40, 17, 6, 5, 16),
            geometry(300, 16, 4, 6, 16),
            geometry(20, 64, 4, 4, 64),
            geometry(20, 3 * 16, 8, 8, 64),
            // Odd sides (a two-row, two-column zero border) over five chunks of 22, 22, 22, 22
            // and 12 images: a worker reuses its padded buffer for chunks of one size and lays
            // it out again for the last.
            geometry(100, 16, 5, 7, 16),
        ]
    }

    /// Tiny maps and RGB-like inputs stay on im2col.
    #[test]
    fn applies_only_where_it_saves() {
        assert!(applies(&geometry(1, 64, 21, 21, 64)));
        assert!(applies(&geometry(1, 512, 7, 7, 512)));
        assert!(!applies(&geometry(1, 512, 3, 3, 512)), "3×3 map: 1.27× fewer multiplications");
        assert!(!applies(&geometry(1, 64, 2, 2, 64)), "2×2 map: below MIN_SIDE");
        assert!(applies(&geometry(1, 64, 4, 4, 64)));
        assert!(!applies(&geometry(1, 3, 84, 84, 64)), "3 input channels");
        let strided = Geometry::new(
            &Shape::from(vec![1, 64, 21, 21]),
            &Shape::from(vec![64, 64, 3, 3]),
            &ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
        );
        assert!(!applies(&strided));
    }

    #[test]
    fn forward_matches_naive() {
        for g in cases() {
            assert!(applies(&g));
            let x = pseudo(g.batch * g.image_in(), 11);
            let w = pseudo(g.c_out * g.c_in * 9, 12);
            let b = pseudo(g.c_out, 13);
            let mut expected = naive(&g, &x, &w);
            for (i, v) in expected.iter_mut().enumerate() {
                *v += b[(i / g.pixels()) % g.c_out];
            }
            let got = forward(&g, &x, &w, Some(&b));
            let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?}: max error {err}");
        }
    }

    /// ⟨conv(x), dy⟩ = ⟨x, dx(dy)⟩ = ⟨w, dW(dy)⟩, against the naive direct convolution.
    #[test]
    fn gradients_are_adjoints_of_forward() {
        for g in cases() {
            let x = pseudo(g.batch * g.image_in(), 14);
            let w = pseudo(g.c_out * g.c_in * 9, 15);
            let dy = pseudo(g.batch * g.image_out(), 16);
            let lhs: f64 = naive(&g, &x, &w).iter().zip(&dy).map(|(a, b)| a * b).sum();
            let dx = input_grad(&g, &w, &dy);
            let via_x: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            let dw = weight_grad(&g, &x, &dy);
            let via_w: f64 = w.iter().zip(&dw).map(|(a, b)| a * b).sum();
            assert!((lhs - via_x).abs() < 1e-9 * (1.0 + lhs.abs()), "{g:?}: dx {lhs} vs {via_x}");
            assert!((lhs - via_w).abs() < 1e-9 * (1.0 + lhs.abs()), "{g:?}: dw {lhs} vs {via_w}");
        }
    }

    /// The gradients element by element against the im2col path (itself tested against the
    /// naive convolution): an adjoint test alone would miss errors that cancel in the sum.
    #[test]
    fn gradients_match_im2col_elementwise() {
        for g in cases() {
            let x = pseudo(g.batch * g.image_in(), 17);
            let w = pseudo(g.c_out * g.c_in * 9, 18);
            let dy = pseudo(g.batch * g.image_out(), 19);
            let max_err = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let dx = max_err(&input_grad(&g, &w, &dy), &super::super::input_grad(&g, &w, &dy));
            let dw = max_err(&weight_grad(&g, &x, &dy), &super::super::weight_grad(&g, &x, &dy));
            assert!(dx < 1e-12 && dw < 1e-11, "{g:?}: dx {dx}, dw {dw}");
        }
    }

    /// f32 on a ResNet-like layer: the error against an f64 direct convolution stays within a
    /// small multiple of the im2col path's own f32 error.
    #[test]
    fn f32_error_is_close_to_direct_convolution() {
        let g = geometry(4, 64, 11, 11, 64);
        let x64 = pseudo(g.batch * g.image_in(), 20);
        let w64 = pseudo(g.c_out * g.c_in * 9, 21);
        let exact = naive(&g, &x64, &w64);
        let (x, w): (Vec<f32>, Vec<f32>) = (x64.iter().map(|&v| v as f32).collect(), w64.iter().map(|&v| v as f32).collect());
        let err = |y: &[f32]| y.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let wino = err(&forward(&g, &x, &w, None));
        let direct = err(&super::super::forward(&g, &x, &w, None));
        assert!(wino < 8.0 * direct.max(f32::EPSILON as f64 * scale), "winograd {wino:e} vs im2col {direct:e} (scale {scale})");
        assert!(wino < 1e-5 * scale, "winograd {wino:e} against outputs up to {scale}");
    }
}
