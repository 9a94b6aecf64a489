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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: f64, i: f64, c: f64, w: VicWeights) -> VicValues {
        VicValues { variance: v, invariance: i, covariance: c, total: w.variance * v + w.invariance * i + w.covariance * c, weights: w }
    }

    fn balanced() -> VicConfig {
        VicConfig { weighting: Weighting::Balanced, ..VicConfig::default() }
    }

    #[test]
    fn ema_starts_at_the_first_value_then_uses_the_momentum() {
        let config = VicConfig::default();
        let mut state = VicState::new(&config);
        let w = state.weights;
        state.update(&values(0.5, 2.0, 4.0, w), &config).unwrap();
        assert_eq!(state.ema, values(0.5, 2.0, 4.0, w));
        state.update(&values(1.5, 0.0, 2.0, w), &config).unwrap();
        let expected = [0.9 * 0.5 + 0.1 * 1.5, 0.9 * 2.0, 0.9 * 4.0 + 0.1 * 2.0, 0.9 * 6.5 + 0.1 * 3.5];
        let got = [state.ema.variance, state.ema.invariance, state.ema.covariance, state.ema.total];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{got:?} vs {expected:?}");
        }
        assert_eq!(state.steps, 2);
        assert_eq!(state.weights, VicWeights::from_config(&config), "fixed weighting leaves the λs alone");
    }

    #[test]
    fn balanced_weighting_moves_each_lambda_towards_an_equal_share() {
        let config = VicConfig { alpha: 0.1, ..balanced() };
        let mut state = VicState::new(&config);
        let w = state.weights;
        // Shares 0.1 / 0.3 / 0.6: λv rises, λi rises a little, λc falls.
        state.update(&values(0.1, 0.3, 0.6, w), &config).unwrap();
        let tot = 1.0 + 1e-8;
        let expect = |share: f64| 1.0 + 0.1 * (1.0 / 3.0 - share / tot);
        assert!((state.weights.variance - expect(0.1)).abs() < 1e-12);
        assert!((state.weights.invariance - expect(0.3)).abs() < 1e-12);
        assert!((state.weights.covariance - expect(0.6)).abs() < 1e-12);
        assert!(state.weights.variance > state.weights.invariance && state.weights.invariance > 1.0 && state.weights.covariance < 1.0);
        assert_eq!(state.ema.weights, w, "the EMA records the weights used in the step");
    }

    #[test]
    fn balanced_weighting_respects_the_clamps() {
        let config = VicConfig { alpha: 0.5, min_weight: 0.5, max_weight: 2.0, ..balanced() };
        let mut state = VicState::new(&config);
        for _ in 0..50 {
            let w = state.weights;
            state.update(&values(0.0, 0.0, 1.0, w), &config).unwrap();
            for (_, lambda) in state.weights.named() {
                assert!((0.5..=2.0).contains(&lambda), "{:?}", state.weights);
            }
        }
        assert_eq!(state.weights, VicWeights { variance: 2.0, invariance: 2.0, covariance: 0.5 });
        // All-zero terms: no share is defined, every λ moves up by α/3 (then clamps).
        let mut zero = VicState::new(&config);
        zero.update(&values(0.0, 0.0, 0.0, zero.weights), &config).unwrap();
        assert!((zero.weights.variance - (1.0 + 0.5 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn non_finite_values_are_rejected_and_change_nothing() {
        let config = balanced();
        let mut state = VicState::new(&config);
        state.update(&values(0.2, 0.3, 0.4, state.weights), &config).unwrap();
        let before = state.clone();
        let err = state.update(&values(0.2, f64::NAN, 0.4, state.weights), &config).unwrap_err();
        assert!(matches!(err, VicError::NonFinite { term: "invariance", .. }), "{err}");
        assert!(err.to_string().contains("invariance"));
        assert_eq!(state, before);
    }

    #[test]
    fn state_round_trips_through_json_and_validates_against_the_config() {
        let config = balanced();
        let mut state = VicState::new(&config);
        state.update(&values(0.2, 0.3, 0.4, state.weights), &config).unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let back: VicState = serde_json::from_str(&json).unwrap();
        crate::reference::assert_state_close(&back, &state);
        back.validate(&config).unwrap();
        let outside = VicState { weights: VicWeights { covariance: 50.0, ..state.weights }, ..state };
        let err = outside.validate(&config).unwrap_err().to_string();
        assert!(err.contains("lambda_c") && err.contains("[0.01, 10]"), "{err}");
    }
}
