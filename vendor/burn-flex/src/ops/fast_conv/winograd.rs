//! fsct: Winograd F(2×2, 3×3) and F(3×3, 3×3) for the 3×3 stride-1 "same" convolutions of
//! Flex's NCHW conv2d: forward, input gradient and weight gradient (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Why (fsct, not upstream): these convolutions are ~83 % of a ResNet18's forward FLOPs at
//! 84 px, and PyTorch's oneDNN runs its im2col-free kernels at 85–100 % of the CPU's peak, so
//! direct convolution cannot beat it by much. Winograd F(m×m, 3×3) computes an `m × m` output
//! tile from an `α × α` input tile (`α = m + 2`) with `α²` multiplications per input channel
//! where direct convolution does `9 m²`: F(2×2) 16 for 36 (2.25× fewer), F(3×3) 25 for 81
//! (3.24× fewer). The price is three memory-bound transforms and an f32 error a few times that
//! of direct convolution (still far inside fsct's 1e-4 parity tolerance). F(3×3) exists for the
//! 84 px ResNets, whose maps (21, 11, 6, 3) are odd multiples of 3 or close to them: their last
//! stage's 3×3 maps are one F(3×3) tile (F(2×2) would compute 16 outputs for 9 and was not
//! worth it), and the other maps waste less of their last tile row (performance log, row 29).
//! [`choose`] picks, per geometry, the variant with the fewest multiplications.
//!
//! Each output tile `Y` (`m × m`, origin `(m·ty, m·tx)`) of output channel `k` is
//! `Y = Aᵀ [Σ_c (G g_kc Gᵀ) ⊙ (Bᵀ d_c B)] A`, where `d_c` is the `α × α` input patch at
//! `(m·ty − 1, m·tx − 1)` (zero outside the image). With `U[ξ][k][c]` the transformed filters
//! and `V[ξ][p][c]` the transformed patches (`ξ` one of the `α²` positions of the tile, `p` a
//! tile of a chunk of images), the sum is `α²` independent gemms `M[ξ] = U[ξ] · V[ξ]`.
//!
//! Layout: a chunk of images is first copied channels-last (`[pixel][image · channel]`), so that
//! every transform is one element-wise formula over a long run of lanes (`images · channels`),
//! computed in blocks of 16 lanes that the compiler vectorises (AVX-512 or AVX2 where the CPU has it, by
//! runtime detection); the per-tile loops over short NCHW rows (2 to 11 tiles wide at 84 px) ran
//! scalar and cost more than the gemms they fed. The gemm reads `V` and writes `M` through
//! strides, in the same layout, and the output goes back to NCHW in one pass.
//!
//! - forward: transform the input (`V`), `α²` gemms, transform back (`Aᵀ M A`);
//! - input gradient: the same "same" convolution of `dy` with the filters transposed and rotated
//!   by 180°, so it is [`forward`] again;
//! - weight gradient: the exact adjoint of the forward pass, `dU[ξ] = Σ_p dM[ξ] · V[ξ]ᵀ` with
//!   `dM = A dY Aᵀ`, then `dg = Gᵀ dU G`.
//!
//! The 2-D transforms are the 1-D ones of [`Tile`] applied to the columns, then the rows of a
//! tile. F(2×2, 3×3), interpolation points 0, ±1, ∞ (rows of the matrices):
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`. F(3×3, 3×3), points 0, ±1, 2, ∞ (Cook–Toom, derived with the
//! construction of Lavin's `wincnn`; `Bᵀ` and `Aᵀ` kept integer, the fractions in `G`, which is
//! applied once per convolution): `Bᵀ = [2 −1 −2 1 0; 0 −2 −1 1 0; 0 2 −3 1 0; 0 −1 0 1 0;
//! 0 2 −1 −2 1]`, `G = [½ 0 0; −½ −½ −½; −⅙ ⅙ −⅙; ⅙ ⅓ ⅔; 0 0 1]`,
//! `Aᵀ = [1 1 1 1 0; 0 1 −1 2 0; 0 1 1 4 1]`.

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
/// below which im2col stays: a 3×3 map is one 2×2 grid of F(2×2) tiles that computes 16
/// outputs for 9 (9·9 / (4·16) = 1.27), not worth three transforms.
const MIN_SAVING: f64 = 1.5;

/// Smallest map side computed here. On 2×2 maps (one tile) the rounding differs enough from
/// direct convolution that the training-trace test (`crates/fsct-train/tests/trace.rs`, Conv6
/// softmax at 16 px, ten AdamW steps) drifts from PyTorch by 2.2e-3 in the loss, against 1.9e-6
/// on im2col: a parameter whose gradient nearly cancels (the third block's batch-norm shift)
/// turns the difference into lr-sized AdamW steps. With 4×4 and larger maps on Winograd the
/// trace stays at 1.2e-6. The 3×3 maps of the 84 px ResNets' last stage take F(3×3) (one
/// exact tile); no 84 or 224 px backbone convolves a smaller map.
const MIN_SIDE: usize = 3;

/// How many times fewer multiplications F(3×3) must need than F(2×2) to be chosen over it.
/// Where the two are close (7×7, 8×8 and 16×16 maps: 1.14×; 10×10: 1×; 22×22: 1.21×) they ran
/// equally fast per convolution (7×7, performance log, row 29), and F(3×3)'s larger f32 rounding (its transforms
/// carry factors 2, 4 and ⅙) is not worth taking: with the 8×8 maps on F(3×3) the
/// training-trace test (see [`MIN_SIDE`]) drifted from PyTorch by 1.3e-3 in the loss through
/// the same near-cancelling batch-norm shift.
const F3X3_MIN_ADVANTAGE: f64 = 1.25;

/// A Winograd variant, chosen per geometry by [`choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// F(2×2, 3×3): 16 multiplications per 2×2 output tile and input channel.
    F2x2,
    /// F(3×3, 3×3): 25 multiplications per 3×3 output tile and input channel.
    F3x3,
}

impl Variant {
    /// Output tile side `m`.
    fn m(self) -> usize {
        match self {
            Self::F2x2 => F2x2::M,
            Self::F3x3 => F3x3::M,
        }
    }
    /// Multiplications per image and input/output channel pair, cut tiles counted whole.
    fn multiplications(self, g: &Geometry) -> usize {
        let alpha = self.m() + 2;
        alpha * alpha * Tiles::new(g, self.m()).per_image()
    }
}

/// The variant that computes the convolution `g`, if `g` is one this file computes: 3×3
/// kernel, stride 1, padding 1, no dilation, one group, at least [`MIN_CHANNELS`] channels on
/// each side, maps of at least [`MIN_SIDE`] on each side, and [`MIN_SAVING`]× fewer
/// multiplications than direct convolution. F(3×3) where it needs [`F3X3_MIN_ADVANTAGE`]× fewer
/// multiplications than F(2×2), F(2×2) otherwise: on square maps F(2×2) keeps the sides 4, 7,
/// 8, 10, 16 and 22, F(3×3) takes the others from 3 up, among them the 84 px ResNets' 21, 11,
/// 6 and 3 and the 224 px ones' 56, 28 and 14.
pub(super) fn choose(g: &Geometry) -> Option<Variant> {
    let shape_fits = g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.padding == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && g.ho.min(g.wo) >= MIN_SIDE;
    if !shape_fits {
        return None;
    }
    let saving = |v: &Variant| (9 * g.ho * g.wo) as f64 / v.multiplications(g).max(1) as f64;
    let f3x3_first = saving(&Variant::F3x3) >= F3X3_MIN_ADVANTAGE * saving(&Variant::F2x2);
    let order = if f3x3_first { [Variant::F3x3, Variant::F2x2] } else { [Variant::F2x2, Variant::F3x3] };
    order.into_iter().find(|v| saving(v) >= MIN_SAVING)
}

/// Tile grid of one image: `th × tw` tiles of `m × m` outputs (the last row/column of tiles is
/// cut where the output size is not a multiple of `m`).
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
}

impl Tiles {
    fn new(g: &Geometry, m: usize) -> Self {
        Self { th: g.ho.div_ceil(m), tw: g.wo.div_ceil(m) }
    }
    fn per_image(&self) -> usize {
        self.th * self.tw
    }
    /// Images per chunk.
    fn chunk(&self, batch: usize) -> usize {
        MIN_TILES.div_ceil(self.per_image().max(1)).clamp(1, batch.max(1))
    }
}

/// Largest `α` (F(3×3)); the kernels' fixed-size arrays hold this many values per tile side
/// and use the first `α` (or `m`) of them.
const MAX_ALPHA: usize = 5;
/// Largest `m`.
const MAX_M: usize = 3;

/// The 1-D transforms of one Winograd variant, on scalars (the kernels call them once per lane,
/// in loops the compiler vectorises). Inputs and outputs are padded to [`MAX_ALPHA`] and
/// [`MAX_M`] values: a variant reads only its first `α` (or `m`) inputs and leaves the rest of
/// its outputs zero.
trait Tile {
    /// Output tile side.
    const M: usize;
    /// Input tile side, `M + 2`.
    const ALPHA: usize = Self::M + 2;
    /// `Bᵀ d` for an input column `d` (`α` values).
    fn input<T: Elem>(d: [T; MAX_ALPHA]) -> [T; MAX_ALPHA];
    /// `Aᵀ q` for a transformed column `q` (`α` values → `m`).
    fn output<T: Elem>(q: [T; MAX_ALPHA]) -> [T; MAX_M];
    /// `A y`, the adjoint of [`Tile::output`] (`m` values → `α`).
    fn output_adjoint<T: Elem>(y: [T; MAX_M]) -> [T; MAX_ALPHA];
    /// `G g` for a filter column `g` (3 values → `α`).
    fn filter<T: Elem>(g: [T; 3]) -> [T; MAX_ALPHA];
    /// `Gᵀ u`, the adjoint of [`Tile::filter`] (`α` values → 3).
    fn filter_adjoint<T: Elem>(u: [T; MAX_ALPHA]) -> [T; 3];
}

/// F(2×2, 3×3); matrices in the module header.
struct F2x2;

impl Tile for F2x2 {
    const M: usize = 2;
    #[inline(always)]
    fn input<T: Elem>([d0, d1, d2, d3, _]: [T; MAX_ALPHA]) -> [T; MAX_ALPHA] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3, T::ZERO]
    }
    #[inline(always)]
    fn output<T: Elem>([q0, q1, q2, q3, _]: [T; MAX_ALPHA]) -> [T; MAX_M] {
        [q0 + q1 + q2, q1 - q2 - q3, T::ZERO]
    }
    #[inline(always)]
    fn output_adjoint<T: Elem>([y0, y1, _]: [T; MAX_M]) -> [T; MAX_ALPHA] {
        [y0, y0 + y1, y0 - y1, T::ZERO - y1, T::ZERO]
    }
    #[inline(always)]
    fn filter<T: Elem>([g0, g1, g2]: [T; 3]) -> [T; MAX_ALPHA] {
        [g0, (g0 + g1 + g2) * T::HALF, (g0 - g1 + g2) * T::HALF, g2, T::ZERO]
    }
    #[inline(always)]
    fn filter_adjoint<T: Elem>([u0, u1, u2, u3, _]: [T; MAX_ALPHA]) -> [T; 3] {
        [u0 + (u1 + u2) * T::HALF, (u1 - u2) * T::HALF, (u1 + u2) * T::HALF + u3]
    }
}

/// F(3×3, 3×3); matrices in the module header. Products by 2, 3 and 4 are written as sums:
/// exact, and the input and output transforms stay additions only.
struct F3x3;

impl Tile for F3x3 {
    const M: usize = 3;
    #[inline(always)]
    fn input<T: Elem>([d0, d1, d2, d3, d4]: [T; MAX_ALPHA]) -> [T; MAX_ALPHA] {
        let (d0_d2, d1_2) = (d0 - d2, d1 + d1);
        [
            d0_d2 + d0_d2 + (d3 - d1),
            d3 - d2 - d1_2,
            d1_2 + d3 - (d2 + d2 + d2),
            d3 - d1,
            d1_2 - d2 - (d3 + d3) + d4,
        ]
    }
    #[inline(always)]
    fn output<T: Elem>([q0, q1, q2, q3, q4]: [T; MAX_ALPHA]) -> [T; MAX_M] {
        let (sum, diff, q3_2) = (q1 + q2, q1 - q2, q3 + q3);
        [q0 + sum + q3, diff + q3_2, sum + (q3_2 + q3_2) + q4]
    }
    #[inline(always)]
    fn output_adjoint<T: Elem>([y0, y1, y2]: [T; MAX_M]) -> [T; MAX_ALPHA] {
        let (y1_2, y2_2) = (y1 + y1, y2 + y2);
        [y0, y0 + y1 + y2, y0 - y1 + y2, y0 + y1_2 + (y2_2 + y2_2), y2]
    }
    #[inline(always)]
    fn filter<T: Elem>([g0, g1, g2]: [T; 3]) -> [T; MAX_ALPHA] {
        let sixth = T::SIXTH;
        [
            g0 * T::HALF,
            T::ZERO - (g0 + g1 + g2) * T::HALF,
            (g1 - g0 - g2) * sixth,
            (g0 + (g1 + g1) + (g2 + g2 + g2 + g2)) * sixth,
            g2,
        ]
    }
    #[inline(always)]
    fn filter_adjoint<T: Elem>([u0, u1, u2, u3, u4]: [T; MAX_ALPHA]) -> [T; 3] {
        let sixth = T::SIXTH;
        let half_u1 = u1 * T::HALF;
        [
            u0 * T::HALF - half_u1 + (u3 - u2) * sixth,
            (u2 + u3 + u3) * sixth - half_u1,
            (u3 + u3 + u3 + u3 - u2) * sixth - half_u1 + u4,
        ]
    }
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
/// the compiler turns into vector instructions (the slices a tile reads or writes would
/// otherwise be re-loaded and bounds-checked per lane).
const LB: usize = 16;

/// Values per tile of the kernels' fixed-size arrays (`α²` of them used).
const MAX_XI: usize = MAX_ALPHA * MAX_ALPHA;


/// Lanes `l0..l0 + n` of the first `count` rows as blocks of [`LB`] lanes (the other rows
/// `zero`). Full blocks are borrowed in place: copying a tile's blocks into a fresh array cost a
/// `memset` of the whole array per block, to zero it first. A partial block (the last
/// `lanes % LB` lanes, the same `n` throughout a call) is copied into `spare`, whose lanes past
/// `n` the caller zeroed once. (A closure taking the blocks would not be inlined into the
/// kernels' `#[target_feature]` functions, and compiled for baseline x86-64 took 2× longer.)
#[inline(always)]
fn blocks<'a, T: Elem, const R: usize>(
    rows: &[&'a [T]; R],
    count: usize,
    l0: usize,
    n: usize,
    spare: &'a mut [[T; LB]; R],
    zero: &'a [T; LB],
) -> [&'a [T; LB]; R] {
    let mut blocks: [&[T; LB]; R] = [zero; R];
    if n == LB {
        for (block, row) in blocks.iter_mut().zip(rows).take(count) {
            *block = row[l0..l0 + LB].try_into().expect("winograd: full block");
        }
    } else {
        for (copy, row) in spare.iter_mut().zip(rows).take(count) {
            copy[..n].copy_from_slice(&row[l0..l0 + n]);
        }
        for (block, copy) in blocks.iter_mut().zip(&*spare).take(count) {
            *block = copy;
        }
    }
    blocks
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

/// `F x Fᵀ` for each lane, with `F` the 1-D transform `f` (`n_in` values → `n_out`) and `x` an
/// `n_in × n_in` tile stored row by row (`x[i · n_in + j]`): `emit(i · n_out + j, block)` for
/// each of the `n_out × n_out` results. Columns first, then rows; the loops over lanes are what
/// vectorises.
#[inline(always)]
fn separable<T: Elem, const I: usize, const O: usize, const R: usize>(
    x: &[&[T; LB]; R],
    n_in: usize,
    n_out: usize,
    f: impl Fn([T; I]) -> [T; O],
    mut emit: impl FnMut(usize, &[T; LB]),
) {
    // mid[i · n_in + j] = (F x)[i][j]: column j mixed. Only the entries written here are read
    // below, so the array is left uninitialised: zeroing it cost a `memset` per block (6 % of a
    // ResNet18 step's samples with F(3×3)).
    let mut mid = [[MaybeUninit::<T>::uninit(); LB]; MAX_XI];
    for j in 0..n_in {
        for k in 0..LB {
            let col = f(core::array::from_fn(|i| if i < n_in { x[i * n_in + j][k] } else { T::ZERO }));
            for (i, &value) in col.iter().enumerate().take(n_out) {
                mid[i * n_in + j][k] = MaybeUninit::new(value);
            }
        }
    }
    // Row i mixed: (F x Fᵀ)[i][j].
    for i in 0..n_out {
        let mut row = [[T::ZERO; LB]; O];
        for k in 0..LB {
            // SAFETY: entries `i · n_in + j` (i < n_out, j < n_in) were all written above.
            let r = f(core::array::from_fn(|j| if j < n_in { unsafe { mid[i * n_in + j][k].assume_init() } } else { T::ZERO }));
            for (j, &value) in r.iter().enumerate().take(n_out) {
                row[j][k] = value;
            }
        }
        for (j, block) in row.iter().enumerate().take(n_out) {
            emit(i * n_out + j, block);
        }
    }
}

/// `V[ξ][t][l] = (Bᵀ d B)[ξ]` for every tile `t` of the `th × tw` grid and lane `l`, from the
/// padded channels-last input (`(m·th + 2) × (m·tw + 2)` pixels of `lanes` values).
fn input_transform<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, pad: &[T], v: &mut [T]) {
    with_simd!(avx512, avx2; input_transform_simd, input_transform_kernel::<T, W>(tiles, lanes, pad, v))
}

#[inline(always)]
fn input_transform_kernel<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, pad: &[T], v: &mut [T]) {
    let (th, tw, m, alpha) = (tiles.th, tiles.tw, W::M, W::ALPHA);
    let wp = m * tw + 2;
    let block = th * tw * lanes;
    let (zero, mut spare) = ([T::ZERO; LB], [[T::ZERO; LB]; MAX_XI]);
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let d: [&[T]; MAX_XI] = core::array::from_fn(|i| {
                if i < alpha * alpha { &pad[((m * ty + i / alpha) * wp + m * tx + i % alpha) * lanes..][..lanes] } else { &[] }
            });
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let x = blocks(&d, alpha * alpha, l0, n, &mut spare, &zero);
                separable(&x, alpha, alpha, W::input, |xi, row| store(v, xi * block + t * lanes + l0, row, n));
            }
        }
    }
}

/// `Y = Aᵀ M A` for every tile: `m[ξ][t][l]` to the channels-last output `y[(oy · wo + ox) ·
/// lanes + l]`, cut at the image's edge.
fn output_transform<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, m: &[T], y: &mut [T]) {
    with_simd!(avx2; output_transform_simd, output_transform_kernel::<T, W>(tiles, lanes, ho, wo, m, y))
}

#[inline(always)]
fn output_transform_kernel<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, m: &[T], y: &mut [T]) {
    let (th, tw, side, alpha) = (tiles.th, tiles.tw, W::M, W::ALPHA);
    let block = th * tw * lanes;
    let (zero, mut spare) = ([T::ZERO; LB], [[T::ZERO; LB]; MAX_XI]);
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let src: [&[T]; MAX_XI] = core::array::from_fn(|i| if i < alpha * alpha { &m[i * block + t * lanes..][..lanes] } else { &[] });
            let (oy, ox) = (side * ty, side * tx);
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let q = blocks(&src, alpha * alpha, l0, n, &mut spare, &zero);
                separable(&q, alpha, side, W::output, |o, block| {
                    let (py, px) = (oy + o / side, ox + o % side);
                    if py < ho && px < wo {
                        store(y, (py * wo + px) * lanes + l0, block, n);
                    }
                });
            }
        }
    }
}

/// The adjoint of [`output_transform`]: `dM[ξ][t][l] = (A dY Aᵀ)[ξ]` from the channels-last
/// `dy` (`ho × wo` pixels of `lanes` values; zero past the edge).
fn output_transform_adjoint<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, dy: &[T], dm: &mut [T]) {
    with_simd!(avx2; output_transform_adjoint_simd, output_transform_adjoint_kernel::<T, W>(tiles, lanes, ho, wo, dy, dm))
}

#[inline(always)]
fn output_transform_adjoint_kernel<T: Elem, W: Tile>(tiles: Tiles, lanes: usize, ho: usize, wo: usize, dy: &[T], dm: &mut [T]) {
    let (th, tw, side, alpha) = (tiles.th, tiles.tw, W::M, W::ALPHA);
    let block = th * tw * lanes;
    let (zero, mut spare) = ([T::ZERO; LB], [[T::ZERO; LB]; { MAX_M * MAX_M }]);
    let zeros = vec![T::ZERO; lanes];
    for ty in 0..th {
        for tx in 0..tw {
            let t = ty * tw + tx;
            let (oy, ox) = (side * ty, side * tx);
            let src: [&[T]; MAX_M * MAX_M] = core::array::from_fn(|o| {
                let (py, px) = (oy + o / side, ox + o % side);
                if o < side * side && py < ho && px < wo { &dy[(py * wo + px) * lanes..][..lanes] } else { &zeros[..] }
            });
            for l0 in (0..lanes).step_by(LB) {
                let n = LB.min(lanes - l0);
                let y = blocks(&src, side * side, l0, n, &mut spare, &zero);
                separable(&y, side, alpha, W::output_adjoint, |xi, row| store(dm, xi * block + t * lanes + l0, row, n));
            }
        }
    }
}

/// Filters per worker below which a filter transform stays on one thread.
const MIN_FILTER_LANES: usize = 4096;

/// Runs `f` on ranges of lanes `0..lanes` that partition them (starts a multiple of [`LB`]),
/// one per worker and at least `min_per_worker` lanes each, in parallel when rayon is on.
fn for_lane_ranges(lanes: usize, min_per_worker: usize, f: impl Fn(core::ops::Range<usize>) + Sync + Send) {
    let parts = threads().min(lanes.div_ceil(min_per_worker.max(1))).max(1);
    let per = lanes.div_ceil(parts).next_multiple_of(LB);
    let run = |p: usize| {
        let start = p * per;
        if start < lanes {
            f(start..(start + per).min(lanes));
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..parts).for_each(run);
    }
}

/// `U[ξ][k · c_in + c] = (G g_kc Gᵀ)[ξ]` for the weights `w` (`[c_out, c_in, 3, 3]`), lanes
/// split between the workers. The per-filter formulas compiled scalar took 30 ms for 512 × 512
/// filters with F(3×3), a third of a 3×3-map forward pass.
fn filter_transform<T: Elem, W: Tile>(c_out: usize, c_in: usize, w: &[T]) -> Vec<T> {
    let lanes = c_out * c_in;
    let len = W::ALPHA * W::ALPHA * lanes;
    let mut u: Vec<T> = Vec::with_capacity(len);
    let shared = SharedOut(u.spare_capacity_mut().as_mut_ptr().cast::<T>());
    for_lane_ranges(lanes, MIN_FILTER_LANES, |range| filter_transform_lanes::<T, W>(lanes, w, range, shared));
    // SAFETY: the ranges partition the lanes and each call wrote its lanes of every `ξ` row.
    unsafe { u.set_len(len) };
    u
}

fn filter_transform_lanes<T: Elem, W: Tile>(lanes: usize, w: &[T], range: core::ops::Range<usize>, u: SharedOut<T>) {
    with_simd!(avx512, avx2; filter_transform_simd, filter_transform_kernel::<T, W>(lanes, w, range, u))
}

#[inline(always)]
fn filter_transform_kernel<T: Elem, W: Tile>(lanes: usize, w: &[T], range: core::ops::Range<usize>, u: SharedOut<T>) {
    let alpha = W::ALPHA;
    for l0 in range.clone().step_by(LB) {
        let n = LB.min(range.end - l0);
        let mut x = [[T::ZERO; LB]; 9];
        for (k, taps) in w[l0 * 9..(l0 + n) * 9].chunks_exact(9).enumerate() {
            for (tap, &value) in taps.iter().enumerate() {
                x[tap][k] = value;
            }
        }
        separable(&x.each_ref(), 3, alpha, W::filter, |xi, row| {
            // SAFETY: `xi · lanes + l0 + n ≤ α² · lanes`, inside `u`'s capacity, and lanes
            // `range` of every row are this call's alone (the ranges partition the lanes).
            unsafe { core::ptr::copy_nonoverlapping(row.as_ptr(), u.get().add(xi * lanes + l0), n) };
        });
    }
}

/// The adjoint of [`filter_transform`]: `dg_kc = Gᵀ dU[·][k][c] G`,
/// as `[c_out, c_in, 3, 3]`.
fn filter_transform_adjoint<T: Elem, W: Tile>(c_out: usize, c_in: usize, du: &[T]) -> Vec<T> {
    let lanes = c_out * c_in;
    let mut dw: Vec<T> = Vec::with_capacity(lanes * 9);
    let shared = SharedOut(dw.spare_capacity_mut().as_mut_ptr().cast::<T>());
    for_lane_ranges(lanes, MIN_FILTER_LANES, |range| filter_transform_adjoint_lanes::<T, W>(lanes, du, range, shared));
    // SAFETY: the ranges partition the lanes and each call wrote the 9 taps of its filters.
    unsafe { dw.set_len(lanes * 9) };
    dw
}

fn filter_transform_adjoint_lanes<T: Elem, W: Tile>(lanes: usize, du: &[T], range: core::ops::Range<usize>, dw: SharedOut<T>) {
    with_simd!(avx512, avx2; filter_transform_adjoint_simd, filter_transform_adjoint_kernel::<T, W>(lanes, du, range, dw))
}

#[inline(always)]
fn filter_transform_adjoint_kernel<T: Elem, W: Tile>(lanes: usize, du: &[T], range: core::ops::Range<usize>, dw: SharedOut<T>) {
    let alpha = W::ALPHA;
    let (zero, mut spare) = ([T::ZERO; LB], [[T::ZERO; LB]; MAX_XI]);
    let rows: [&[T]; MAX_XI] = core::array::from_fn(|xi| if xi < alpha * alpha { &du[xi * lanes..][..lanes] } else { &[] });
    for l0 in range.clone().step_by(LB) {
        let n = LB.min(range.end - l0);
        let mut o = [[T::ZERO; LB]; 9];
        let x = blocks(&rows, alpha * alpha, l0, n, &mut spare, &zero);
        separable(&x, alpha, 3, W::filter_adjoint, |tap, row| o[tap] = *row);
        for k in 0..n {
            let taps: [T; 9] = core::array::from_fn(|tap| o[tap][k]);
            // SAFETY: filter `l0 + k` is in `range`, this call's alone, and inside `dw`'s capacity.
            unsafe { core::ptr::copy_nonoverlapping(taps.as_ptr(), dw.get().add((l0 + k) * 9), 9) };
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
    fn size(&mut self, g: &Geometry, m: usize, tiles: Tiles, imgs: usize) {
        let (t, xis) = (tiles.per_image(), (m + 2) * (m + 2));
        // The transforms and gemms write every element of `v`, `m` and `y` they later read;
        // `pad`'s border must be zero. Only the images' window is written, at the same places
        // for every chunk of one size, so a border zeroed once stays zero: `pad` is zeroed only
        // when its size (its layout) changes, not once per chunk (a whole pass over the input
        // per convolution, ~1 % of a ResNet18 step at 224 px; performance log, row 25).
        let pad = (m * tiles.th + 2) * (m * tiles.tw + 2) * imgs * g.c_in;
        if self.pad.len() != pad {
            self.pad.clear();
            self.pad.resize(pad, T::ZERO);
        }
        self.v.resize(xis * t * imgs * g.c_in, T::ZERO);
        self.m.resize(xis * t * imgs * g.c_out, T::ZERO);
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

/// The convolution `g` (see [`choose`]) of `x` with weights `w` (`[c_out, c_in, 3, 3]`).
pub(super) fn forward<T: Elem>(variant: Variant, g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    match variant {
        Variant::F2x2 => forward_with::<T, F2x2>(g, x, w, bias),
        Variant::F3x3 => forward_with::<T, F3x3>(g, x, w, bias),
    }
}

/// The input gradient of the convolution `g` (see [`choose`]): the "same" convolution of `dy`
/// with `w` transposed (`c_in` ↔ `c_out`) and rotated by 180°.
pub(super) fn input_grad<T: Elem>(variant: Variant, g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    let gt = Geometry { c_in: g.c_out, c_out: g.c_in, h: g.ho, w: g.wo, ho: g.h, wo: g.w, ..*g };
    forward(variant, &gt, dy, &transposed_rotated(g.c_out, g.c_in, w), None)
}

/// Filters per block of [`transposed_rotated`]'s copy (on each side).
const TRANSPOSE_BLOCK: usize = 16;

/// `wt[(c · c_out + k) · 9 + 8 − tap] = w[(k · c_in + c) · 9 + tap]`: the weights `[c_out, c_in,
/// 3, 3]` transposed and rotated by 180°, in blocks of 16 × 16 filters (both sides' rows of a
/// block stay in cache; a filter-by-filter copy reads one cache line per filter), ranges of `c`
/// split between the workers.
fn transposed_rotated<T: Elem>(c_out: usize, c_in: usize, w: &[T]) -> Vec<T> {
    let mut wt: Vec<T> = Vec::with_capacity(w.len());
    let shared = SharedOut(wt.spare_capacity_mut().as_mut_ptr().cast::<T>());
    for_lane_ranges(c_in, MIN_FILTER_LANES.div_ceil(c_out), |cs| {
        for c0 in cs.clone().step_by(TRANSPOSE_BLOCK) {
            for k0 in (0..c_out).step_by(TRANSPOSE_BLOCK) {
                for k in k0..(k0 + TRANSPOSE_BLOCK).min(c_out) {
                    for c in c0..(c0 + TRANSPOSE_BLOCK).min(cs.end) {
                        let src = &w[(k * c_in + c) * 9..][..9];
                        let taps: [T; 9] = core::array::from_fn(|tap| src[8 - tap]);
                        // SAFETY: row `c` of `wt` belongs to this range of `c` alone, and
                        // `(c · c_out + k) · 9 + 9 ≤ w.len()`, inside `wt`'s capacity.
                        unsafe { core::ptr::copy_nonoverlapping(taps.as_ptr(), shared.get().add((c * c_out + k) * 9), 9) };
                    }
                }
            }
        }
    });
    // SAFETY: the ranges partition `0..c_in` and each wrote all `c_out · 9` values of its rows.
    unsafe { wt.set_len(w.len()) };
    wt
}

/// The weight gradient of the convolution `g` (see [`choose`]), `[c_out, c_in, 3, 3]`.
pub(super) fn weight_grad<T: Elem>(variant: Variant, g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    match variant {
        Variant::F2x2 => weight_grad_with::<T, F2x2>(g, x, dy),
        Variant::F3x3 => weight_grad_with::<T, F3x3>(g, x, dy),
    }
}

fn forward_with<T: Elem, W: Tile>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let tiles = Tiles::new(g, W::M);
    let xis = W::ALPHA * W::ALPHA;
    let u = filter_transform::<T, W>(g.c_out, g.c_in, w);
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
            scratch.size(g, W::M, tiles, imgs);
            let Scratch { pad, v, m, y } = scratch;
            let (lanes_in, lanes_out) = (imgs * g.c_in, imgs * g.c_out);
            let cols = tiles.per_image() * imgs;
            planes_to_lanes(&x[n0 * g.image_in()..][..imgs * g.image_in()], lanes_in, g.h, g.w, W::M * tiles.tw + 2, 1, pad);
            input_transform::<T, W>(tiles, lanes_in, pad, v);
            for xi in 0..xis {
                // Mᵀ[ξ] (cols × c_out) = Vᵀ[ξ] (cols × c_in) · Uᵀ[ξ] (c_in × c_out): column
                // (t, img) of V is `v[ξ][t][img · c_in ..]`, so Vᵀ is row-major with row length c_in.
                let uk = &u[xi * g.c_out * g.c_in..][..g.c_out * g.c_in];
                let vk = &v[xi * cols * g.c_in..][..cols * g.c_in];
                let mk = &mut m[xi * cols * g.c_out..][..cols * g.c_out];
                gemm(cols, g.c_out, g.c_in, mk, g.c_out, false, vk, (g.c_in, 1), uk, (1, g.c_in), inner_parallel);
            }
            output_transform::<T, W>(tiles, lanes_out, g.ho, g.wo, m, y);
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

fn weight_grad_with<T: Elem, W: Tile>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let tiles = Tiles::new(g, W::M);
    let xis = W::ALPHA * W::ALPHA;
    let chunks = worker_chunks(g.batch, tiles.chunk(g.batch));
    let inner_parallel = chunks.len() < threads();
    let size = xis * g.c_out * g.c_in;
    let partials = for_each_chunk(
        &chunks,
        || vec![T::ZERO; size],
        |scratch: &mut Scratch<T>, du: &mut Vec<T>, n0, imgs| {
            scratch.size(g, W::M, tiles, imgs);
            let Scratch { pad, v, m: dm, y: dyl } = scratch;
            let (lanes_in, lanes_out) = (imgs * g.c_in, imgs * g.c_out);
            let cols = tiles.per_image() * imgs;
            planes_to_lanes(&x[n0 * g.image_in()..][..imgs * g.image_in()], lanes_in, g.h, g.w, W::M * tiles.tw + 2, 1, pad);
            input_transform::<T, W>(tiles, lanes_in, pad, v);
            // dy channels-last, without a border.
            planes_to_lanes(&dy[n0 * g.image_out()..][..imgs * g.image_out()], lanes_out, g.ho, g.wo, g.wo, 0, dyl);
            output_transform_adjoint::<T, W>(tiles, lanes_out, g.ho, g.wo, dyl, dm);
            for xi in 0..xis {
                // dU[ξ] (c_out × c_in) += dM[ξ] (c_out × cols) · Vᵀ[ξ] (cols × c_in).
                let dmk = &dm[xi * cols * g.c_out..][..cols * g.c_out];
                let vk = &v[xi * cols * g.c_in..][..cols * g.c_in];
                let duk = &mut du[xi * g.c_out * g.c_in..][..g.c_out * g.c_in];
                gemm(g.c_out, g.c_in, cols, duk, g.c_in, true, dmk, (1, g.c_out), vk, (g.c_in, 1), inner_parallel);
            }
        },
    );
    filter_transform_adjoint::<T, W>(g.c_out, g.c_in, &sum_partials(partials, size))
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

    const VARIANTS: [Variant; 2] = [Variant::F2x2, Variant::F3x3];

    /// Sizes that are and are not multiples of 2 and 3 (a cut last tile row/column, up to two
    /// wasted rows with F(3×3)), one image and chunks of many, lane counts that are not a
    /// multiple of the transforms' block, more output than input channels and fewer; both
    /// variants run every case, whatever [`choose`] would pick.
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
            // One F(3×3) tile per image, as in the 84 px ResNets' last stage.
            geometry(30, 32, 3, 3, 24),
            // More filters than one worker's share of a filter transform (`MIN_FILTER_LANES`),
            // split at a lane count that is not a multiple of the transforms' block.
            geometry(2, 72, 5, 5, 65),
            // Odd sides (a two-row, two-column zero border) over five chunks of 22, 22, 22, 22
            // and 12 images: a worker reuses its padded buffer for chunks of one size and lays
            // it out again for the last.
            geometry(100, 16, 5, 7, 16),
        ]
    }

    /// F(3×3) where it saves clearly more than F(2×2), tiny maps and RGB-like inputs on im2col.
    #[test]
    fn choose_prefers_f3x3_where_it_clearly_saves_more() {
        assert_eq!(choose(&geometry(1, 64, 21, 21, 64)), Some(Variant::F3x3), "49·25 vs 121·16");
        assert_eq!(choose(&geometry(1, 256, 6, 6, 256)), Some(Variant::F3x3), "4·25 vs 9·16");
        assert_eq!(choose(&geometry(1, 512, 3, 3, 512)), Some(Variant::F3x3), "one tile: 3.24× fewer");
        assert_eq!(choose(&geometry(1, 64, 56, 56, 64)), Some(Variant::F3x3), "361·25 vs 784·16");
        assert_eq!(choose(&geometry(1, 512, 7, 7, 512)), Some(Variant::F2x2), "9·25 vs 16·16: 1.14×");
        assert_eq!(choose(&geometry(1, 64, 8, 8, 64)), Some(Variant::F2x2), "9·25 vs 16·16: 1.14×");
        assert_eq!(choose(&geometry(1, 64, 4, 4, 64)), Some(Variant::F2x2), "4·16 vs 4·25");
        assert_eq!(choose(&geometry(1, 64, 10, 10, 64)), Some(Variant::F2x2), "16·25 vs 25·16");
        assert_eq!(choose(&geometry(1, 64, 22, 22, 64)), Some(Variant::F2x2), "64·25 vs 121·16: 1.21×");
        assert_eq!(choose(&geometry(1, 64, 2, 2, 64)), None, "2×2 map: below MIN_SIDE");
        assert_eq!(choose(&geometry(1, 3, 84, 84, 64)), None, "3 input channels");
        let strided = Geometry::new(
            &Shape::from(vec![1, 64, 21, 21]),
            &Shape::from(vec![64, 64, 3, 3]),
            &ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
        );
        assert_eq!(choose(&strided), None);
    }

    /// The 1-D transforms against the definition of Winograd's minimal filtering: for every
    /// input `d` (`α` values) and filter `g`, `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the correlation
    /// `y[i] = Σ_j d[i + j] g[j]`; and the adjoints satisfy `⟨F x, y⟩ = ⟨x, Fᵀ y⟩`.
    fn check_one_d<W: Tile>() {
        let (m, alpha) = (W::M, W::ALPHA);
        for seed in 0..20 {
            let d: [f64; MAX_ALPHA] = core::array::from_fn(|i| if i < alpha { pseudo(MAX_ALPHA, seed)[i] } else { 0.0 });
            let g: [f64; 3] = core::array::from_fn(|i| pseudo(3, seed + 100)[i]);
            let (gd, bd) = (W::filter(g), W::input(d));
            let prod: [f64; MAX_ALPHA] = core::array::from_fn(|i| gd[i] * bd[i]);
            let y = W::output(prod);
            for i in 0..m {
                let exact: f64 = (0..3).map(|j| d[i + j] * g[j]).sum();
                assert!((y[i] - exact).abs() < 1e-12, "F({m}, 3) output {i}: {} vs {exact}", y[i]);
            }
            let q: [f64; MAX_ALPHA] = core::array::from_fn(|i| if i < alpha { pseudo(MAX_ALPHA, seed + 200)[i] } else { 0.0 });
            let r: [f64; MAX_M] = core::array::from_fn(|i| if i < m { pseudo(MAX_M, seed + 300)[i] } else { 0.0 });
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
            let lhs = dot(&W::output(q), &r);
            assert!((lhs - dot(&q, &W::output_adjoint(r))).abs() < 1e-12, "F({m}, 3): Aᵀ vs A");
            let lhs = dot(&W::filter(g), &q);
            assert!((lhs - dot(&g, &W::filter_adjoint(q))).abs() < 1e-12, "F({m}, 3): G vs Gᵀ");
        }
    }

    #[test]
    fn one_d_transforms_are_minimal_filtering() {
        check_one_d::<F2x2>();
        check_one_d::<F3x3>();
    }

    #[test]
    fn forward_matches_naive() {
        for variant in VARIANTS {
            for g in cases() {
                let x = pseudo(g.batch * g.image_in(), 11);
                let w = pseudo(g.c_out * g.c_in * 9, 12);
                let b = pseudo(g.c_out, 13);
                let mut expected = naive(&g, &x, &w);
                for (i, v) in expected.iter_mut().enumerate() {
                    *v += b[(i / g.pixels()) % g.c_out];
                }
                let got = forward(variant, &g, &x, &w, Some(&b));
                let err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(err < 1e-12, "{variant:?} {g:?}: max error {err}");
            }
        }
    }

    /// ⟨conv(x), dy⟩ = ⟨x, dx(dy)⟩ = ⟨w, dW(dy)⟩, against the naive direct convolution.
    #[test]
    fn gradients_are_adjoints_of_forward() {
        for variant in VARIANTS {
            for g in cases() {
                let x = pseudo(g.batch * g.image_in(), 14);
                let w = pseudo(g.c_out * g.c_in * 9, 15);
                let dy = pseudo(g.batch * g.image_out(), 16);
                let lhs: f64 = naive(&g, &x, &w).iter().zip(&dy).map(|(a, b)| a * b).sum();
                let dx = input_grad(variant, &g, &w, &dy);
                let via_x: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
                let dw = weight_grad(variant, &g, &x, &dy);
                let via_w: f64 = w.iter().zip(&dw).map(|(a, b)| a * b).sum();
                assert!((lhs - via_x).abs() < 1e-9 * (1.0 + lhs.abs()), "{variant:?} {g:?}: dx {lhs} vs {via_x}");
                assert!((lhs - via_w).abs() < 1e-9 * (1.0 + lhs.abs()), "{variant:?} {g:?}: dw {lhs} vs {via_w}");
            }
        }
    }

    /// The gradients element by element against the im2col path (itself tested against the
    /// naive convolution): an adjoint test alone would miss errors that cancel in the sum.
    #[test]
    fn gradients_match_im2col_elementwise() {
        for variant in VARIANTS {
            for g in cases() {
                let x = pseudo(g.batch * g.image_in(), 17);
                let w = pseudo(g.c_out * g.c_in * 9, 18);
                let dy = pseudo(g.batch * g.image_out(), 19);
                let max_err = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                let dx = max_err(&input_grad(variant, &g, &w, &dy), &super::super::input_grad(&g, &w, &dy));
                let dw = max_err(&weight_grad(variant, &g, &x, &dy), &super::super::weight_grad(&g, &x, &dy));
                assert!(dx < 1e-12 && dw < 1e-11, "{variant:?} {g:?}: dx {dx}, dw {dw}");
            }
        }
    }

    /// f32 on ResNet-like layers: the error against an f64 direct convolution stays within a
    /// small multiple of the im2col path's own f32 error, for both variants.
    #[test]
    fn f32_error_is_close_to_direct_convolution() {
        for variant in VARIANTS {
            for g in [geometry(4, 64, 11, 11, 64), geometry(8, 128, 3, 3, 128)] {
                let x64 = pseudo(g.batch * g.image_in(), 20);
                let w64 = pseudo(g.c_out * g.c_in * 9, 21);
                let exact = naive(&g, &x64, &w64);
                let (x, w): (Vec<f32>, Vec<f32>) = (x64.iter().map(|&v| v as f32).collect(), w64.iter().map(|&v| v as f32).collect());
                let err = |y: &[f32]| y.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let wino = err(&forward(variant, &g, &x, &w, None));
                let direct = err(&super::super::forward(&g, &x, &w, None));
                let floor = direct.max(f32::EPSILON as f64 * scale);
                assert!(wino < 8.0 * floor, "{variant:?} {g:?}: winograd {wino:e} vs im2col {direct:e} (scale {scale})");
                assert!(wino < 1e-5 * scale, "{variant:?} {g:?}: winograd {wino:e} against outputs up to {scale}");
            }
        }
    }
}
