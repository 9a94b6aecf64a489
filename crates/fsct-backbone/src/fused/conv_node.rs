//! The skeleton shared by the two fused nodes that hold a convolution ([`super::relu_conv`] and
//! [`super::conv_tail`]): which convolutions they compute, how they are recorded (checkpointing
//! the convolution's input and weight, keeping the batch norm's [`Saved`]), and the opening of
//! their backward pass. Each op fills in its forward and its backward; this file holds the rest
//! once, the way [`super::op`] does for the tails without a convolution.

use std::marker::PhantomData;
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
use burn::tensor::ops::ConvOptions;
use burn::tensor::DType;

use super::kernels::{Record, Saved};
use super::route::AdTensor;
use super::storage::Stored;

/// The options of `conv` when a fused node computes it on `x` with `bn`: a bias-free
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

/// Which fused op a [`ConvNode`] is.
#[derive(Clone, Copy, Debug)]
pub(super) enum ConvFusion {
    /// `conv(relu(bn(x)))`: [`super::relu_conv`].
    ReluConv,
    /// `pool?(relu(bn(conv(x))))`: [`super::conv_tail`].
    ConvTail,
}

/// The parents of a [`ConvNode`], in this order: the convolution's (or the tail's) input map,
/// the convolution's weight, the batch norm's gamma and beta.
pub(super) type ConvInputs = [AdTensor; 4];

/// What the backward pass of either op works on.
pub(super) struct ConvBackward {
    /// The gradient of the node's output.
    pub grad: FlexTensor,
    /// The checkpointed input map and convolution weight.
    pub x: FlexTensor,
    pub weight: FlexTensor,
    /// The batch norm's affine map and the tail's decisions.
    pub saved: Arc<Saved>,
    pub options: ConvOptions<2>,
    /// The node ids of the parents that want a gradient (`x`, weight, gamma, beta).
    pub wanted: [Option<NodeId>; 4],
}

/// Records `forward`'s output as one node of `fusion` with parents `inputs`: when any parent is
/// tracked the node checkpoints the input map and the weight and keeps the [`Saved`] that
/// `forward` returns for [`Record::Decisions`]; untracked, `forward` runs for
/// [`Record::OutputOnly`] and its [`Saved`] is dropped.
pub(super) fn record<E: Stored>(
    fusion: ConvFusion,
    inputs: &ConvInputs,
    options: ConvOptions<2>,
    forward: impl FnOnce(Record) -> (FlexTensor, Saved),
) -> AdTensor {
    let nodes = inputs.each_ref().map(|input| input.node.clone());
    let node = ConvNode::<E> { fusion, stored: PhantomData };
    match node.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x = prep.checkpoint(&inputs[0]);
            let weight = prep.checkpoint(&inputs[1]);
            let (y, saved) = forward(Record::Decisions);
            prep.finish(ConvState { x, weight, saved: Arc::new(saved), options }, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(Record::OutputOnly).0),
    }
}

/// The node, for maps stored as `E`.
#[derive(Debug)]
struct ConvNode<E> {
    fusion: ConvFusion,
    stored: PhantomData<E>,
}

/// What the node keeps: the checkpointed input map and weight, the tail's [`Saved`] and the
/// convolution's options.
#[derive(Clone, Debug)]
struct ConvState {
    x: NodeId,
    weight: NodeId,
    saved: Arc<Saved>,
    options: ConvOptions<2>,
}

impl<E: Stored> Backward<Flex, 4> for ConvNode<E> {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let ConvState { x, weight, saved, options } = ops.state;
        let inputs = ConvBackward {
            grad: grads.consume::<Flex>(&ops.node),
            x: checkpointer.retrieve_node_output(x),
            weight: checkpointer.retrieve_node_output(weight),
            saved,
            options,
            wanted: ops.parents.map(|p| p.map(|node| node.id)),
        };
        match self.fusion {
            ConvFusion::ReluConv => {
                let _span = tracing::trace_span!("batch_norm_relu_conv_backward").entered();
                super::relu_conv::backward::<E>(inputs, grads);
            }
            ConvFusion::ConvTail => {
                let _span = tracing::trace_span!("conv_batch_norm_relu_pool_backward").entered();
                super::conv_tail::backward::<E>(inputs, grads);
            }
        }
    }
}
