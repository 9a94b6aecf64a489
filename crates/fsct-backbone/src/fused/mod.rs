//! Batch norm → ReLU → optional 2×2 max-pool (the tail of every Conv* block), and batch norm →
//! add the residual → ReLU (the end of a ResNet BasicBlock), each as one operation.
//!
//! Composed from Burn's tensor ops, the tail keeps the batch-norm intermediates, the ReLU output
//! and the pool input alive for the backward pass — on a Conv4 at 84 px that is several 190 MiB
//! maps for the first block alone — and walks them in as many passes. On Flex (the CPU backend,
//! with or without autodiff and gradient checkpointing) this module runs the tail as one custom
//! operation instead: two passes forward, two backward, and it keeps only the block's input and
//! one byte per pooled output. Every other backend (CUDA, or a backend of your own) takes the
//! composed path, which computes the same function (the tests hold the two together); the first
//! fallback of each kind says so once at debug level.
//!
//! Where the pieces live:
//!
//! - this file: the entry points the blocks call, and the composed ops;
//! - [`route`]: which backends the fused ops run on (compared with the concrete Flex types at
//!   run time, so the backbone code stays generic over `B: Backend`), the conversions to Flex's
//!   tensors and back, and the fallback messages;
//! - [`storage`]: the element types (f32, f16, bf16), the one dtype dispatch, map ↔ slice;
//! - [`batch_norm`]: the affine maps on running and batch statistics, the running-statistics
//!   update;
//! - [`op`]: the skeleton every fused op fills in ([`op::FusedTail`]): routing, inference,
//!   training as one autodiff node, retro-forward, backward;
//! - [`relu_pool`] and [`residual`]: the two ops;
//! - [`conv_tail`]: a convolution and the tail after it as one node that keeps the convolution's
//!   input, not its output (run again in the backward pass): torchvision's ResNet stem;
//! - [`relu_conv`]: the first tail of a BasicBlock and the convolution after it as one node,
//!   which keeps the tail's input but not its output;
//! - [`conv_node`]: what those two share (which convolutions they compute, their node and how
//!   it is recorded, the opening of its backward pass);
//! - [`kernels`]: the kernels on plain slices (moments, forward, backward), free of autodiff.

mod batch_norm;
mod conv_node;
mod conv_tail;
mod kernels;
mod op;
mod relu_conv;
mod relu_pool;
mod residual;
mod route;
mod storage;

use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;

pub(crate) use kernels::Pool;
pub use route::{with_block_ops, BlockOps};

use crate::norm::{batch_norm, BatchNormMode};

/// Whether `B` is Flex or `Autodiff<Flex>` (with or without balanced checkpointing): the
/// backends the fused tails run on.
pub(crate) fn is_flex<B: Backend>() -> bool {
    route::Route::of::<B>().is_some()
}

/// `pool?(relu(batch_norm(x)))` with the batch norm in [`BatchNormMode::Standard`]: batch
/// statistics (and running-statistic updates) on an autodiff backend, running statistics
/// otherwise.
///
/// # Shapes
/// - `x`: `[n, c, h, w]`
/// - output: `[n, c, h / 2, w / 2]` (floor) with [`Pool::Max2x2`], `[n, c, (h − 1) / 2 + 1,
///   (w − 1) / 2 + 1]` with [`Pool::Max3x3Stride2`], else `[n, c, h, w]`
pub(crate) fn batch_norm_relu_pool<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    pool: Pool,
) -> Tensor<B, 4> {
    match relu_pool::try_forward(bn, x, pool) {
        Ok(y) => y,
        Err(x) => composed(bn, x, pool),
    }
}

/// `relu(batch_norm(x))` in `mode`: fused on Flex in [`BatchNormMode::Standard`] (the ResNets
/// that train their BatchNorms), composed otherwise (the frozen torchvision ResNets normalise
/// with batch statistics in every mode).
///
/// # Shapes
/// - `x`: `[n, c, h, w]`
/// - output: `[n, c, h, w]`
pub(crate) fn batch_norm_relu<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    mode: BatchNormMode,
) -> Tensor<B, 4> {
    match mode {
        BatchNormMode::Standard => batch_norm_relu_pool(bn, x, Pool::Off),
        BatchNormMode::BatchStatistics => relu(batch_norm(bn, x, mode)),
    }
}

/// The size of a stem convolution's output (all images of a step) from which the stem runs its
/// convolution again in the backward pass rather than keep the output: 128 MiB.
///
/// The recomputation costs one forward pass of the stem convolution, 2–4 % of a ResNet18
/// training step on the CPU at 84 and at 224 px alike, and saves the output: 321 MiB (11 % of
/// the step's peak RSS) for 105 images at 224 px, but 45 MiB (6 %) at 84 px, where the peak is
/// already well inside the memory target (performance log, row 23).
const RECOMPUTE_STEM_FROM: usize = 128 << 20;

/// `pool?(relu(batch_norm(conv(x))))` with the batch norm in [`BatchNormMode::Standard`]
/// (torchvision's ResNet stem): one autodiff node on `Autodiff<Flex>` that keeps `x` and the
/// pool's window codes but not the convolution's output (run again in the backward pass) when
/// that output is at least [`RECOMPUTE_STEM_FROM`] bytes; `conv` then [`batch_norm_relu_pool`]
/// otherwise.
///
/// # Shapes
/// - `x`: `[n, c_in, h, w]`
/// - output: [`batch_norm_relu_pool`]'s output for `conv`'s output
pub(crate) fn conv_batch_norm_relu_pool<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    pool: Pool,
) -> Tensor<B, 4> {
    match conv_tail::try_forward(conv, bn, x, pool, RECOMPUTE_STEM_FROM) {
        Ok(y) => y,
        Err(x) => batch_norm_relu_pool(bn, conv.forward(x), pool),
    }
}

/// `conv(relu(batch_norm(x)))` in `mode` (the middle of a ResNet BasicBlock): one autodiff node
/// on `Autodiff<Flex>` in [`BatchNormMode::Standard`] that keeps `x` but not the ReLU output
/// (recomputed in the backward pass); [`batch_norm_relu`] then `conv` otherwise.
///
/// # Shapes
/// - `x`: `[n, c, h, w]`
/// - output: `conv`'s output for a `[n, c, h, w]` input
pub(crate) fn batch_norm_relu_conv<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    conv: &Conv2d<B>,
    mode: BatchNormMode,
) -> Tensor<B, 4> {
    let x = match mode {
        BatchNormMode::Standard => match relu_conv::try_forward(bn, x, conv) {
            Ok(y) => return y,
            Err(x) => x,
        },
        BatchNormMode::BatchStatistics => x,
    };
    conv.forward(batch_norm_relu(bn, x, mode))
}

/// `relu(batch_norm(x) + residual)` in `mode` (the end of a ResNet BasicBlock): fused on Flex
/// in [`BatchNormMode::Standard`], composed otherwise.
///
/// # Shapes
/// - `x`, `residual`: `[n, c, h, w]`
/// - output: `[n, c, h, w]`
pub(crate) fn batch_norm_add_relu<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
    mode: BatchNormMode,
) -> Tensor<B, 4> {
    let (x, residual) = match mode {
        BatchNormMode::Standard => match residual::try_forward(bn, x, residual) {
            Ok(y) => return y,
            Err(maps) => maps,
        },
        BatchNormMode::BatchStatistics => (x, residual),
    };
    composed_residual(bn, x, residual, mode)
}

/// `relu(batch_norm(x) + residual)` from Burn's tensor ops, for every backend.
fn composed_residual<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
    mode: BatchNormMode,
) -> Tensor<B, 4> {
    relu(batch_norm(bn, x, mode).add(residual))
}

/// `pool?(relu(batch_norm(x)))` from Burn's tensor ops, for every backend.
fn composed<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: Pool) -> Tensor<B, 4> {
    let x = relu(batch_norm(bn, x, BatchNormMode::Standard));
    match pool {
        Pool::Max2x2 => max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false),
        Pool::Max3x3Stride2 => max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false),
        Pool::Off => x,
    }
}

#[cfg(test)]
mod tests;
