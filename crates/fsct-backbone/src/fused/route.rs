//! Routing to Flex: which backends the fused tails run on, how a generic `Tensor<B, D>` becomes
//! Flex's concrete tensor and back once `B` is known to be a Flex backend, and the one debug
//! message per reason when a tail falls back to the composed ops.

use std::any::{Any, TypeId};
use std::sync::Once;

use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, TensorPrimitive};

/// Flex's tensor under autodiff (the same type for every checkpointing strategy).
pub(super) type AdTensor = FloatTensor<Autodiff<Flex>>;

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
    ///
    /// Compares `B` with the concrete Flex types at run time, so the backbone code stays generic
    /// over `B: Backend`.
    pub(super) fn of<B: Backend>() -> Option<Self> {
        if COMPOSED_ONLY.with(std::cell::Cell::get) {
            return None;
        }
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

thread_local! {
    /// Set (only through [`with_block_ops`]) to run the composed ops on Flex too, the path of
    /// every other backend: by the tests, and by whoever measures on the CPU what a GPU keeps.
    static COMPOSED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Which implementation a backbone's block ops (batch norm → ReLU → pool tails, the residual
/// tail, and the nodes that fuse them with a convolution) take on Flex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockOps {
    /// Flex's fused nodes, which keep less for the backward pass (the default).
    #[default]
    Fused,
    /// Burn's composed ops, as on every other backend (CUDA, Vulkan): what a GPU keeps.
    Composed,
}

/// Runs `f` with this thread's backbones taking `ops` on Flex, then restores the previous choice.
///
/// The memory planner measures a GPU run's activations on the CPU: with [`BlockOps::Composed`]
/// it counts what the GPU's composed ops keep, not the smaller set Flex's fused nodes keep.
pub fn with_block_ops<R>(ops: BlockOps, f: impl FnOnce() -> R) -> R {
    let previous = COMPOSED_ONLY.with(|c| c.replace(ops == BlockOps::Composed));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Why a fused tail handed its maps back to the composed ops.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fallback {
    /// The backend (or, on `Autodiff<Flex, C>`, the checkpointing strategy `C`) has no fused
    /// tail.
    Backend,
    /// The maps are not f32, f16 or bf16 maps of one dtype and shape, or gamma is not f32.
    Maps,
}

impl Fallback {
    /// Says at debug level, once per reason and process, that the composed ops run instead.
    pub(super) fn note<B: Backend>(self) {
        static NOTED: [Once; 2] = [Once::new(), Once::new()];
        NOTED[self as usize].call_once(|| {
            let backend = core::any::type_name::<B>();
            match self {
                Fallback::Backend => tracing::debug!(
                    backend,
                    "fused block tails run only on Flex and Autodiff<Flex> (without or with \
                     balanced checkpointing): composed batch norm, ReLU and pool ops instead"
                ),
                Fallback::Maps => tracing::debug!(
                    backend,
                    "fused block tails need f32/f16/bf16 maps of one dtype and shape and f32 \
                     batch-norm parameters: composed ops instead"
                ),
            }
        });
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

/// The tensor of backend `B` holding the concrete primitive `p` (checked by the caller).
pub(super) fn tensor<B: Backend, const D: usize, P: 'static>(p: P) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(reinterpret(p)))
}
