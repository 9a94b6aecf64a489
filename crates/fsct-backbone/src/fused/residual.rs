//! `relu(batch_norm(x) + residual)` — the end of a ResNet BasicBlock — as one operation on Flex,
//! like the Conv tail in [`super::flex`]: the op keeps `x` and a one-byte ReLU mask instead of
//! the batch-norm intermediates and the sum.

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
use burn::tensor::{bf16, f16, DType};

use super::flex::{
    batch_affine, dims, flex_tensor, primitive, register_gradients, running_affine, tensor,
    update_running, values, AdTensor, Moments, Route, Stored, TailState,
};
use super::kernels::{self, Dims};

/// Runs the fused residual tail when `B` is Flex or `Autodiff<Flex>` (without or with balanced
/// checkpointing) and both maps are float maps of one dtype and shape; hands them back otherwise.
pub(super) fn try_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>)> {
    let dtype = x.dtype();
    let supported = matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && residual.dtype() == dtype
        && residual.dims() == x.dims()
        && bn.gamma.val().dtype() == DType::F32;
    if !supported {
        return Err((x, residual));
    }
    let Some(route) = Route::of::<B>() else { return Err((x, residual)) };
    let shape = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let (y, moments) = match route {
        Route::Inference => return Ok(inference(bn, x, residual)),
        Route::Autodiff => train::<NoCheckpointing>(
            primitive(x),
            primitive(residual),
            primitive(gamma),
            primitive(beta),
            bn.epsilon,
        ),
        Route::AutodiffBalanced => train::<BalancedCheckpointing>(
            primitive(x),
            primitive(residual),
            primitive(gamma),
            primitive(beta),
            bn.epsilon,
        ),
    };
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// Running statistics on `B = Flex`.
fn inference<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let (scale, shift) = running_affine(bn);
    let (x, r): (FlexTensor, FlexTensor) = (primitive(x), primitive(residual));
    fn run<E: Stored>(x: &FlexTensor, r: &FlexTensor, scale: &[f32], shift: &[f32]) -> FlexTensor {
        let d = dims(x);
        let (y, _) =
            kernels::forward_residual(&values::<E>(x), &values::<E>(r), d, scale, shift, false);
        flex_tensor(y, d)
    }
    tensor(match x.dtype() {
        DType::F16 => run::<f16>(&x, &r, &scale, &shift),
        DType::BF16 => run::<bf16>(&x, &r, &scale, &shift),
        _ => run::<f32>(&x, &r, &scale, &shift),
    })
}

fn train<C: CheckpointStrategy>(
    x: AdTensor,
    r: AdTensor,
    gamma: AdTensor,
    beta: AdTensor,
    epsilon: f64,
) -> (AdTensor, Moments) {
    match x.primitive.dtype() {
        DType::F16 => train_typed::<f16, C>(x, r, gamma, beta, epsilon),
        DType::BF16 => train_typed::<bf16, C>(x, r, gamma, beta, epsilon),
        _ => train_typed::<f32, C>(x, r, gamma, beta, epsilon),
    }
}

/// Batch statistics on `Autodiff<Flex, C>`: one node with parents `[x, residual, gamma, beta]`.
fn train_typed<E: Stored, C: CheckpointStrategy>(
    x: AdTensor,
    r: AdTensor,
    gamma: AdTensor,
    beta: AdTensor,
    epsilon: f64,
) -> (AdTensor, Moments) {
    let d = dims(&x.primitive);
    let xs = values::<E>(&x.primitive);
    let rs = values::<E>(&r.primitive);
    let (affine, moments) = batch_affine(&xs, d, &gamma, &beta, epsilon);
    let (scale, shift) = (&affine.scale, &affine.shift);

    let nodes = [x.node.clone(), r.node.clone(), gamma.node.clone(), beta.node.clone()];
    // Memory bound with a retro-forward, as the Conv tail (see `super::flex`).
    let retro = RetroResidual::<E> {
        x: x.node.id,
        residual: r.node.id,
        dims: d,
        scale: scale.as_slice().into(),
        shift: shift.as_slice().into(),
        _element: PhantomData,
    };
    let prep = BatchNormAddRelu::<E>(PhantomData)
        .prepare::<C>(nodes)
        .memory_bound()
        .retro_forward(retro)
        .parents([&x, &r, &gamma, &beta]);
    let output = match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let (y, mask) = kernels::forward_residual(&xs, &rs, d, scale, shift, true);
            let saved = affine.into_saved(d, false, true, mask);
            prep.finish(TailState { x: x_id, saved: Arc::new(saved) }, flex_tensor(y, d))
        }
        OpsKind::UnTracked(prep) => {
            let (y, _) = kernels::forward_residual(&xs, &rs, d, scale, shift, false);
            prep.finish(flex_tensor(y, d))
        }
    };
    (output, moments)
}

/// Recomputes the output from `x` and the residual for a checkpointing strategy that dropped it.
#[derive(Debug)]
struct RetroResidual<E> {
    x: NodeId,
    residual: NodeId,
    dims: Dims,
    scale: Arc<[f32]>,
    shift: Arc<[f32]>,
    _element: PhantomData<E>,
}

impl<E: Stored> RetroForward for RetroResidual<E> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let x: FlexTensor = states.get_state(&self.x);
        let r: FlexTensor = states.get_state(&self.residual);
        let (y, _) = kernels::forward_residual(
            &values::<E>(&x),
            &values::<E>(&r),
            self.dims,
            &self.scale,
            &self.shift,
            false,
        );
        states.save(out_node, flex_tensor(y, self.dims));
    }
}

#[derive(Debug)]
struct BatchNormAddRelu<E>(PhantomData<E>);

impl<E: Stored> Backward<Flex, 4> for BatchNormAddRelu<E> {
    type State = TailState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let _span = tracing::trace_span!("batch_norm_add_relu_backward").entered();
        let [x_parent, r_parent, gamma_parent, beta_parent] = ops.parents;
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let grad = values::<E>(&grad);
        let saved = &ops.state.saved;
        let d = saved.dims;
        if let Some(node) = r_parent {
            grads.register::<Flex>(
                node.id,
                flex_tensor(kernels::residual_gradient(&grad, &saved.codes), d),
            );
        }
        if x_parent.is_none() && gamma_parent.is_none() && beta_parent.is_none() {
            return;
        }
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state.x);
        let gradients = kernels::backward(&values::<E>(&x), &grad, saved);
        let parents = [x_parent, gamma_parent, beta_parent].map(|p| p.map(|node| node.id));
        register_gradients(grads, parents, gradients, d);
    }
}
