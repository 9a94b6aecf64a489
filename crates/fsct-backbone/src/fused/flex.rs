//! The fused block tail on Flex: inference on `Flex`, training on `Autodiff<Flex, _>` as a custom
//! autodiff operation whose backward runs [`kernels::backward`].

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, TensorPrimitive, bf16, f16};

use super::kernels::{self, Dims, Saved};
use crate::norm::update_running_statistics;

/// Flex's tensor under autodiff (the same type for every checkpointing strategy).
pub(super) type AdTensor = FloatTensor<Autodiff<Flex>>;

/// Runs the fused tail when `B` is Flex or `Autodiff<Flex>` (without or with balanced
/// checkpointing) and the map is a float map; hands `x` back otherwise.
pub(super) fn try_forward<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: bool) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || bn.gamma.val().dtype() != DType::F32 {
        return Err(x);
    }
    let train = if is::<B, Flex>() {
        None
    } else if is::<B, Autodiff<Flex, NoCheckpointing>>() {
        Some(train::<NoCheckpointing> as TrainFn)
    } else if is::<B, Autodiff<Flex, BalancedCheckpointing>>() {
        Some(train::<BalancedCheckpointing> as TrainFn)
    } else {
        return Err(x);
    };
    // Under mixed precision the map stays in its half dtype: the kernels read and write half
    // values and compute in f32 (as the composed batch norm does), the op keeps the half map for
    // the backward pass, and output and input gradient come back in the map's dtype.
    let y = match train {
        None => inference(bn, x, pool),
        Some(train) => {
            let [n, c, h, w] = x.dims();
            let (y, mean, var) = train(primitive(x), primitive(bn.gamma.val()), primitive(bn.beta.val()), bn.epsilon, pool);
            let device = bn.gamma.device();
            let as_tensor = |v: Vec<f64>| Tensor::<B, 1>::from_data(TensorData::new(v, [c]).convert::<f32>(), &device);
            update_running_statistics(bn, as_tensor(mean), as_tensor(var), n * h * w);
            tensor(y)
        }
    };
    Ok(y)
}

pub(super) type TrainFn = fn(AdTensor, AdTensor, AdTensor, f64, bool) -> (AdTensor, Vec<f64>, Vec<f64>);

/// Running statistics: one affine map per channel, then ReLU and pool, on `B = Flex`.
fn inference<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: bool) -> Tensor<B, 4> {
    let per_channel = |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
    let scale = bn.running_var.value().add_scalar(bn.epsilon).sqrt().recip().mul(bn.gamma.val());
    let shift = bn.beta.val().sub(bn.running_mean.value().mul(scale.clone()));
    let (scale, shift) = (per_channel(scale), per_channel(shift));
    let x: FlexTensor = primitive(x);
    fn run<E: Stored>(x: &FlexTensor, scale: &[f32], shift: &[f32], pool: bool) -> FlexTensor {
        let d = dims(x);
        let (y, _) = kernels::forward(&values::<E>(x), d, scale, shift, pool, false);
        flex_tensor(y, d.output(pool))
    }
    let y = match x.dtype() {
        DType::F16 => run::<f16>(&x, &scale, &shift, pool),
        DType::BF16 => run::<bf16>(&x, &scale, &shift, pool),
        _ => run::<f32>(&x, &scale, &shift, pool),
    };
    tensor(y)
}

/// Batch statistics on `Autodiff<Flex, C>`: the forward, recorded as one node with parents
/// `[x, gamma, beta]`. Returns the output and the batch mean and biased variance.
fn train<C: CheckpointStrategy>(x: AdTensor, gamma: AdTensor, beta: AdTensor, epsilon: f64, pool: bool) -> (AdTensor, Vec<f64>, Vec<f64>) {
    match x.primitive.dtype() {
        DType::F16 => train_typed::<f16, C>(x, gamma, beta, epsilon, pool),
        DType::BF16 => train_typed::<bf16, C>(x, gamma, beta, epsilon, pool),
        _ => train_typed::<f32, C>(x, gamma, beta, epsilon, pool),
    }
}

fn train_typed<E: Stored, C: CheckpointStrategy>(x: AdTensor, gamma: AdTensor, beta: AdTensor, epsilon: f64, pool: bool) -> (AdTensor, Vec<f64>, Vec<f64>) {
    let d = dims(&x.primitive);
    let xs = values::<E>(&x.primitive);
    let BatchAffine { mean, var, inv_std, gamma: gamma_v, scale, shift } = batch_affine(&xs, d, &gamma, &beta, epsilon);

    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    // Memory bound, with a retro-forward from `x`: under balanced checkpointing Burn may drop
    // the output and recompute it in the backward pass (one affine + ReLU + pool pass), as it
    // would the composed element-wise ops; without checkpointing nothing changes.
    let retro = RetroTail::<E> { x: x.node.id, dims: d, pool, scale: scale.clone().into(), shift: shift.clone().into(), _element: PhantomData };
    let prep = BatchNormReluPool::<E>::default().prepare::<C>(nodes).memory_bound().retro_forward(retro).parents([&x, &gamma, &beta]);
    let output = match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let (y, codes) = kernels::forward(&xs, d, &scale, &shift, pool, true);
            let saved = Saved {
                dims: d,
                pool,
                mean: mean.iter().map(|&m| m as f32).collect(),
                inv_std,
                gamma: gamma_v,
                scale,
                shift,
                codes,
                residual: false,
            };
            prep.finish(TailState { x: x_id, saved: Arc::new(saved) }, flex_tensor(y, d.output(pool)))
        }
        OpsKind::UnTracked(prep) => {
            let (y, _) = kernels::forward(&xs, d, &scale, &shift, pool, false);
            prep.finish(flex_tensor(y, d.output(pool)))
        }
    };
    (output, mean, var)
}

/// The batch statistics of a map and the per-channel affine map of its batch norm.
pub(super) struct BatchAffine {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    /// `gamma · inv_std`
    pub scale: Vec<f32>,
    /// `beta − mean · scale`
    pub shift: Vec<f32>,
}

pub(super) fn batch_affine<E: Stored>(xs: &[E], d: Dims, gamma: &AdTensor, beta: &AdTensor, epsilon: f64) -> BatchAffine {
    let (mean, var) = kernels::channel_moments(xs, d);
    let gamma = values::<f32>(&gamma.primitive).into_owned();
    let beta = values::<f32>(&beta.primitive);
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + epsilon).sqrt()) as f32).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] as f32 * scale[ch]).collect();
    BatchAffine { mean, var, inv_std, gamma, scale, shift }
}

/// Recomputes the tail's output from its input for a checkpointing strategy that dropped it.
#[derive(Debug)]
struct RetroTail<E> {
    x: NodeId,
    dims: Dims,
    pool: bool,
    scale: Arc<[f32]>,
    shift: Arc<[f32]>,
    _element: PhantomData<E>,
}

impl<E: Stored> RetroForward for RetroTail<E> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let x: FlexTensor = states.get_state(&self.x);
        let (y, _) = kernels::forward(&values::<E>(&x), self.dims, &self.scale, &self.shift, self.pool, false);
        states.save(out_node, flex_tensor(y, self.dims.output(self.pool)));
    }
}

/// The autodiff node of the tail, for maps stored as `E`.
#[derive(Debug)]
struct BatchNormReluPool<E>(PhantomData<E>);

impl<E> Default for BatchNormReluPool<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

#[derive(Clone, Debug)]
struct TailState {
    x: NodeId,
    saved: Arc<Saved>,
}

impl<E: Stored> Backward<Flex, 3> for BatchNormReluPool<E> {
    type State = TailState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let _span = tracing::trace_span!("batch_norm_relu_pool_backward").entered();
        let [x_parent, gamma_parent, beta_parent] = ops.parents;
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state.x);
        let saved = &ops.state.saved;
        let (dx, dgamma, dbeta) = kernels::backward(&values::<E>(&x), &values::<E>(&grad), saved);
        let c = saved.dims.c;
        if let Some(node) = x_parent {
            grads.register::<Flex>(node.id, flex_tensor(dx, saved.dims));
        }
        if let Some(node) = gamma_parent {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dgamma, [c])));
        }
        if let Some(node) = beta_parent {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dbeta, [c])));
        }
    }
}

pub(super) fn is<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

/// Moves `value` into type `To`, which the caller has checked to be `From` itself.
fn reinterpret<From: 'static, To: 'static>(value: From) -> To {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<To>>().and_then(Option::take) {
        Some(value) => value,
        None => unreachable!("reinterpret is only called after a TypeId check"),
    }
}

/// The backend's float primitive of `t`, as the concrete type `P` (checked by the caller).
pub(super) fn primitive<B: Backend, const D: usize, P: 'static>(t: Tensor<B, D>) -> P {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => reinterpret(p),
        TensorPrimitive::QFloat(q) => reinterpret(B::dequantize(q, FloatDType::F32)),
    }
}

pub(super) fn tensor<B: Backend, const D: usize, P: 'static>(p: P) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(reinterpret(p)))
}

pub(super) fn dims(x: &FlexTensor) -> Dims {
    let shape = x.layout().shape();
    Dims { n: shape[0], c: shape[1], h: shape[2], w: shape[3] }
}

/// An element type a Flex map is stored in: f32, f16 or bf16.
pub(super) trait Stored: kernels::Element + burn::tensor::Element + bytemuck::Pod + core::fmt::Debug {}
impl Stored for f32 {}
impl Stored for f16 {}
impl Stored for bf16 {}

/// The values of `x` as a contiguous `E` slice: borrowed when they already are, else copied (and
/// converted, should a gradient arrive in another dtype).
pub(super) fn values<E: Stored>(x: &FlexTensor) -> Cow<'_, [E]> {
    match x.as_slice::<E>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(x.clone().into_data().convert_dtype(E::dtype()).into_vec::<E>().unwrap_or_default()),
    }
}

/// A contiguous `[n, c, h, w]` Flex tensor holding `values`.
pub(super) fn flex_tensor<E: Stored>(values: Vec<E>, d: Dims) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, [d.n, d.c, d.h, d.w]))
}
