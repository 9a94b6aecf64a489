//! Running VIC state: the current λs, EMAs for logging, and the balanced-weighting update.

use serde::{Deserialize, Serialize};

use crate::config::{VicConfig, Weighting};
use crate::error::VicError;
use crate::values::{VicValues, VicWeights};

/// Added to the sum of the terms before taking shares, so an all-zero step does not divide by 0.
const SHARE_EPS: f64 = 1e-8;

/// The regularizer's running state, in plain `f64`s: no tensor, hence no graph, can be held here.
/// Serializable so a trainer saves it in its checkpoints and resumes the λs and EMAs exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicState {
    /// The weights the next step's total will use.
    pub weights: VicWeights,
    /// Exponential moving average (momentum `config.momentum`) of each term, the total and the
    /// weights used in each step. The first update sets it to that step's values (no warm-up bias
    /// towards 0); before any update it is all zeros.
    pub ema: VicValues,
    /// Number of updates so far.
    pub steps: u64,
}

impl VicState {
    /// Fresh state: the configured λs, zero EMAs, no steps.
    pub fn new(config: &VicConfig) -> Self {
        let weights = VicWeights::from_config(config);
        Self { weights, ema: VicValues { weights, ..VicValues::default() }, steps: 0 }
    }

    /// Checks a state (e.g. loaded from a checkpoint) against `config`: the λs must be finite and
    /// ≥ 0, and inside the clamps under balanced weighting.
    pub fn validate(&self, config: &VicConfig) -> Result<(), VicError> {
        for (field, value) in self.weights.named() {
            let out_of_clamp = config.weighting == Weighting::Balanced && !(config.min_weight..=config.max_weight).contains(&value);
            if !value.is_finite() || value < 0.0 || out_of_clamp {
                return Err(VicError::InvalidConfig {
                    field,
                    value: format!("{value}"),
                    fix: format!(
                        "the saved VIC state's weight must be finite, >= 0 and, with balanced weighting, within [{}, {}]; start from a fresh state",
                        config.min_weight, config.max_weight
                    ),
                });
            }
        }
        Ok(())
    }

    /// Folds one step's detached values into the state: updates the EMAs, counts the step and,
    /// under `weighting = "balanced"`, moves each λ towards an equal share of the three terms:
    /// λx ← clamp(λx·(1 + α(1/3 − x/tot)), min_weight, max_weight), tot = V + I + C + 1e-8.
    /// A term above a third of the sum gets a smaller weight, one below gets a larger weight.
    ///
    /// # Errors
    /// [`VicError::NonFinite`] if a value is NaN or infinite; the state is then left unchanged so
    /// one bad step cannot poison the EMAs and weights for the rest of training.
    pub fn update(&mut self, values: &VicValues, config: &VicConfig) -> Result<(), VicError> {
        for (term, value) in values.named_terms() {
            if !value.is_finite() {
                return Err(VicError::NonFinite { term, value });
            }
        }
        let m = config.momentum;
        let ema = |old: f64, new: f64| if self.steps == 0 { new } else { m * old + (1.0 - m) * new };
        let e = &self.ema;
        self.ema = VicValues {
            variance: ema(e.variance, values.variance),
            invariance: ema(e.invariance, values.invariance),
            covariance: ema(e.covariance, values.covariance),
            total: ema(e.total, values.total),
            weights: VicWeights {
                variance: ema(e.weights.variance, values.weights.variance),
                invariance: ema(e.weights.invariance, values.weights.invariance),
                covariance: ema(e.weights.covariance, values.weights.covariance),
            },
        };
        self.steps += 1;

        if config.weighting == Weighting::Balanced {
            let tot = values.variance + values.invariance + values.covariance + SHARE_EPS;
            let step = |lambda: f64, term: f64| {
                (lambda * (1.0 + config.alpha * (1.0 / 3.0 - term / tot))).clamp(config.min_weight, config.max_weight)
            };
            let w = self.weights;
            self.weights = VicWeights {
                variance: step(w.variance, values.variance),
                invariance: step(w.invariance, values.invariance),
                covariance: step(w.covariance, values.covariance),
            };
            tracing::trace!(step = self.steps, lambda_v = self.weights.variance, lambda_i = self.weights.invariance, lambda_c = self.weights.covariance, "balanced VIC weights");
        }
        Ok(())
    }
}
