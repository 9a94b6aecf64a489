//! `pool?(relu(batch_norm(conv(x))))` — torchvision's ResNet stem — as one autodiff node on
//! `Autodiff<Flex>` that keeps the convolution's input, not its output.
//!
//! The stem's convolution output is the largest map of a ResNet step (64 channels at half the
//! image's side: 321 MiB for 105 images at 224 px, more than the whole first stage keeps per
//! block), and the fused tail after it keeps it for the batch norm's backward pass. This node
//! keeps the images (which the convolution keeps anyway for its weight gradient) and the pool's
//! window codes instead, and runs the convolution again in the backward pass — the same kernel
//! on the same values, so the recomputed map is bit for bit the forward's — before the tail's
//! backward (written over the recomputed map) and the convolution's gradients. The price is one
//! forward pass of the stem convolution per training step (2–4 % of a ResNet18 step on the CPU;
//! performance log, row 23), so the caller asks for it only where the output is large.
//!
//! Runs on `Autodiff<Flex>` without a checkpointing strategy, for a bias-free convolution with
//! symmetric padding on f32, f16 or bf16 maps of its weight's dtype; everything else takes the
//! convolution and the fused tail as two ops.

use burn::backend::autodiff::grads::Gradients;
use burn::backend::Flex;
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ModuleOps};

use super::batch_norm::{batch_affine, update_running, Moments};
use super::conv_node::{self, conv_options, ConvBackward, ConvFusion, ConvInputs};
use super::kernels::{self, Decisions, Pool};
use super::op::{register_affine_gradients, tail_backward};
use super::route::{primitive, tensor, AdTensor, Route};
use super::storage::{dims, flex_tensor, values, with_stored_type, Stored};

/// Runs `pool?(relu(bn(conv(x))))` as one node when `B` is `Autodiff<Flex>` (no checkpointing
/// strategy), `conv` has no bias and symmetric padding, `x` and the weight are f32, f16 or bf16
/// of one dtype, and the convolution's output (all images) is at least `recompute_from` bytes
/// (smaller outputs are cheaper kept: the caller runs the convolution and the fused tail); hands
/// `x` back otherwise.
///
/// # Shapes
/// - `x`: `[n, c_in, h, w]`
/// - output: the tail's output ([`kernels::Dims::output`]) for the convolution's output
pub(super) fn try_forward<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    pool: Pool,
    recompute_from: usize,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(Route::Autodiff) = Route::of::<B>() else { return Err(x) };
    let Some(options) = conv_options(conv, &x, bn) else { return Err(x) };
    let dtype = x.dtype();
    let [n, _, h, w] = x.dims();
    let side = |i: usize, size: usize| {
        let span = options.dilation[i] * (conv.kernel_size[i] - 1) + 1;
        (size + 2 * options.padding[i]).saturating_sub(span) / options.stride[i] + 1
    };
    let output_bytes = n * conv.weight.dims()[0] * side(0, h) * side(1, w) * dtype.size();
    if output_bytes < recompute_from {
        return Err(x);
    }
    let inputs: ConvInputs = [
        primitive::<B, 4, AdTensor>(x),
        primitive::<B, 4, AdTensor>(conv.weight.val()),
        primitive::<B, 1, AdTensor>(bn.gamma.val()),
        primitive::<B, 1, AdTensor>(bn.beta.val()),
    ];
    let (y, moments, shape) =
        with_stored_type!(dtype, E => train::<E>(inputs, bn.epsilon, options, pool));
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// The forward on batch statistics, recorded as one node. Returns the tail's output, the batch
/// mean and biased variance of the convolution's output, and that output's shape.
fn train<E: Stored>(
    inputs: ConvInputs,
    epsilon: f64,
    options: ConvOptions<2>,
    pool: Pool,
) -> (AdTensor, Moments, [usize; 4]) {
    let [x, weight, gamma, beta] = &inputs;
    let conv_out =
        Flex::conv2d(x.primitive.clone(), weight.primitive.clone(), None, options.clone());
    let d = dims(&conv_out);
    let conv_values = values::<E>(&conv_out);
    let (affine, moments) = batch_affine(&conv_values, d, gamma, beta, epsilon);
    let decisions = match pool {
        Pool::Max2x2 => Decisions::PoolWindows,
        Pool::Max3x3Stride2 => Decisions::PoolWindows3x3,
        Pool::Off => Decisions::RecomputedRelu,
    };
    let output = conv_node::record::<E>(ConvFusion::ConvTail, &inputs, options, |record| {
        let (y, codes) =
            kernels::forward(&conv_values, d, &affine.scale, &affine.shift, pool, record);
        (flex_tensor(y, d.output(pool)), affine.into_saved(d, decisions, codes))
    });
    (output, moments, [d.n, d.c, d.h, d.w])
}

/// The backward pass: the forward's convolution output again (the same kernel on the same
/// values), the tail's backward written over it, then the convolution's weight and input
/// gradients.
pub(super) fn backward<E: Stored>(inputs: ConvBackward, grads: &mut Gradients) {
    let ConvBackward { grad, x, weight, saved, options, wanted } = inputs;
    let [x_id, weight_id, gamma_id, beta_id] = wanted;
    let conv_out = Flex::conv2d(x.clone(), weight.clone(), None, options.clone());
    let (dconv, dgamma, dbeta) = tail_backward(conv_out, &values::<E>(&grad), &saved);
    register_affine_gradients(grads, [gamma_id, beta_id], [dgamma, dbeta]);
    if let Some(id) = weight_id {
        let dw =
            Flex::conv2d_weight_backward(x.clone(), weight.clone(), dconv.clone(), options.clone());
        grads.register::<Flex>(id, dw);
    }
    if let Some(id) = x_id {
        grads.register::<Flex>(id, Flex::conv2d_x_backward(x, weight, dconv, options));
    }
}
