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
