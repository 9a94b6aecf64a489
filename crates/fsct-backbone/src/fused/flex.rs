//! The fused block tail on Flex: inference on `Flex`, training on `Autodiff<Flex, _>` as a custom
//! autodiff operation whose backward runs [`kernels::backward`].

use std::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, TensorPrimitive};

use super::kernels::{self, Dims, Saved};
use crate::norm::{float_dtype, update_running_statistics};

/// Flex's tensor under autodiff (the same type for every checkpointing strategy).
type AdTensor = FloatTensor<Autodiff<Flex>>;

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
    // Like the composed batch norm, the tail computes in f32 under mixed precision.
    let x = if dtype == DType::F32 { x } else { x.cast(FloatDType::F32) };
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
    Ok(if dtype == DType::F32 { y } else { y.cast(float_dtype(dtype)) })
}

type TrainFn = fn(AdTensor, AdTensor, AdTensor, f64, bool) -> (AdTensor, Vec<f64>, Vec<f64>);

/// Running statistics: one affine map per channel, then ReLU and pool, on `B = Flex`.
fn inference<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: bool) -> Tensor<B, 4> {
    let values = |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
    let scale = bn.running_var.value().add_scalar(bn.epsilon).sqrt().recip().mul(bn.gamma.val());
    let shift = bn.beta.val().sub(bn.running_mean.value().mul(scale.clone()));
    let (scale, shift) = (values(scale), values(shift));
    let x: FlexTensor = primitive(x);
    let d = dims(&x);
    let x = contiguous_f32(&x);
    let (y, _) = kernels::forward(&x, d, &scale, &shift, pool, false);
    tensor(flex_tensor(y, d.output(pool)))
}

/// Batch statistics on `Autodiff<Flex, C>`: the forward, recorded as one node with parents
/// `[x, gamma, beta]`. Returns the output and the batch mean and biased variance.
fn train<C: CheckpointStrategy>(x: AdTensor, gamma: AdTensor, beta: AdTensor, epsilon: f64, pool: bool) -> (AdTensor, Vec<f64>, Vec<f64>) {
    let d = dims(&x.primitive);
    let xs = contiguous_f32(&x.primitive);
    let (mean, var) = kernels::channel_moments(&xs, d);
    let gamma_v = contiguous_f32(&gamma.primitive).into_owned();
    let beta_v = contiguous_f32(&beta.primitive);
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + epsilon).sqrt()) as f32).collect();
    let scale: Vec<f32> = gamma_v.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta_v[ch] - mean[ch] as f32 * scale[ch]).collect();

    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let output = match BatchNormReluPool.prepare::<C>(nodes).compute_bound().stateful() {
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

#[derive(Debug)]
struct BatchNormReluPool;

#[derive(Clone, Debug)]
struct TailState {
    x: NodeId,
    saved: Arc<Saved>,
}

impl Backward<Flex, 3> for BatchNormReluPool {
    type State = TailState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let _span = tracing::trace_span!("batch_norm_relu_pool_backward").entered();
        let [x_parent, gamma_parent, beta_parent] = ops.parents;
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state.x);
        let saved = &ops.state.saved;
        let (dx, dgamma, dbeta) = kernels::backward(&contiguous_f32(&x), &contiguous_f32(&grad), saved);
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

fn is<A: 'static, B: 'static>() -> bool {
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
fn primitive<B: Backend, const D: usize, P: 'static>(t: Tensor<B, D>) -> P {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => reinterpret(p),
        TensorPrimitive::QFloat(q) => reinterpret(B::dequantize(q, FloatDType::F32)),
    }
}

fn tensor<B: Backend, const D: usize, P: 'static>(p: P) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(reinterpret(p)))
}

fn dims(x: &FlexTensor) -> Dims {
    let shape = x.layout().shape();
    Dims { n: shape[0], c: shape[1], h: shape[2], w: shape[3] }
}

/// The values of `x` as a contiguous f32 slice, borrowed when they already are.
fn contiguous_f32(x: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match x.as_slice::<f32>() {
        Some(values) => std::borrow::Cow::Borrowed(values),
        _ => std::borrow::Cow::Owned(x.clone().into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default()),
    }
}

fn flex_tensor(values: Vec<f32>, d: Dims) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, [d.n, d.c, d.h, d.w]))
}
