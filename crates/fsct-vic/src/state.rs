//! Running VIC state: the current λs, EMAs for logging, and the balanced-weighting update.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::{VicConfig, VicWeighting};
use crate::error::VicError;
use crate::terms::VicTerms;
use crate::values::VicValues;

/// Added to the sum of the terms before taking shares, so an all-zero step does not divide by 0.
const SHARE_EPS: f64 = 1e-8;

/// The regularizer's running state, in plain `f64`s: no tensor, hence no graph, can be held here.
/// Serializable so a trainer saves it in its checkpoints and resumes the λs and EMAs exactly.
///
/// The λs are plain scalars: they weight the terms in [`vic_terms`](crate::vic_terms) but are
/// never optimizer parameters, so no gradient reaches them and weight decay never drags them down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicState {
    /// λv, the variance weight the next step uses.
    pub lambda_v: f64,
    /// λi, the invariance weight the next step uses.
    pub lambda_i: f64,
    /// λc, the covariance weight the next step uses.
    pub lambda_c: f64,
    /// Exponential moving average (momentum `config.momentum`) of the variance term. The first
    /// update sets every EMA to that step's value (no warm-up bias towards 0); before any update
    /// the term EMAs are 0.
    pub ema_variance: f64,
    /// EMA of the invariance term.
    pub ema_invariance: f64,
    /// EMA of the covariance term.
    pub ema_covariance: f64,
    /// EMA of the λv used in each step (before that step's balanced update); starts at the
    /// configured λv.
    pub ema_lambda_v: f64,
    /// EMA of the λi used in each step.
    pub ema_lambda_i: f64,
    /// EMA of the λc used in each step.
    pub ema_lambda_c: f64,
    /// Number of updates folded in so far (skipped non-finite steps are not counted).
    pub steps: u64,
}

impl VicState {
    /// Fresh state: the configured λs, zero term EMAs, λ EMAs at the configured λs, no steps.
    pub fn new(config: &VicConfig) -> Self {
        Self {
            lambda_v: config.lambda_v,
            lambda_i: config.lambda_i,
            lambda_c: config.lambda_c,
            ema_variance: 0.0,
            ema_invariance: 0.0,
            ema_covariance: 0.0,
            ema_lambda_v: config.lambda_v,
            ema_lambda_i: config.lambda_i,
            ema_lambda_c: config.lambda_c,
            steps: 0,
        }
    }

    /// The current weights `[λv, λi, λc]`, in the order [`vic_terms`](crate::vic_terms) takes them.
    pub fn lambdas(&self) -> [f64; 3] {
        [self.lambda_v, self.lambda_i, self.lambda_c]
    }

    /// Checks a state (e.g. loaded from a checkpoint) against `config`: the λs must be finite and
    /// ≥ 0, and inside the clamps under balanced weighting.
    pub fn validate(&self, config: &VicConfig) -> Result<(), VicError> {
        for (field, value) in
            [("lambda_v", self.lambda_v), ("lambda_i", self.lambda_i), ("lambda_c", self.lambda_c)]
        {
            let out_of_clamp = config.weighting == VicWeighting::Balanced
                && !(config.min_weight..=config.max_weight).contains(&value);
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

    /// Reads one step's terms back as detached `f64`s and folds them into the state (see
    /// [`VicState::record`]); returns the values for logging.
    ///
    /// Reading works on clones (`into_scalar`), so no graph is kept here and the terms stay usable
    /// for `backward` whether this runs before or after it. The terms must have been computed with
    /// [`VicState::lambdas`] of this state: the λ EMAs record those.
    ///
    /// A step whose values are NaN or infinite is skipped (state unchanged, a `tracing` warning);
    /// its values are still returned so the caller sees them.
    pub fn update<B: Backend>(&mut self, terms: &VicTerms<B>, config: &VicConfig) -> VicValues {
        let values = terms.values();
        if let Err(err) = self.record(&values, config) {
            tracing::warn!(%err, "VIC running statistics not updated");
        }
        values
    }

    /// Folds one step's detached values into the state: updates the EMAs (of the terms and of the
    /// λs used in the step, i.e. the current ones), counts the step and, under
    /// `weighting = "balanced"`, moves each λ towards an equal share of the three terms:
    /// λx ← clamp(λx·(1 + α(1/3 − x/tot)), min_weight, max_weight), tot = V + I + C + 1e-8.
    /// A term above a third of the sum gets a smaller weight, one below gets a larger weight.
    /// With `"fixed"` the λs stay.
    ///
    /// # Errors
    /// [`VicError::NonFinite`] if a value is NaN or infinite; the state is then left unchanged so
    /// one bad step cannot poison the EMAs and weights for the rest of training.
    pub fn record(&mut self, values: &VicValues, config: &VicConfig) -> Result<(), VicError> {
        for (term, value) in values.named() {
            if !value.is_finite() {
                return Err(VicError::NonFinite { term, value });
            }
        }
        let m = config.momentum;
        let first = self.steps == 0;
        let ema = |old: f64, new: f64| if first { new } else { m * old + (1.0 - m) * new };
        self.ema_variance = ema(self.ema_variance, values.variance);
        self.ema_invariance = ema(self.ema_invariance, values.invariance);
        self.ema_covariance = ema(self.ema_covariance, values.covariance);
        self.ema_lambda_v = ema(self.ema_lambda_v, self.lambda_v);
        self.ema_lambda_i = ema(self.ema_lambda_i, self.lambda_i);
        self.ema_lambda_c = ema(self.ema_lambda_c, self.lambda_c);
        self.steps += 1;

        if config.weighting == VicWeighting::Balanced {
            let tot = values.variance + values.invariance + values.covariance + SHARE_EPS;
            let step = |lambda: f64, term: f64| {
                (lambda * (1.0 + config.alpha * (1.0 / 3.0 - term / tot)))
                    .clamp(config.min_weight, config.max_weight)
            };
            self.lambda_v = step(self.lambda_v, values.variance);
            self.lambda_i = step(self.lambda_i, values.invariance);
            self.lambda_c = step(self.lambda_c, values.covariance);
            tracing::trace!(
                step = self.steps,
                lambda_v = self.lambda_v,
                lambda_i = self.lambda_i,
                lambda_c = self.lambda_c,
                "balanced VIC weights"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;

    use super::*;
    use crate::reference::{tensor, to_vec, Rng, AD};
    use crate::terms::vic_terms;

    fn values(v: f64, i: f64, c: f64) -> VicValues {
        VicValues { variance: v, invariance: i, covariance: c, total: v + i + c }
    }

    fn balanced() -> VicConfig {
        VicConfig { weighting: VicWeighting::Balanced, ..VicConfig::default() }
    }

    fn episode(seed: u64) -> (Tensor<AD, 3>, Tensor<AD, 2>) {
        let mut rng = Rng(seed);
        (
            tensor::<AD, 3>(&rng.matrix(10, 40), [5, 2, 40]).require_grad(),
            tensor::<AD, 2>(&rng.matrix(60, 40), [60, 40]).require_grad(),
        )
    }

    #[test]
    fn ema_starts_at_the_first_value_then_uses_the_momentum() {
        let config = VicConfig { lambda_i: 0.5, ..VicConfig::default() };
        let mut state = VicState::new(&config);
        assert_eq!(state.lambdas(), [1.0, 0.5, 1.0]);
        state.record(&values(0.5, 2.0, 4.0), &config).unwrap();
        assert_eq!(
            [state.ema_variance, state.ema_invariance, state.ema_covariance],
            [0.5, 2.0, 4.0]
        );
        state.record(&values(1.5, 0.0, 2.0), &config).unwrap();
        let expected = [0.9 * 0.5 + 0.1 * 1.5, 0.9 * 2.0, 0.9 * 4.0 + 0.1 * 2.0];
        let got = [state.ema_variance, state.ema_invariance, state.ema_covariance];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{got:?} vs {expected:?}");
        }
        assert_eq!(state.steps, 2);
        assert_eq!(state.lambdas(), [1.0, 0.5, 1.0], "fixed weighting leaves the λs alone");
        assert_eq!([state.ema_lambda_v, state.ema_lambda_i, state.ema_lambda_c], [1.0, 0.5, 1.0]);
    }

    #[test]
    fn balanced_weighting_moves_each_lambda_towards_an_equal_share() {
        let config = VicConfig { alpha: 0.1, ..balanced() };
        let mut state = VicState::new(&config);
        // Shares 0.1 / 0.3 / 0.6: λv rises, λi rises a little, λc falls.
        state.record(&values(0.1, 0.3, 0.6), &config).unwrap();
        let tot = 1.0 + 1e-8;
        let expect = |share: f64| 1.0 + 0.1 * (1.0 / 3.0 - share / tot);
        assert!((state.lambda_v - expect(0.1)).abs() < 1e-12);
        assert!((state.lambda_i - expect(0.3)).abs() < 1e-12);
        assert!((state.lambda_c - expect(0.6)).abs() < 1e-12);
        assert!(state.lambda_v > state.lambda_i && state.lambda_i > 1.0 && state.lambda_c < 1.0);
        assert_eq!(
            [state.ema_lambda_v, state.ema_lambda_i, state.ema_lambda_c],
            [1.0; 3],
            "the EMA records the λs used in the step"
        );
        // The second step's λ EMA sees the moved λs.
        let used = state.lambdas();
        state.record(&values(0.1, 0.3, 0.6), &config).unwrap();
        assert!((state.ema_lambda_c - (0.9 + 0.1 * used[2])).abs() < 1e-12);
    }

    #[test]
    fn balanced_weighting_respects_the_clamps() {
        let config = VicConfig { alpha: 0.5, min_weight: 0.5, max_weight: 2.0, ..balanced() };
        let mut state = VicState::new(&config);
        for _ in 0..50 {
            state.record(&values(0.0, 0.0, 1.0), &config).unwrap();
            for lambda in state.lambdas() {
                assert!((0.5..=2.0).contains(&lambda), "{:?}", state.lambdas());
            }
        }
        assert_eq!(state.lambdas(), [2.0, 2.0, 0.5]);
        // All-zero terms: no share is defined, every λ moves up by α/3 (then clamps).
        let mut zero = VicState::new(&config);
        zero.record(&values(0.0, 0.0, 0.0), &config).unwrap();
        assert!((zero.lambda_v - (1.0 + 0.5 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn non_finite_values_are_rejected_and_change_nothing() {
        let config = balanced();
        let mut state = VicState::new(&config);
        state.record(&values(0.2, 0.3, 0.4), &config).unwrap();
        let before = state.clone();
        let err = state.record(&values(0.2, f64::NAN, 0.4), &config).unwrap_err();
        assert!(matches!(err, VicError::NonFinite { term: "invariance", .. }), "{err}");
        assert!(err.to_string().contains("invariance"));
        assert_eq!(state, before);
    }

    #[test]
    fn state_round_trips_through_json_and_validates_against_the_config() {
        let config = balanced();
        let mut state = VicState::new(&config);
        state.record(&values(0.2, 0.3, 0.4), &config).unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let back: VicState = serde_json::from_str(&json).unwrap();
        crate::reference::assert_state_close(&back, &state);
        back.validate(&config).unwrap();
        let outside = VicState { lambda_c: 50.0, ..state };
        let err = outside.validate(&config).unwrap_err().to_string();
        assert!(err.contains("lambda_c") && err.contains("[0.01, 10]"), "{err}");
    }

    fn assert_plain_data<T: Send + Sync + 'static + serde::Serialize>() {}

    /// The running statistics hold no graph: the state is plain data with no backend parameter,
    /// updating from the terms leaves them usable for backward with unchanged gradients, and the
    /// same update works from values read after every tensor of the step was dropped.
    #[test]
    fn running_statistics_hold_no_graph() {
        assert_plain_data::<VicState>();
        assert_plain_data::<VicValues>();
        let config = VicConfig { weighting: VicWeighting::Balanced, ..VicConfig::default() };

        // Reference gradient: no state update at all.
        let (support, query) = episode(20);
        let untouched =
            vic_terms(support.clone(), query, VicState::new(&config).lambdas(), &config);
        let untouched_grad = to_vec(support.grad(&untouched.total.backward()).unwrap());

        // Update between forward and backward, as a training step may do.
        let mut live = VicState::new(&config);
        let (support, query) = episode(20);
        let terms = vic_terms(support.clone(), query, live.lambdas(), &config);
        let logged = live.update(&terms, &config);
        let grad_after_update = to_vec(support.grad(&terms.total.backward()).unwrap());
        assert_eq!(
            grad_after_update, untouched_grad,
            "update neither consumes nor alters the graph"
        );
        assert_eq!(logged, terms.values());

        // Update after backward and after every tensor of the step is dropped: only f64s remain.
        let mut detached = VicState::new(&config);
        let (support, query) = episode(20);
        let values = {
            let terms = vic_terms(support, query, detached.lambdas(), &config);
            let _ = terms.total.backward();
            terms.values()
        };
        detached.record(&values, &config).unwrap();
        assert_eq!(detached, live);
        assert_eq!(detached.steps, 1);
        assert_ne!(
            detached.lambdas(),
            VicState::new(&config).lambdas(),
            "balanced weighting moved the λs"
        );
    }

    #[test]
    fn update_skips_a_non_finite_step_but_returns_its_values() {
        let config = VicConfig::default();
        let mut state = VicState::new(&config);
        let nan = Tensor::<AD, 3>::full([2, 2, 8], f32::NAN, &Default::default());
        let query = tensor::<AD, 2>(&Rng(5).matrix(4, 8), [4, 8]);
        let terms = vic_terms(nan, query, state.lambdas(), &config);
        let values = state.update(&terms, &config);
        assert!(values.invariance.is_nan() && values.total.is_nan(), "{values:?}");
        assert_eq!(state, VicState::new(&config));
    }
}
