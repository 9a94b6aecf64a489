//! Plain, detached numbers: the λ weights and one step's term values.

use serde::{Deserialize, Serialize};

use crate::config::VicConfig;

/// The three term weights (λv, λi, λc) as plain scalars. They weight the terms but are never
/// optimizer parameters, so no gradient reaches them and weight decay never drags them down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicWeights {
    /// λv, weight of the variance term.
    pub variance: f64,
    /// λi, weight of the invariance term.
    pub invariance: f64,
    /// λc, weight of the covariance term.
    pub covariance: f64,
}

impl VicWeights {
    /// The configured initial weights.
    pub fn from_config(config: &VicConfig) -> Self {
        Self { variance: config.lambda_v, invariance: config.lambda_i, covariance: config.lambda_c }
    }

    pub(crate) fn named(&self) -> [(&'static str, f64); 3] {
        [("lambda_v", self.variance), ("lambda_i", self.invariance), ("lambda_c", self.covariance)]
    }
}

impl Default for VicWeights {
    fn default() -> Self {
        Self::from_config(&VicConfig::default())
    }
}

/// One step's VIC terms read back as `f64`s (no tensors, no graph), with the weights that were
/// used for that step's total. This is what gets logged and fed to the running state.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicValues {
    /// Variance term (mean of the support and query values).
    pub variance: f64,
    /// Invariance term (support only).
    pub invariance: f64,
    /// Covariance term (mean of the support and query values).
    pub covariance: f64,
    /// λv·variance + λi·invariance + λc·covariance.
    pub total: f64,
    /// The weights in effect for this step.
    pub weights: VicWeights,
}

impl VicValues {
    pub(crate) fn named_terms(&self) -> [(&'static str, f64); 4] {
        [("variance", self.variance), ("invariance", self.invariance), ("covariance", self.covariance), ("total", self.total)]
    }
}
