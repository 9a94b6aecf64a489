//! The fused block tail on Flex: inference on `Flex`, training on `Autodiff<Flex, _>` as a custom
//! autodiff operation whose backward runs [`kernels::backward`].

use std::any::{Any, TypeId};
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
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{bf16, f16, DType, FloatDType, TensorPrimitive};

use super::kernels::{self, Dims, Saved};
use crate::norm::update_running_statistics;

/// Flex's tensor under autodiff (the same type for every checkpointing strategy).
pub(super) type AdTensor = FloatTensor<Autodiff<Flex>>;

/// Runs the fused tail when `B` is Flex or `Autodiff<Flex>` (without or with balanced
/// checkpointing) and the map is a float map; hands `x` back otherwise.
pub(super) fn try_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    pool: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        || bn.gamma.val().dtype() != DType::F32
    {
        return Err(x);
    }
    let Some(route) = Route::of::<B>() else { return Err(x) };
    // Under mixed precision the map stays in its half dtype: the kernels read and write half
    // values and compute in f32 (as the composed batch norm does), the op keeps the half map for
    // the backward pass, and output and input gradient come back in the map's dtype.
    let shape = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let (y, moments) = match route {
        Route::Inference => return Ok(inference(bn, x, pool)),
        Route::Autodiff => train::<NoCheckpointing>(
            primitive(x),
            primitive(gamma),
            primitive(beta),
            bn.epsilon,
            pool,
        ),
        Route::AutodiffBalanced => train::<BalancedCheckpointing>(
            primitive(x),
            primitive(gamma),
            primitive(beta),
            bn.epsilon,
            pool,
        ),
    };
    update_running(bn, moments, shape);
    Ok(tensor(y))
}

/// The Flex backends the fused tails run on.
pub(super) enum Route {
    /// `Flex`: running statistics.
    Inference,
    /// `Autodiff<Flex>`: batch statistics, a custom autodiff node.
    Autodiff,
    /// `Autodiff<Flex, BalancedCheckpointing>`: the same under gradient checkpointing.
    AutodiffBalanced,
}

impl Route {
    /// The route for backend `B`, or `None` when `B` is not one of the Flex backends above.
    pub(super) fn of<B: Backend>() -> Option<Self> {
        if is::<B, Flex>() {
            Some(Self::Inference)
        } else if is::<B, Autodiff<Flex, NoCheckpointing>>() {
            Some(Self::Autodiff)
        } else if is::<B, Autodiff<Flex, BalancedCheckpointing>>() {
            Some(Self::AutodiffBalanced)
        } else {
            None
        }
    }
}

/// A batch's per-channel mean and biased variance.
pub(super) type Moments = (Vec<f64>, Vec<f64>);

/// Moves `bn`'s running statistics towards a batch's `moments` over a `[n, c, h, w]` map.
pub(super) fn update_running<B: Backend>(
    bn: &BatchNorm<B>,
    (mean, var): Moments,
    [n, c, h, w]: [usize; 4],
) {
    let device = bn.gamma.device();
    let as_tensor =
        |v: Vec<f64>| Tensor::<B, 1>::from_data(TensorData::new(v, [c]).convert::<f32>(), &device);
    update_running_statistics(bn, as_tensor(mean), as_tensor(var), n * h * w);
}

/// The per-channel `(scale, shift)` of `bn` on its running statistics (evaluation).
pub(super) fn running_affine<B: Backend>(bn: &BatchNorm<B>) -> (Vec<f32>, Vec<f32>) {
    let per_channel =
        |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
    let scale = bn.running_var.value().add_scalar(bn.epsilon).sqrt().recip().mul(bn.gamma.val());
    let shift = bn.beta.val().sub(bn.running_mean.value().mul(scale.clone()));
    (per_channel(scale), per_channel(shift))
}

/// Running statistics: one affine map per channel, then ReLU and pool, on `B = Flex`.
fn inference<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: bool) -> Tensor<B, 4> {
    let (scale, shift) = running_affine(bn);
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
fn train<C: CheckpointStrategy>(
    x: AdTensor,
    gamma: AdTensor,
    beta: AdTensor,
    epsilon: f64,
    pool: bool,
) -> (AdTensor, Moments) {
    match x.primitive.dtype() {
        DType::F16 => train_typed::<f16, C>(x, gamma, beta, epsilon, pool),
        DType::BF16 => train_typed::<bf16, C>(x, gamma, beta, epsilon, pool),
        _ => train_typed::<f32, C>(x, gamma, beta, epsilon, pool),
    }
}

fn train_typed<E: Stored, C: CheckpointStrategy>(
    x: AdTensor,
    gamma: AdTensor,
    beta: AdTensor,
    epsilon: f64,
    pool: bool,
) -> (AdTensor, Moments) {
    let d = dims(&x.primitive);
    let xs = values::<E>(&x.primitive);
    let (affine, moments) = batch_affine(&xs, d, &gamma, &beta, epsilon);
    let (scale, shift) = (&affine.scale, &affine.shift);

    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    // Memory bound, with a retro-forward from `x`: under balanced checkpointing Burn may drop
    // the output and recompute it in the backward pass (one affine + ReLU + pool pass), as it
    // would the composed element-wise ops; without checkpointing nothing changes.
    let retro = RetroTail::<E> {
        x: x.node.id,
        dims: d,
        pool,
        scale: scale.as_slice().into(),
        shift: shift.as_slice().into(),
        _element: PhantomData,
    };
    let prep = BatchNormReluPool::<E>::default()
        .prepare::<C>(nodes)
        .memory_bound()
        .retro_forward(retro)
        .parents([&x, &gamma, &beta]);
    let output = match prep.stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let (y, codes) = kernels::forward(&xs, d, scale, shift, pool, true);
            let saved = affine.into_saved(d, pool, false, codes);
            prep.finish(
                TailState { x: x_id, saved: Arc::new(saved) },
                flex_tensor(y, d.output(pool)),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (y, _) = kernels::forward(&xs, d, scale, shift, pool, false);
            prep.finish(flex_tensor(y, d.output(pool)))
        }
    };
    (output, moments)
}

/// A batch norm's per-channel affine map on batch statistics, with what its backward needs.
pub(super) struct BatchAffine {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    /// `gamma · inv_std`
    pub scale: Vec<f32>,
    /// `beta − mean · scale`
    pub shift: Vec<f32>,
}

impl BatchAffine {
    /// The backward state of a tail over `dims`, with the forward's window codes or ReLU mask.
    pub(super) fn into_saved(
        self,
        dims: Dims,
        pool: bool,
        residual: bool,
        codes: Vec<u8>,
    ) -> Saved {
        let BatchAffine { mean, inv_std, gamma, scale, shift } = self;
        Saved { dims, pool, mean, inv_std, gamma, scale, shift, codes, residual }
    }
}

/// The batch statistics of a map (returned for the running statistics) and its batch norm's
/// affine map.
pub(super) fn batch_affine<E: Stored>(
    xs: &[E],
    d: Dims,
    gamma: &AdTensor,
    beta: &AdTensor,
    epsilon: f64,
) -> (BatchAffine, Moments) {
    let (mean, var) = kernels::channel_moments(xs, d);
    let gamma = values::<f32>(&gamma.primitive).into_owned();
    let beta = values::<f32>(&beta.primitive);
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + epsilon).sqrt()) as f32).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] as f32 * scale[ch]).collect();
    let affine = BatchAffine {
        mean: mean.iter().map(|&m| m as f32).collect(),
        inv_std,
        gamma,
        scale,
        shift,
    };
    (affine, (mean, var))
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
        let (y, _) = kernels::forward(
            &values::<E>(&x),
            self.dims,
            &self.scale,
            &self.shift,
            self.pool,
            false,
        );
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

/// The backward state of a fused tail: its checkpointed input and what the forward saved.
#[derive(Clone, Debug)]
pub(super) struct TailState {
    pub x: NodeId,
    pub saved: Arc<Saved>,
}

/// Registers the gradients of a tail's input map and batch-norm parameters for the parents
/// (their node ids, `[x, gamma, beta]`) that want them.
pub(super) fn register_gradients(
    grads: &mut Gradients,
    parents: [Option<NodeId>; 3],
    (dx, dgamma, dbeta): (Vec<impl Stored>, Vec<f32>, Vec<f32>),
    dims: Dims,
) {
    let [x, gamma, beta] = parents;
    if let Some(id) = x {
        grads.register::<Flex>(id, flex_tensor(dx, dims));
    }
    for (id, values) in [(gamma, dgamma), (beta, dbeta)] {
        if let Some(id) = id {
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(values, [dims.c])));
        }
    }
}

impl<E: Stored> Backward<Flex, 3> for BatchNormReluPool<E> {
    type State = TailState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let _span = tracing::trace_span!("batch_norm_relu_pool_backward").entered();
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        let x: FlexTensor = checkpointer.retrieve_node_output(ops.state.x);
        let saved = &ops.state.saved;
        let gradients = kernels::backward(&values::<E>(&x), &values::<E>(&grad), saved);
        register_gradients(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            gradients,
            saved.dims,
        );
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
pub(super) trait Stored:
    kernels::Element + burn::tensor::Element + bytemuck::Pod + core::fmt::Debug
{
}
impl Stored for f32 {}
impl Stored for f16 {}
impl Stored for bf16 {}

/// The values of `x` as a contiguous `E` slice: borrowed when they already are, else copied (and
/// converted, should a gradient arrive in another dtype).
pub(super) fn values<E: Stored>(x: &FlexTensor) -> Cow<'_, [E]> {
    match x.as_slice::<E>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(
            x.clone().into_data().convert_dtype(E::dtype()).into_vec::<E>().unwrap_or_default(),
        ),
    }
}

/// A contiguous `[n, c, h, w]` Flex tensor holding `values`.
pub(super) fn flex_tensor<E: Stored>(values: Vec<E>, d: Dims) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, [d.n, d.c, d.h, d.w]))
}
