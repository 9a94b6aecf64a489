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
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::DType;

use super::batch_norm::{batch_affine, update_running, Moments};
use super::kernels::{self, Decisions, Pool, Record, Saved};
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
    let weight = conv.weight.val();
    let dtype = x.dtype();
    let shape = x.dims();
    let inputs = [
        primitive::<B, 4, AdTensor>(x),
        primitive::<B, 1, AdTensor>(bn.gamma.val()),
        primitive::<B, 1, AdTensor>(bn.beta.val()),
        primitive::<B, 4, AdTensor>(weight),
    ];
    let (y, moments) = with_stored_type!(dtype, E => train::<E>(inputs, bn.epsilon, options));
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// The options of `conv` when the fused nodes compute it on `x` with `bn`: a bias-free
/// convolution with explicit symmetric (or no) padding, `x` and its weight f32, f16 or bf16 of
/// one dtype, `bn`'s gamma f32; `None` otherwise ("same" padding, which may be asymmetric, takes
/// the composed ops).
pub(super) fn conv_options<B: Backend>(
    conv: &Conv2d<B>,
    x: &Tensor<B, 4>,
    bn: &BatchNorm<B>,
) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    let dtype = x.dtype();
    let supported = matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && conv.weight.val().dtype() == dtype
        && bn.gamma.val().dtype() == DType::F32
        && conv.bias.is_none();
    supported.then(|| ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups))
}

/// The forward on batch statistics, recorded as one node with parents `[x, gamma, beta,
/// weight]`. Returns the convolution's output and the batch mean and biased variance.
fn train<E: Stored>(
    inputs: [AdTensor; 4],
    epsilon: f64,
    options: ConvOptions<2>,
) -> (AdTensor, Moments) {
    let [x, gamma, beta, weight] = &inputs;
    let d = dims(&x.primitive);
    let x_values: Cow<'_, [E]> = values::<E>(&x.primitive);
    let (affine, moments) = batch_affine(&x_values, d, gamma, beta, epsilon);
    let (relu_out, _) =
        kernels::forward(&x_values, d, &affine.scale, &affine.shift, Pool::Off, Record::OutputOnly);
    drop(x_values);
    let conv = |input: Vec<E>, options: ConvOptions<2>| {
        Flex::conv2d(flex_tensor(input, d), weight.primitive.clone(), None, options)
    };
    let nodes = inputs.each_ref().map(|input| input.node.clone());
    let prep = ReluConvNode::<E>::default().prepare::<NoCheckpointing>(nodes).compute_bound();
    let output = match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(x);
            let weight_id = prep.checkpoint(weight);
            let saved = affine.into_saved(d, Decisions::RecomputedRelu, Vec::new());
            let y = conv(relu_out, options.clone());
            let state =
                ReluConvState { x: x_id, weight: weight_id, saved: Arc::new(saved), options };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(conv(relu_out, options)),
    };
    (output, moments)
}

/// The node, for maps stored as `E`.
#[derive(Debug)]
struct ReluConvNode<E>(core::marker::PhantomData<E>);

impl<E> Default for ReluConvNode<E> {
    fn default() -> Self {
        Self(core::marker::PhantomData)
    }
}

/// What the backward pass needs: the checkpointed `x` and weight, the batch norm's affine map
/// (the tail's [`Saved`], decisions recomputed from `x`) and the convolution's options.
#[derive(Clone, Debug)]
struct ReluConvState {
    x: NodeId,
    weight: NodeId,
    saved: Arc<Saved>,
    options: ConvOptions<2>,
}

impl<E: Stored> Backward<Flex, 4> for ReluConvNode<E> {
    type State = ReluConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let _span = tracing::trace_span!("batch_norm_relu_conv_backward").entered();
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let [x, gamma, beta, weight] = ops.parents.map(|p| p.map(|node| node.id));
        let ReluConvState { x: x_id, weight: weight_id, saved, options } = ops.state;
        let x_values: FlexTensor = checkpointer.retrieve_node_output(x_id);
        let weight_values: FlexTensor = checkpointer.retrieve_node_output(weight_id);
        // The forward's ReLU output again, from the same kernel on the same values.
        let (relu_out, _) = kernels::forward(
            &values::<E>(&x_values),
            saved.dims,
            &saved.scale,
            &saved.shift,
            Pool::Off,
            Record::OutputOnly,
        );
        let relu_out = flex_tensor(relu_out, saved.dims);
        if let Some(id) = weight {
            let dw = Flex::conv2d_weight_backward(
                relu_out.clone(),
                weight_values.clone(),
                grad.clone(),
                options.clone(),
            );
            grads.register::<Flex>(id, dw);
        }
        if x.is_none() && gamma.is_none() && beta.is_none() {
            return;
        }
        let relu_grad = Flex::conv2d_x_backward(relu_out, weight_values, grad, options);
        let gradients = tail_backward(x_values, &values::<E>(&relu_grad), &saved);
        register_gradients(grads, [x, gamma, beta], gradients, saved.dims);
    }
}
