//! [`VicRegularizer`]: a config and its running state, for a training loop.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::VicConfig;
use crate::error::VicError;
use crate::state::VicState;
use crate::terms::{vic_terms, VicTerms};
use crate::values::VicValues;

/// A validated [`VicConfig`] with its [`VicState`]: `forward` computes the terms with the current
/// weights, `update` folds the step's detached values into the state.
#[derive(Debug, Clone, PartialEq)]
pub struct VicRegularizer {
    config: VicConfig,
    state: VicState,
}

impl VicRegularizer {
    /// Validates `config` and starts from a fresh state.
    pub fn new(config: VicConfig) -> Result<Self, VicError> {
        config.validate()?;
        let state = VicState::new(&config);
        Ok(Self { config, state })
    }

    /// Resumes from a saved state (e.g. from a checkpoint), validated against `config`.
    pub fn with_state(config: VicConfig, state: VicState) -> Result<Self, VicError> {
        config.validate()?;
        state.validate(&config)?;
        Ok(Self { config, state })
    }

    /// The terms of one episode with the current weights; see [`vic_terms`].
    ///
    /// # Shapes
    /// - `support`: `[N, K, d]`; `query`: `[Q, d]`; outputs `[1]`.
    pub fn forward<B: Backend>(&self, support: Tensor<B, 3>, query: Tensor<B, 2>) -> Result<VicTerms<B>, VicError> {
        vic_terms(support, query, self.state.weights, &self.config)
    }

    /// Reads `terms` back (detached `f64`s; the tensors stay usable for `backward`) and updates the
    /// running state; returns the values for logging. See [`VicState::update`].
    pub fn update<B: Backend>(&mut self, terms: &VicTerms<B>) -> Result<VicValues, VicError> {
        let values = terms.values();
        self.state.update(&values, &self.config)?;
        Ok(values)
    }

    /// The configuration.
    pub fn config(&self) -> &VicConfig {
        &self.config
    }

    /// The running state, e.g. to log its EMAs or save it in a checkpoint.
    pub fn state(&self) -> &VicState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{tensor, to_vec, Rng, AD};
    use crate::{VicWeights, Weighting};

    fn assert_plain_data<T: Send + Sync + 'static + serde::Serialize>() {}

    fn episode(seed: u64) -> (Tensor<AD, 3>, Tensor<AD, 2>) {
        let mut rng = Rng(seed);
        (tensor::<AD, 3>(&rng.matrix(10, 40), [5, 2, 40]).require_grad(), tensor::<AD, 2>(&rng.matrix(60, 40), [60, 40]).require_grad())
    }

    /// The running statistics hold no graph: the state is plain data with no backend parameter,
    /// updating from the terms leaves them usable for backward with unchanged gradients, and the
    /// same update works from values read after every tensor of the step was dropped.
    #[test]
    fn running_statistics_hold_no_graph() {
        assert_plain_data::<VicState>();
        assert_plain_data::<VicValues>();
        let config = VicConfig { weighting: Weighting::Balanced, ..VicConfig::default() };

        // Reference gradient: no state update at all.
        let (support, query) = episode(20);
        let untouched = VicRegularizer::new(config.clone()).unwrap().forward(support.clone(), query).unwrap();
        let untouched_grad = to_vec(support.grad(&untouched.total.backward()).unwrap());

        // Update between forward and backward, as a training step does.
        let mut live = VicRegularizer::new(config.clone()).unwrap();
        let (support, query) = episode(20);
        let terms = live.forward(support.clone(), query).unwrap();
        live.update(&terms).unwrap();
        let grad_after_update = to_vec(support.grad(&terms.total.backward()).unwrap());
        assert_eq!(grad_after_update, untouched_grad, "update neither consumes nor alters the graph");

        let mut detached = VicRegularizer::new(config).unwrap();
        let (support, query) = episode(20);
        let values = detached.forward(support, query).unwrap().values();
        // Every tensor of the step is gone here; only f64s remain.
        detached.state.update(&values, &detached.config).unwrap();
        assert_eq!(detached.state(), live.state());
        assert_eq!(detached.state().steps, 1);
        assert_ne!(detached.state().weights, VicWeights::default(), "balanced weighting moved the λs");
    }

    #[test]
    fn forward_uses_the_current_weights_and_resumes_from_a_saved_state() {
        let config = VicConfig { weighting: Weighting::Balanced, alpha: 0.5, ..VicConfig::default() };
        let mut vic = VicRegularizer::new(config.clone()).unwrap();
        for seed in 0..3 {
            let (s, q) = episode(30 + seed);
            let terms = vic.forward(s, q).unwrap();
            vic.update(&terms).unwrap();
        }
        let (s, q) = episode(40);
        let terms = vic.forward(s, q).unwrap();
        let w = vic.state().weights;
        let v = terms.values();
        assert_eq!(v.weights, w);
        let expected = w.variance * v.variance + w.invariance * v.invariance + w.covariance * v.covariance;
        assert!((v.total - expected).abs() < 1e-5 * expected.abs(), "{} vs {expected}", v.total);

        let saved = serde_json::to_string(vic.state()).unwrap();
        let resumed = VicRegularizer::with_state(config.clone(), serde_json::from_str(&saved).unwrap()).unwrap();
        crate::reference::assert_state_close(resumed.state(), vic.state());
        assert_eq!(resumed.config(), vic.config());
        let bad = VicConfig { momentum: 2.0, ..config };
        assert!(VicRegularizer::new(bad).unwrap_err().to_string().contains("momentum"));
    }
}
