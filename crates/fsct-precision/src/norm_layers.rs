//! Normalisation layers named by type: each model type lists its `BatchNorm`s and `LayerNorm`s
//! through [`NormLayers`], so the precision policy never guesses them from Burn's container-type
//! strings.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{BatchNorm, LayerNorm};
use burn::prelude::*;

use crate::LayerKind;

/// A normalisation layer of a model, by its Burn type.
#[derive(Debug, Clone, Copy)]
pub enum NormLayer<'a, B: Backend> {
    /// A `BatchNorm` (parameters and running statistics).
    Batch(&'a BatchNorm<B>),
    /// A `LayerNorm`.
    Layer(&'a LayerNorm<B>),
}

impl<B: Backend> NormLayer<'_, B> {
    /// The layer's kind, for [`crate::Precision::keeps_f32`].
    pub fn kind(&self) -> LayerKind {
        match self {
            Self::Batch(_) => LayerKind::BatchNorm,
            Self::Layer(_) => LayerKind::LayerNorm,
        }
    }

    /// The ids of every float tensor the layer holds (a `BatchNorm`'s running statistics
    /// included): what a [`burn::module::ModuleMapper`] over the whole model meets in this layer.
    pub fn param_ids(&self) -> Vec<ParamId> {
        let mut ids = CollectIds(Vec::new());
        match self {
            Self::Batch(bn) => bn.visit(&mut ids),
            Self::Layer(ln) => ln.visit(&mut ids),
        }
        ids.0
    }
}

/// A module that can name its normalisation layers, its sub-modules' included.
///
/// Implemented for Burn's `BatchNorm` and `LayerNorm` themselves, `Vec` and `Option`, and by
/// every fsct model type next to the code that uses its norms (`fsct-backbone`'s `norm.rs`,
/// `fsct-transformer`'s `precision.rs`, `fsct-train`'s `precision.rs`). A model type that holds
/// a norm layer must forward to it: a missed one would be computed in half precision by
/// [`crate::half_copy`] (`fsct-train` tests every built-in model against Burn's module tree).
pub trait NormLayers<B: Backend> {
    /// Calls `visit` with each normalisation layer, in module order.
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>));
}

impl<B: Backend> NormLayers<B> for BatchNorm<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        visit(NormLayer::Batch(self));
    }
}

impl<B: Backend> NormLayers<B> for LayerNorm<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        visit(NormLayer::Layer(self));
    }
}

impl<B: Backend, T: NormLayers<B>> NormLayers<B> for Vec<T> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        for item in self {
            item.for_each_norm(visit);
        }
    }
}

impl<B: Backend, T: NormLayers<B>> NormLayers<B> for Option<T> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        if let Some(item) = self {
            item.for_each_norm(visit);
        }
    }
}

/// Collects the ids of the float tensors a module holds.
struct CollectIds(Vec<ParamId>);

impl<B: Backend> ModuleVisitor<B> for CollectIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id);
    }
}
