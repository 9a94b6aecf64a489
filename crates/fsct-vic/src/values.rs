//! One step's VIC terms as plain, detached numbers.

use serde::{Deserialize, Serialize};

/// One step's VIC terms read back as `f64`s: no tensor, no graph. This is what gets logged and
/// what [`VicState`](crate::VicState) folds into its running averages.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicValues {
    /// Variance term (mean of the support and query values).
    pub variance: f64,
    /// Invariance term (support only).
    pub invariance: f64,
    /// Covariance term (mean of the support and query values).
    pub covariance: f64,
    /// λv·variance + λi·invariance + λc·covariance, with the λs of that step.
    pub total: f64,
}

impl VicValues {
    pub(crate) fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("variance", self.variance),
            ("invariance", self.invariance),
            ("covariance", self.covariance),
            ("total", self.total),
        ]
    }
}
