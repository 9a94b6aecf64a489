//! Slice kernels of the fused block tails, on contiguous NCHW maps stored as f32, f16 or bf16
//! and computed in f32: `relu(x·scale + shift)`, optionally followed by a 2×2, stride-2 max-pool
//! (floor), and `relu(x·scale + shift + residual)`.
//!
//! - `moments.rs`: the per-channel batch statistics.
//! - `forward.rs`: the forward passes, which record what the backward pass needs ([`Record`]).
//! - `backward.rs`: the gradients, from the block's input, the output gradient and [`Saved`].
//!
//! The pooled forward records, per output, which slot of its window held the first maximum (or
//! [`INACTIVE`] when the ReLU zeroed it). That byte is all the backward pass needs besides the
//! block's input: the gradient of a pooled ReLU output flows to exactly one input position, and
//! only when the maximum was positive — so no full-size ReLU or batch-norm output is kept.

mod backward;
mod forward;
mod moments;

use burn::tensor::{bf16, f16};

pub(crate) use backward::{
    backward, backward_in_place, relu_mask, residual_gradient, Decisions, Saved,
};
pub(crate) use forward::{forward, forward_residual};
pub(crate) use moments::channel_moments;

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
    pub fn output(&self, pool: Pool) -> Dims {
        match pool {
            Pool::Max2x2 => Dims { h: self.h / 2, w: self.w / 2, ..*self },
            // (side + 2·1 − 3) / 2 + 1, as PyTorch's floor mode.
            Pool::Max3x3Stride2 => {
                let side = |s: usize| if s == 0 { 0 } else { (s - 1) / 2 + 1 };
                Dims { h: side(self.h), w: side(self.w), ..*self }
            }
            Pool::Off => *self,
        }
    }
}

/// Marks a pooled output whose window maximum was not positive: the ReLU stopped its gradient.
pub(crate) const INACTIVE: u8 = u8::MAX;

/// The input position (within a plane of width `w`, height `h`) of slot `code` of pooled output
/// `k` (in a plane of width `out_w`). An [`INACTIVE`] output maps to a slot that is always inside
/// the plane (the caller reads it and counts zero).
#[inline(always)]
pub(crate) fn window_position(pool: Pool, k: usize, code: u8, out_w: usize, w: usize) -> usize {
    let (oy, ox) = (k / out_w, k % out_w);
    match pool {
        Pool::Max3x3Stride2 => {
            // Slot 4, the window's centre (2·oy, 2·ox), is always inside the plane.
            let code = if code == INACTIVE { 4 } else { code as usize };
            let (dy, dx) = (code / 3, code % 3);
            (2 * oy + dy - 1) * w + 2 * ox + dx - 1
        }
        Pool::Max2x2 | Pool::Off => {
            let code = code & 3;
            let (dy, dx) = ((code >> 1) as usize, (code & 1) as usize);
            (2 * oy + dy) * w + 2 * ox + dx
        }
    }
}

/// Whether a tail ends in a max-pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// No pool: the output has the input's sizes.
    Off,
    /// A 2×2, stride-2 max-pool (floor) after the ReLU.
    Max2x2,
    /// 3×3 windows, stride 2, padding 1 (torchvision's ResNet stem): windows overlap, and the
    /// padding never wins.
    Max3x3Stride2,
}

/// What a forward kernel records besides the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// The output only: inference, untracked ops and retro-forwards.
    OutputOnly,
    /// Also the ReLU (and pool) decisions the backward pass routes the gradient by: a window code
    /// per pooled output, a mask byte per residual output (none for the plain unpooled tail,
    /// whose backward recomputes them from its input).
    Decisions,
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

#[cfg(test)]
mod tests;
