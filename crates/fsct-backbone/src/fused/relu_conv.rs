//! `conv(relu(batch_norm(x)))` — the middle of a ResNet BasicBlock — as one autodiff node on
//! `Autodiff<Flex>`, so the ReLU output between the two is never kept.
//!
//! Composed, the block's second convolution keeps its input `relu(bn(x))` for its weight
//! gradient while the tail before it keeps `x`: two maps of the block's size for one. This node
//! keeps only `x` (and the batch norm's per-channel affine map) and recomputes `relu(bn(x))` in
//! the backward pass with the forward's own kernel — one element-wise pass, bit for bit the
//! forward's values — before running the convolution's weight and input gradients and the tail's
//! backward on it. At 224 px that is one map less per block: −300 MiB on a ResNet18 training
//! step, −550 MiB on a ResNet34 (performance log, row 21). The same trade Burn's balanced
//! checkpointing makes for every memory-bound op, here only where it costs no recomputed
//! convolution.
//!
//! Runs on `Autodiff<Flex>` without a checkpointing strategy, for a bias-free convolution with
//! symmetric padding on f32, f16 or bf16 maps of its weight's dtype; everything else (inference,
//! balanced checkpointing, which recomputes the tail's output anyway, other backends) takes the
//! tail and the convolution as two ops.

use std::borrow::Cow;

use burn::backend::autodiff::grads::Gradients;
use burn::backend::Flex;
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ModuleOps};

use super::batch_norm::{batch_affine, update_running, Moments};
use super::conv_node::{self, conv_options, ConvBackward, ConvFusion, ConvInputs};
use super::kernels::{self, Decisions, Pool, Record};
use super::op::{register_gradients, tail_backward};
use super::route::{primitive, tensor, AdTensor, Route};
use super::storage::{dims, flex_tensor, values, with_stored_type, Stored};

/// Runs `conv(relu(bn(x)))` as one node when `B` is `Autodiff<Flex>` (no checkpointing
/// strategy), `conv` has no bias and symmetric padding, and `x` and the weight are f32, f16 or
/// bf16 of one dtype; hands `x` back otherwise.
///
/// # Shapes
/// - `x`: `[n, c, h, w]` (`c` = the convolution's input channels)
/// - output: the convolution's output, `[n, c_out, h_out, w_out]`
pub(super) fn try_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    conv: &Conv2d<B>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(Route::Autodiff) = Route::of::<B>() else { return Err(x) };
    let Some(options) = conv_options(conv, &x, bn) else { return Err(x) };
    let dtype = x.dtype();
    let shape = x.dims();
    let inputs = [
        primitive::<B, 4, AdTensor>(x),
        primitive::<B, 4, AdTensor>(conv.weight.val()),
        primitive::<B, 1, AdTensor>(bn.gamma.val()),
        primitive::<B, 1, AdTensor>(bn.beta.val()),
    ];
    let (y, moments) = with_stored_type!(dtype, E => train::<E>(inputs, bn.epsilon, options));
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// The forward on batch statistics, recorded as one node. Returns the convolution's output and
/// the batch mean and biased variance.
fn train<E: Stored>(
    inputs: ConvInputs,
    epsilon: f64,
    options: ConvOptions<2>,
) -> (AdTensor, Moments) {
    let [x, weight, gamma, beta] = &inputs;
    let d = dims(&x.primitive);
    let x_values: Cow<'_, [E]> = values::<E>(&x.primitive);
    let (affine, moments) = batch_affine(&x_values, d, gamma, beta, epsilon);
    let (relu_out, _) =
        kernels::forward(&x_values, d, &affine.scale, &affine.shift, Pool::Off, Record::OutputOnly);
    drop(x_values);
    let weight = weight.primitive.clone();
    // The ReLU output is recomputed in the backward pass, so nothing is recorded whether the
    // node is tracked or not.
    let output = conv_node::record::<E>(ConvFusion::ReluConv, &inputs, options.clone(), |_| {
        let y = Flex::conv2d(flex_tensor(relu_out, d), weight, None, options);
        (y, affine.into_saved(d, Decisions::RecomputedRelu, Vec::new()))
    });
    (output, moments)
}

/// The backward pass: the ReLU output again (the forward's kernel on the same values), the
/// convolution's weight and input gradients on it, then the tail's backward.
pub(super) fn backward<E: Stored>(inputs: ConvBackward, grads: &mut Gradients) {
    let ConvBackward { grad, x, weight, saved, options, wanted } = inputs;
    let [x_id, weight_id, gamma_id, beta_id] = wanted;
    let (relu_out, _) = kernels::forward(
        &values::<E>(&x),
        saved.dims,
        &saved.scale,
        &saved.shift,
        Pool::Off,
        Record::OutputOnly,
    );
    let relu_out = flex_tensor(relu_out, saved.dims);
    if let Some(id) = weight_id {
        let dw = Flex::conv2d_weight_backward(
            relu_out.clone(),
            weight.clone(),
            grad.clone(),
            options.clone(),
        );
        grads.register::<Flex>(id, dw);
    }
    if x_id.is_none() && gamma_id.is_none() && beta_id.is_none() {
        return;
    }
    let relu_grad = Flex::conv2d_x_backward(relu_out, weight, grad, options);
    let gradients = tail_backward(x, &values::<E>(&relu_grad), &saved);
    register_gradients(grads, [x_id, gamma_id, beta_id], gradients);
}
