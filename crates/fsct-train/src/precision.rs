//! Mixed precision as PyTorch AMP users expect it: f32 master weights and optimizer state, the
//! forward and backward computed in half precision, dynamic loss scaling.
//!
//! Burn 0.21 has no autocast. Each step, [`half_copy`] maps the f32 model to a copy whose float
//! parameters are cast to f16/bf16; the cast is differentiable, so gradients land on the f32 master
//! parameters. The copy is rebuilt every step (a reused copy silently drops gradients). What stays
//! in f32: BatchNorm and LayerNorm parameters and their computation, softmax/cosine
//! normalisations, the loss, VIC's reductions — the model crates cast around them.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// Casts float parameters to `dtype`, except those of normalisation layers.
struct HalfMapper {
    dtype: FloatDType,
    containers: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for HalfMapper {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // The innermost container is the layer owning the parameter (e.g. `Struct:BatchNorm`).
        let in_norm = self
            .containers
            .last()
            .is_some_and(|c| c.ends_with(":BatchNorm") || c.ends_with(":LayerNorm"));
        if in_norm {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| t.cast(dtype))
    }
}

/// A copy of `model` whose non-normalisation float parameters are in `dtype`, linked to the
/// original by the autodiff graph (gradients flow back to the f32 parameters).
pub fn half_copy<B: Backend, M: Module<B>>(model: &M, dtype: FloatDType) -> M {
    model.clone().map(&mut HalfMapper { dtype, containers: Vec::new() })
}

/// Dynamic loss scaling: skip steps with non-finite gradients and halve the scale; double it
/// after `growth_interval` good steps in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// Current scale.
    pub scale: f64,
    /// Good steps since the last change.
    pub good_steps: usize,
    /// Steps skipped so far.
    pub skipped: u64,
    /// Good steps before doubling.
    pub growth_interval: usize,
}

impl LossScaler {
    /// A scaler starting at `scale`.
    pub fn new(scale: f64, growth_interval: usize) -> Self {
        Self { scale, good_steps: 0, skipped: 0, growth_interval }
    }

    /// Unscales the gradients in place; returns `false` (and lowers the scale) if any is inf/NaN,
    /// in which case the step must be skipped.
    pub fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(&mut self, model: &M, grads: &mut GradientsParams) -> bool {
        let mut visitor = Unscale::<B> { grads, factor: 1.0 / self.scale, finite: true, _b: Default::default() };
        model.visit(&mut visitor);
        if visitor.finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
            true
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            self.skipped += 1;
            tracing::warn!(scale = self.scale, "non-finite gradients: step skipped, loss scale lowered");
            false
        }
    }
}

struct Unscale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    finite: bool,
    _b: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id: ParamId = param.id;
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else { return };
        let grad = grad.mul_scalar(self.factor);
        if self.finite {
            let total = grad.shape().num_elements() as i64;
            let finite: i64 = grad.clone().is_finite().int().sum().into_scalar().elem();
            self.finite = finite == total;
        }
        self.grads.register::<B::InnerBackend, D>(id, grad);
    }
}
