//! Typed errors for bad configuration and bad input tensors.

use thiserror::Error;

/// Everything that can go wrong in this crate. Each message names the field or input and the fix.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VicError {
    /// A [`VicConfig`](crate::VicConfig) field holds an impossible value.
    #[error("invalid VIC config: `{field}` = {value}: {fix}")]
    InvalidConfig {
        /// The config field, as spelled in the config file (e.g. `lambda_v`).
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What to change.
        fix: String,
    },
    /// The support and query embeddings do not fit together.
    #[error("VIC input: {what}: {fix}")]
    BadInput {
        /// What is wrong, with the shapes involved.
        what: String,
        /// What to change.
        fix: String,
    },
    /// A term was NaN or infinite; the running state was left unchanged.
    #[error("VIC running state: the {term} term is {value}, not finite; the update was skipped (lower the learning rate or check the embeddings for NaN)")]
    NonFinite {
        /// `variance`, `invariance`, `covariance` or `total`.
        term: &'static str,
        /// The value read back.
        value: f64,
    },
}
