//! VIC regularization (variance, invariance, covariance; after VICReg, Bardes et al. 2022) for
//! few-shot episodes, as decided in issue 3.
//!
//! The trainer adds [`VicTerms::total`] to the FS-CT loss when `use_vic` is on. The terms are
//! computed on the **live** backbone embeddings of an episode (support `[N, K, d]`, query
//! `[Q, d]`), so VIC shapes the backbone's gradients; unlike the reference fork, nothing is
//! detached before the terms are taken.
//!
//! - [`vic_terms`] (or [`VicRegularizer::forward`]) computes the variance, invariance and
//!   covariance terms and their weighted total, in f32 whatever the model's dtype.
//! - The covariance term never builds the d×d matrix when an episode has fewer rows than
//!   dimensions: it uses the n×n Gram matrix ([`CovarianceMode`], [`covariance_term`]); see
//!   `benches/covariance.rs` and the README for the memory this saves at d = 25088.
//! - [`VicState`] holds the current λs and EMAs of the terms in plain `f64`s (no graph), is
//!   serializable for checkpoints, and implements the optional balanced weighting. The λs are
//!   plain scalars, never optimizer parameters.
//!
//! Generic over `B: Backend`; depends on nothing but Burn, so it sits beside the model crates and
//! only `fsct-train` uses it.

mod config;
mod covariance;
mod error;
mod precision;
mod regularizer;
mod state;
mod terms;
mod values;

#[cfg(test)]
mod reference;

pub use config::{CovarianceMode, VicConfig, Weighting};
pub use covariance::{covariance_term, CovarianceForm};
pub use error::VicError;
pub use regularizer::VicRegularizer;
pub use state::VicState;
pub use terms::{invariance_term, variance_term, vic_terms, VicTerms};
pub use values::{VicValues, VicWeights};
