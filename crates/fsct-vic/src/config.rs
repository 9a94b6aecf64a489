//! The VIC configuration: term weights, hinge parameters, the weighting scheme and the covariance form.

use serde::{Deserialize, Serialize};

use crate::error::VicError;

/// How the weights λv, λi, λc evolve during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VicWeighting {
    /// The λs stay at their configured values (default).
    #[default]
    Fixed,
    /// After each step, each λ moves multiplicatively towards an equal (1/3) share of the three
    /// terms, at rate `alpha`, clamped to `[min_weight, max_weight]`.
    Balanced,
}

/// How the off-diagonal covariance sum is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CovarianceMode {
    /// Pick the cheaper form from the row count n and the dimension d: Gram when n < d (default).
    #[default]
    Auto,
    /// Always use the n×n Gram form.
    Gram,
    /// Always build the d×d covariance matrix.
    Naive,
}

/// Configuration of the VIC regularizer.
///
/// Every field has a default, so a config file only lists what it changes; unknown fields are
/// rejected (a misspelt key is an error, not a silent default). Call [`VicConfig::validate`] after
/// loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VicConfig {
    /// Initial weight λv of the variance term. Default 1.0.
    pub lambda_v: f64,
    /// Initial weight λi of the invariance term. Default 1.0.
    pub lambda_i: f64,
    /// Initial weight λc of the covariance term. Default 1.0.
    pub lambda_c: f64,
    /// Target standard deviation γ of each dimension in the variance hinge. Default 1.0.
    pub gamma: f64,
    /// ε added to the variance before the square root (keeps its gradient finite). Default 1e-4.
    pub epsilon: f64,
    /// Weighting scheme, `"fixed"` or `"balanced"`. Default `"fixed"`.
    pub weighting: VicWeighting,
    /// Rate α of the balanced weighting update. Default 0.001.
    pub alpha: f64,
    /// Lower clamp of the λs under balanced weighting. Default 0.01.
    pub min_weight: f64,
    /// Upper clamp of the λs under balanced weighting. Default 10.
    pub max_weight: f64,
    /// Momentum of the running averages (EMA) of the terms and λs. Default 0.9.
    pub momentum: f64,
    /// Covariance form, `"auto"`, `"gram"` or `"naive"`. Default `"auto"`.
    pub covariance: CovarianceMode,
}

impl Default for VicConfig {
    fn default() -> Self {
        Self {
            lambda_v: 1.0,
            lambda_i: 1.0,
            lambda_c: 1.0,
            gamma: 1.0,
            epsilon: 1e-4,
            weighting: VicWeighting::Fixed,
            alpha: 0.001,
            min_weight: 0.01,
            max_weight: 10.0,
            momentum: 0.9,
            covariance: CovarianceMode::Auto,
        }
    }
}

fn invalid(field: &'static str, value: f64, fix: impl Into<String>) -> VicError {
    VicError::InvalidConfig { field, value: format!("{value}"), fix: fix.into() }
}

impl VicConfig {
    /// Checks that every value is usable; the error names the first bad field and the fix.
    pub fn validate(&self) -> Result<(), VicError> {
        let lambdas =
            [("lambda_v", self.lambda_v), ("lambda_i", self.lambda_i), ("lambda_c", self.lambda_c)];
        for (field, value) in lambdas {
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(
                    field,
                    value,
                    "use a finite weight >= 0 (0 turns the term off)",
                ));
            }
        }
        if !self.gamma.is_finite() || self.gamma < 0.0 {
            return Err(invalid(
                "gamma",
                self.gamma,
                "use a finite target std >= 0 (VICReg uses 1.0)",
            ));
        }
        if !self.epsilon.is_finite() || self.epsilon <= 0.0 {
            return Err(invalid(
                "epsilon",
                self.epsilon,
                "use a small positive value such as 1e-4 (0 makes sqrt's gradient infinite)",
            ));
        }
        // The factor 1 + α(1/3 − share) must stay positive for every share in [0, 1].
        if !self.alpha.is_finite() || !(0.0..=1.0).contains(&self.alpha) {
            return Err(invalid("alpha", self.alpha, "use a rate in [0, 1], e.g. 0.001"));
        }
        if !self.min_weight.is_finite() || self.min_weight <= 0.0 {
            return Err(invalid(
                "min_weight",
                self.min_weight,
                "use a positive lower clamp such as 0.01 (a multiplicative update cannot leave 0)",
            ));
        }
        if !self.max_weight.is_finite() || self.max_weight < self.min_weight {
            return Err(invalid(
                "max_weight",
                self.max_weight,
                format!("use a finite upper clamp >= min_weight ({})", self.min_weight),
            ));
        }
        if !self.momentum.is_finite() || !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid("momentum", self.momentum, "use a momentum in [0, 1), e.g. 0.9"));
        }
        if self.weighting == VicWeighting::Balanced {
            for (field, value) in lambdas {
                if value < self.min_weight || value > self.max_weight {
                    return Err(invalid(
                        field,
                        value,
                        format!(
                            "with weighting = \"balanced\" each λ must lie in [min_weight, max_weight] = [{}, {}]; change {field} or the clamps",
                            self.min_weight, self.max_weight
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: VicError) -> &'static str {
        match err {
            VicError::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_issue_and_validate() {
        let c = VicConfig::default();
        assert_eq!(
            (c.lambda_v, c.lambda_i, c.lambda_c, c.gamma, c.epsilon),
            (1.0, 1.0, 1.0, 1.0, 1e-4)
        );
        assert_eq!((c.alpha, c.min_weight, c.max_weight, c.momentum), (0.001, 0.01, 10.0, 0.9));
        assert_eq!((c.weighting, c.covariance), (VicWeighting::Fixed, CovarianceMode::Auto));
        c.validate().unwrap();
    }

    #[test]
    fn parses_partial_lowercase_json_and_rejects_unknown_fields() {
        let c: VicConfig = serde_json::from_str(
            r#"{"weighting": "balanced", "covariance": "gram", "lambda_c": 0.5}"#,
        )
        .unwrap();
        assert_eq!(c.weighting, VicWeighting::Balanced);
        assert_eq!(c.covariance, CovarianceMode::Gram);
        assert_eq!(c.lambda_c, 0.5);
        assert_eq!(c.lambda_v, 1.0, "unlisted fields keep their defaults");
        let err = serde_json::from_str::<VicConfig>(r#"{"lamda_v": 2.0}"#).unwrap_err().to_string();
        assert!(err.contains("lamda_v"), "{err}");
        assert!(serde_json::from_str::<VicConfig>(r#"{"weighting": "Balanced"}"#).is_err());
        let back: VicConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn validation_names_the_field_and_the_fix() {
        let base = VicConfig::default();
        let cases: Vec<(VicConfig, &str)> = vec![
            (VicConfig { lambda_v: -1.0, ..base.clone() }, "lambda_v"),
            (VicConfig { lambda_i: f64::NAN, ..base.clone() }, "lambda_i"),
            (VicConfig { lambda_c: -0.1, ..base.clone() }, "lambda_c"),
            (VicConfig { gamma: -1.0, ..base.clone() }, "gamma"),
            (VicConfig { epsilon: 0.0, ..base.clone() }, "epsilon"),
            (VicConfig { alpha: 2.0, ..base.clone() }, "alpha"),
            (VicConfig { min_weight: 0.0, ..base.clone() }, "min_weight"),
            (VicConfig { min_weight: 5.0, max_weight: 1.0, ..base.clone() }, "max_weight"),
            (VicConfig { momentum: 1.0, ..base.clone() }, "momentum"),
            (VicConfig { momentum: -0.1, ..base.clone() }, "momentum"),
            (
                VicConfig { weighting: VicWeighting::Balanced, lambda_c: 20.0, ..base.clone() },
                "lambda_c",
            ),
            (
                VicConfig { weighting: VicWeighting::Balanced, lambda_v: 0.0, ..base.clone() },
                "lambda_v",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(field) && (message.contains("use") || message.contains("change")),
                "{message}"
            );
            assert_eq!(field_of(err), field);
        }
        // λ = 0 disables a term under fixed weighting, and is allowed there.
        VicConfig { lambda_i: 0.0, ..base }.validate().unwrap();
    }
}
