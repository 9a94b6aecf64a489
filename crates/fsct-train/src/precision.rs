//! Mixed precision as PyTorch AMP users expect it: f32 master weights and optimizer state, the
//! forward and backward computed in half precision, dynamic loss scaling.
//!
//! The policy — what each `memory.precision` value means — is [`Precision`] (`fsct-precision`,
//! re-exported here with the compute copy [`half_copy`] and the cast helpers). This module adds
//! what training needs on top: the trained model's norm layers by type ([`NormLayers`] for
//! [`AnyModel`]) and the dynamic [`LossScaler`]. What stays in f32 whatever the precision:
//! BatchNorm and LayerNorm parameters and their computation, softmax/cosine normalisations, the
//! loss, VIC's reductions — the model crates cast around them with `fsct_precision::to_f32`.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
pub use fsct_precision::{
    half_copy, to_dtype, to_f32, LayerKind, NormLayer, NormLayers, Precision,
};
use serde::{Deserialize, Serialize};

use crate::model::AnyModel;

impl<B: Backend> NormLayers<B> for AnyModel<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        match self {
            Self::Fsct(model) => model.for_each_norm(visit),
            Self::Ctx(model) => model.for_each_norm(visit),
        }
    }
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
    /// Steps skipped in a row at the floor scale (0 after a good step).
    #[serde(default)]
    pub skips_at_floor: u64,
}

/// The scale never falls below this.
pub const MIN_LOSS_SCALE: f64 = 1.0;

/// Steps in a row that may overflow at the floor scale before the run counts as diverged.
pub const MAX_SKIPS_AT_FLOOR: u64 = 5;

impl LossScaler {
    /// A scaler starting at `scale`.
    pub fn new(scale: f64, growth_interval: usize) -> Self {
        Self { scale, good_steps: 0, skipped: 0, growth_interval, skips_at_floor: 0 }
    }

    /// The run has diverged: the scale is at its floor ([`MIN_LOSS_SCALE`]) and the last
    /// [`MAX_SKIPS_AT_FLOOR`] steps there still had inf/NaN gradients, so no update can happen
    /// any more. (Falling from the initial scale to the floor costs one skipped step per halving;
    /// those calibration skips never count.)
    pub fn diverged(&self) -> bool {
        self.scale <= MIN_LOSS_SCALE && self.skips_at_floor >= MAX_SKIPS_AT_FLOOR
    }

    /// Unscales the gradients in place; returns `false` (and lowers the scale) if any is inf/NaN,
    /// in which case the step must be skipped.
    pub fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: &mut GradientsParams,
    ) -> bool {
        self.unscale_to(model, grads, 1.0)
    }

    /// As [`Self::unscale`], leaving the gradients multiplied by `target` instead of 1 (pure f16
    /// hands AdamW gradients at a scale its f16 moments can hold: see [`crate::step`]).
    pub fn unscale_to<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: &mut GradientsParams,
        target: f64,
    ) -> bool {
        let mut visitor = Unscale::<B> {
            grads,
            factor: target / self.scale,
            finite: true,
            _b: Default::default(),
        };
        model.visit(&mut visitor);
        self.record(visitor.finite);
        visitor.finite
    }

    /// Updates the scale after a step whose gradients were (`finite`) or were not all finite.
    pub fn record(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            self.skips_at_floor = 0;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            let at_floor = self.scale <= MIN_LOSS_SCALE;
            self.scale = (self.scale / 2.0).max(MIN_LOSS_SCALE);
            self.good_steps = 0;
            self.skipped += 1;
            // Only the skips at the floor count towards divergence: the fall from a high
            // initial scale is calibration.
            self.skips_at_floor = if at_floor { self.skips_at_floor + 1 } else { 0 };
            // Calibration (a few halvings at start-up) is normal: not a warning.
            tracing::debug!(
                scale = self.scale,
                "non-finite gradients: step skipped, loss scale lowered"
            );
            if self.scale <= MIN_LOSS_SCALE && !at_floor {
                tracing::warn!("mixed precision: the loss scale fell to its floor ({MIN_LOSS_SCALE}); gradients overflow half precision even unscaled");
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use burn::backend::Flex;
    use burn::module::Module;
    use std::collections::BTreeSet;

    /// The ids of the float tensors whose innermost container is a `BatchNorm` or a `LayerNorm`
    /// by Burn's container-type name (how norm layers were recognised before they were named by
    /// type): the cross-check that no model type forgets a norm layer.
    #[derive(Default)]
    struct ByName {
        containers: Vec<String>,
        ids: BTreeSet<ParamId>,
    }

    impl<B: Backend> ModuleVisitor<B> for ByName {
        fn enter_module(&mut self, _name: &str, container_type: &str) {
            self.containers.push(container_type.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.containers.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let last = self.containers.last();
            if last.is_some_and(|c| c.ends_with(":BatchNorm") || c.ends_with(":LayerNorm")) {
                self.ids.insert(param.id);
            }
        }
    }

    #[test]
    fn every_built_in_model_names_all_its_norm_layers_by_type() {
        let device = Default::default();
        for backbone in ["Conv4", "Conv6NP", "ResNet12", "ResNet18"] {
            for method in ["FSCT_cosine", "CTX_cosine"] {
                let text = format!(
                    "[model]\nbackbone = \"{backbone}\"\nmethod = \"{method}\"\n[data]\nimage_size = 32\n"
                );
                let config = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
                let model = crate::model::build_model::<Flex>(&config, &device).unwrap();
                let mut by_type = BTreeSet::new();
                model.for_each_norm(&mut |layer| by_type.extend(layer.param_ids()));
                let mut by_name = ByName::default();
                model.visit(&mut by_name);
                assert!(!by_type.is_empty(), "{backbone} {method}");
                assert_eq!(by_type, by_name.ids, "{backbone} {method}");
            }
        }
    }

    /// The scaler after a run of outcomes (true = finite gradients).
    fn after(outcomes: &[bool]) -> LossScaler {
        let mut s = LossScaler::new(8.0, 3);
        for &finite in outcomes {
            s.record(finite);
        }
        s
    }

    #[test]
    fn the_scale_grows_after_the_interval_and_backs_off_on_overflow() {
        let s = after(&[true, true]);
        assert_eq!((s.scale, s.good_steps), (8.0, 2));
        let s = after(&[true, true, true]);
        assert_eq!((s.scale, s.good_steps), (16.0, 0), "doubles after growth_interval good steps");
        let s = after(&[true, true, false]);
        assert_eq!(
            (s.scale, s.good_steps, s.skipped),
            (4.0, 0, 1),
            "halves and restarts the count"
        );
        let s = after(&[false; 10]);
        assert_eq!(s.scale, MIN_LOSS_SCALE, "never below the floor");
        assert_eq!(s.skipped, 10);
    }

    #[test]
    fn the_scaler_resumes_exactly_and_reads_checkpoints_of_before_the_floor_count() {
        let s = after(&[true, false, false, false, false, true]);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LossScaler>(&text).unwrap(), s);
        // A checkpoint written before `skips_at_floor` existed.
        let old = r#"{"scale":1024.0,"good_steps":3,"skipped":2,"growth_interval":200}"#;
        let s: LossScaler = serde_json::from_str(old).unwrap();
        assert_eq!((s.scale, s.skips_at_floor), (1024.0, 0));
    }

    #[test]
    fn calibration_is_not_divergence_but_overflow_at_the_floor_is() {
        // 8 → 4 → 2 → 1: three calibration skips, then good steps.
        assert!(!after(&[false, false, false, true, true]).diverged());
        // At the floor, MAX_SKIPS_AT_FLOOR more overflows in a row: diverged.
        let floor = [false; 3];
        let mut outcomes = floor.to_vec();
        outcomes.extend(std::iter::repeat_n(false, MAX_SKIPS_AT_FLOOR as usize - 1));
        assert!(!after(&outcomes).diverged());
        outcomes.push(false);
        let s = after(&outcomes);
        assert!(s.diverged(), "{s:?}");
        // A good step in between resets the count.
        outcomes.insert(5, true);
        assert!(!after(&outcomes).diverged());
    }
}
