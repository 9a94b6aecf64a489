//! The skeleton of a fused tail on Flex, which each op ([`super::relu_pool`],
//! [`super::residual`]) fills in through [`FusedTail`] — after Burn's custom-kernel example
//! (`examples/custom-cubecl-kernel`, whose `backward.rs` records one autodiff node per op).
//!
//! An op reads `M` maps (`x` first) and its batch norm's gamma and beta: its autodiff node has
//! `N = M + 2` parents, in that order. The skeleton does the rest, the same for every op:
//!
//! - [`try_forward`]: checks the maps and the backend ([`Route`]), or hands the maps back;
//! - inference on `Flex`: the running-statistics affine map and the op's kernel;
//! - training on `Autodiff<Flex, C>`: batch statistics, one node that keeps only `x` and the
//!   kernel's recorded decisions ([`TailState`]), a retro-forward for checkpointing strategies
//!   that drop the output, and the running-statistics update;
//! - the backward pass: the gradients of `x`, gamma and beta from [`kernels::backward`], and the
//!   op's own gradients for its other maps.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::DType;

use super::batch_norm::{batch_affine, running_affine, update_running, Moments};
use super::kernels::{self, Decisions, Dims, Record, Saved};
use super::route::{primitive, tensor, AdTensor, Fallback, Route};
use super::storage::{dims, flex_tensor, values, with_stored_type, Stored};

/// What a fused tail with `N` autodiff parents (its maps, then gamma and beta) fills in.
pub(super) trait FusedTail<const N: usize>:
    Copy + core::fmt::Debug + Send + Sync + 'static
{
    /// The output's sizes for maps of sizes `d`.
    fn output_dims(self, d: Dims) -> Dims;

    /// Where the backward pass finds the decisions the forward kernel records.
    fn decisions(self) -> Decisions;

    /// The forward kernel over the maps (`x` first, `N - 2` of them, all of sizes `d`) and the
    /// batch norm's per-channel affine map: the output, and what `record` asks for.
    fn forward<E: Stored>(
        self,
        maps: &[Cow<'_, [E]>],
        d: Dims,
        scale: &[f32],
        shift: &[f32],
        record: Record,
    ) -> (Vec<E>, Vec<u8>);

    /// The trace span of the backward pass.
    fn backward_span(self) -> tracing::Span;

    /// Registers the gradients of the maps after `x` (their node ids `parents`, where wanted)
    /// from the output gradient `grad`; the skeleton registers those of `x`, gamma and beta. An
    /// op whose only map is `x` keeps this default, which does nothing.
    fn register_map_gradients<E: Stored>(
        self,
        _grad: &[E],
        _saved: &Saved,
        _parents: &[Option<NodeId>],
        _grads: &mut Gradients,
    ) {
    }
}

/// Runs `op` on `maps` with `bn` when `B` is Flex or `Autodiff<Flex>` (without or with balanced
/// checkpointing) and the maps are float maps of one dtype and shape; hands them back otherwise.
///
/// # Shapes
/// - `maps`: `[n, c, h, w]` each
/// - output: `op.output_dims` of that
pub(super) fn try_forward<B, T, const M: usize, const N: usize>(
    op: T,
    bn: &BatchNorm<B>,
    maps: [Tensor<B, 4>; M],
) -> Result<Tensor<B, 4>, [Tensor<B, 4>; M]>
where
    B: Backend,
    T: FusedTail<N>,
{
    const { assert!(N == M + 2, "a fused tail's parents are its maps, gamma and beta") };
    let (dtype, shape) = (maps[0].dtype(), maps[0].dims());
    let supported = matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && maps.iter().all(|map| map.dtype() == dtype && map.dims() == shape)
        && bn.gamma.val().dtype() == DType::F32;
    if !supported {
        Fallback::Maps.note::<B>();
        return Err(maps);
    }
    let Some(route) = Route::of::<B>() else {
        Fallback::Backend.note::<B>();
        return Err(maps);
    };
    let (y, moments) = match route {
        Route::Inference => {
            return Ok(tensor(inference::<B, T, M, N>(op, bn, maps.map(primitive))))
        }
        Route::Autodiff => {
            train::<T, NoCheckpointing, N>(op, parents(bn, maps), bn.epsilon, ReluMask::FromOutput)
        }
        Route::AutodiffBalanced => train::<T, BalancedCheckpointing, N>(
            op,
            parents(bn, maps),
            bn.epsilon,
            ReluMask::Recorded,
        ),
    };
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// The node's parents on `Autodiff<Flex>`: the maps, then gamma and beta.
fn parents<B: Backend, const M: usize, const N: usize>(
    bn: &BatchNorm<B>,
    maps: [Tensor<B, 4>; M],
) -> [AdTensor; N] {
    let params = [bn.gamma.val(), bn.beta.val()].map(primitive::<B, 1, AdTensor>);
    let mut inputs = maps.map(primitive::<B, 4, AdTensor>).into_iter().chain(params);
    std::array::from_fn(|_| inputs.next().expect("N == M + 2"))
}

/// Running statistics: the op's kernel on the per-channel affine map, on `B = Flex`.
fn inference<B: Backend, T: FusedTail<N>, const M: usize, const N: usize>(
    op: T,
    bn: &BatchNorm<B>,
    maps: [FlexTensor; M],
) -> FlexTensor {
    let (scale, shift) = running_affine(bn);
    let d = dims(&maps[0]);
    with_stored_type!(maps[0].dtype(), E => {
        let maps: Vec<Cow<'_, [E]>> = maps.iter().map(values::<E>).collect();
        let (y, _) = op.forward(&maps, d, &scale, &shift, Record::OutputOnly);
        flex_tensor(y, op.output_dims(d))
    })
}

/// Batch statistics on `Autodiff<Flex, C>`: the forward, recorded as one node with `inputs` as
/// its parents. Returns the output and the batch mean and biased variance.
fn train<T: FusedTail<N>, C: CheckpointStrategy, const N: usize>(
    op: T,
    inputs: [AdTensor; N],
    epsilon: f64,
    mask: ReluMask,
) -> (AdTensor, Moments) {
    with_stored_type!(inputs[0].primitive.dtype(), E => {
        train_typed::<T, E, C, N>(op, inputs, epsilon, mask)
    })
}

/// Where the backward pass of a [`Decisions::ReluMask`] tail (the residual one) finds its ReLU
/// mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReluMask {
    /// Recorded by the forward kernel, a byte per element: under balanced checkpointing, which
    /// may drop the output.
    Recorded,
    /// Read off the output, which the node keeps: without checkpointing the next block's
    /// convolution keeps that output until this node's backward pass anyway, so this costs
    /// nothing where the recorded mask cost a byte per element (75 MiB on a ResNet18 training
    /// step at 224 px, 137 MiB on a ResNet34).
    FromOutput,
}

fn train_typed<T: FusedTail<N>, E: Stored, C: CheckpointStrategy, const N: usize>(
    op: T,
    inputs: [AdTensor; N],
    epsilon: f64,
    mask: ReluMask,
) -> (AdTensor, Moments) {
    let (x, gamma, beta) = (&inputs[0], &inputs[N - 2], &inputs[N - 1]);
    let d = dims(&x.primitive);
    let maps: Vec<Cow<'_, [E]>> =
        inputs[..N - 2].iter().map(|map| values::<E>(&map.primitive)).collect();
    let (affine, moments) = batch_affine(&maps[0], d, gamma, beta, epsilon);
    let (scale, shift) = (&affine.scale, &affine.shift);

    let nodes = inputs.each_ref().map(|input| input.node.clone());
    // Memory bound, with a retro-forward from the maps: under balanced checkpointing Burn may
    // drop the output and recompute it in the backward pass (one element-wise pass), as it would
    // the composed element-wise ops; without checkpointing nothing changes.
    let retro = RetroTail::<T, E, N> {
        op,
        maps: inputs[..N - 2].iter().map(|map| map.node.id).collect(),
        dims: d,
        scale: scale.as_slice().into(),
        shift: shift.as_slice().into(),
        _element: PhantomData,
    };
    let prep = TailNode::<T, E> { op, _element: PhantomData }
        .prepare::<C>(nodes)
        .memory_bound()
        .retro_forward(retro)
        .parents(&inputs);
    let output = match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(x);
            let from_output = op.decisions() == Decisions::ReluMask && mask == ReluMask::FromOutput;
            let record = if from_output { Record::OutputOnly } else { Record::Decisions };
            let (y, codes) = op.forward(&maps, d, scale, shift, record);
            let saved = affine.into_saved(d, op.decisions(), codes);
            let y = flex_tensor(y, op.output_dims(d));
            let output = from_output.then(|| y.clone());
            prep.finish(TailState { x: x_id, saved: Arc::new(saved), output }, y)
        }
        OpsKind::UnTracked(prep) => {
            let (y, _) = op.forward(&maps, d, scale, shift, Record::OutputOnly);
            prep.finish(flex_tensor(y, op.output_dims(d)))
        }
    };
    (output, moments)
}

/// Recomputes a tail's output from its maps for a checkpointing strategy that dropped it.
#[derive(Debug)]
struct RetroTail<T, E, const N: usize> {
    op: T,
    maps: Vec<NodeId>,
    dims: Dims,
    scale: Arc<[f32]>,
    shift: Arc<[f32]>,
    _element: PhantomData<E>,
}

impl<T: FusedTail<N>, E: Stored, const N: usize> RetroForward for RetroTail<T, E, N> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let maps: Vec<FlexTensor> = self.maps.iter().map(|id| states.get_state(id)).collect();
        let maps: Vec<Cow<'_, [E]>> = maps.iter().map(values::<E>).collect();
        let (y, _) =
            self.op.forward(&maps, self.dims, &self.scale, &self.shift, Record::OutputOnly);
        states.save(out_node, flex_tensor(y, self.op.output_dims(self.dims)));
    }
}

/// The autodiff node of a tail `T`, for maps stored as `E`.
#[derive(Debug)]
struct TailNode<T, E> {
    op: T,
    _element: PhantomData<E>,
}

/// The backward state of a fused tail: its checkpointed input, what the forward saved and, for
/// a [`ReluMask::FromOutput`] tail, its output.
#[derive(Clone, Debug)]
pub(super) struct TailState {
    pub x: NodeId,
    pub saved: Arc<Saved>,
    pub output: Option<FlexTensor>,
}

impl<T: FusedTail<N>, E: Stored, const N: usize> Backward<Flex, N> for TailNode<T, E> {
    type State = TailState;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let _span = self.op.backward_span().entered();
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let grad = values::<E>(&grad);
        let from_output;
        let saved = match &ops.state.output {
            // The ReLU passed exactly where the output is positive (or NaN).
            Some(output) => {
                let codes = kernels::relu_mask(&values::<E>(output));
                from_output = Saved { codes, ..(*ops.state.saved).clone() };
                &from_output
            }
            None => &*ops.state.saved,
        };
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        self.op.register_map_gradients(&grad, saved, &parents[1..N - 2], grads);
        let [x, gamma, beta] = [parents[0], parents[N - 2], parents[N - 1]];
        if x.is_none() && gamma.is_none() && beta.is_none() {
            return;
        }
        let x_values: FlexTensor = checkpointer.retrieve_node_output(ops.state.x);
        let gradients = tail_backward(x_values, &grad, saved);
        register_gradients(grads, [x, gamma, beta], gradients);
    }
}

/// The gradients of a tail's input `x` (its values `x_values`) and its batch norm's gamma and
/// beta, from the gradient `grad` of the tail's output: `(dx, dgamma, dbeta)`.
pub(super) fn tail_backward<E: Stored>(
    mut x_values: FlexTensor,
    grad: &[E],
    saved: &Saved,
) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    // When nothing else holds `x` (the usual case: only the tail's node kept it), its gradient is
    // written over it: one map of `x`'s size less at the peak of the backward pass.
    let offsets = x_values.layout().contiguous_offsets().filter(|_| x_values.dtype() == E::dtype());
    let written = offsets.and_then(|(start, end)| {
        let x_mut = &mut x_values.try_storage_mut::<E>()?[start..end];
        Some(kernels::backward_in_place(x_mut, grad, saved))
    });
    match written {
        Some((dgamma, dbeta)) => (x_values, dgamma, dbeta),
        None => {
            let (dx, dgamma, dbeta) = kernels::backward(&values::<E>(&x_values), grad, saved);
            (flex_tensor(dx, saved.dims), dgamma, dbeta)
        }
    }
}

/// Registers the gradients of a tail's input map and batch-norm parameters for the parents
/// (their node ids, `[x, gamma, beta]`) that want them.
pub(super) fn register_gradients(
    grads: &mut Gradients,
    parents: [Option<NodeId>; 3],
    (dx, dgamma, dbeta): (FlexTensor, Vec<f32>, Vec<f32>),
) {
    let [x, gamma, beta] = parents;
    if let Some(id) = x {
        grads.register::<Flex>(id, dx);
    }
    register_affine_gradients(grads, [gamma, beta], [dgamma, dbeta]);
}

/// Registers the gradients of a batch norm's gamma and beta (`[c]` each) for the parents (their
/// node ids, `[gamma, beta]`) that want them.
pub(super) fn register_affine_gradients(
    grads: &mut Gradients,
    parents: [Option<NodeId>; 2],
    gradients: [Vec<f32>; 2],
) {
    for (id, values) in parents.into_iter().zip(gradients) {
        if let Some(id) = id {
            let c = values.len();
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(values, [c])));
        }
    }
}
