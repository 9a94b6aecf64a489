//! VIC regularization (variance, invariance, covariance; after VICReg, Bardes et al. 2022) for
//! few-shot episodes, as decided in issue 3.
//!
//! The trainer adds [`VicTerms::total`] to the FS-CT loss when `use_vic` is on. The terms are
//! computed on the **live** backbone embeddings of an episode (support `[N, K, d]`, query
//! `[Q, d]`), so VIC shapes the backbone's gradients; unlike the reference fork, nothing is
//! detached before the terms are taken.
//!
//! - [`vic_terms`] computes the variance, invariance and covariance terms and their weighted
//!   total, in f32 whatever the model's dtype ([`try_vic_terms`] returns bad input as an error).
//! - The covariance term never builds the d×d matrix when an episode has fewer rows than
//!   dimensions: it uses the n×n Gram matrix ([`CovarianceMode`], [`covariance_term`]); see
//!   `benches/covariance.rs` and the README for the memory this saves at d = 25088.
//! - [`VicState`] holds the current λs and EMAs of the terms and λs in plain `f64`s (no graph),
//!   is serializable for checkpoints, and implements the optional balanced weighting
//!   ([`VicWeighting`]). The λs are plain scalars, never optimizer parameters.
//!
//! A training step:
//! ```
//! # use burn::backend::{Autodiff, Flex};
//! # use burn::tensor::Tensor;
//! use fsct_vic::{vic_terms, VicConfig, VicState};
//! # type B = Autodiff<Flex>;
//! let config = VicConfig::default();
//! config.validate()?;
//! let mut state = VicState::new(&config);
//! # let device = Default::default();
//! // Embeddings straight from the backbone (not detached).
//! let support = Tensor::<B, 3>::ones([5, 2, 64], &device);
//! let query = Tensor::<B, 2>::ones([10, 64], &device);
//! let terms = vic_terms(support, query, state.lambdas(), &config);
//! let loss = terms.total.clone(); // + the classification loss
//! let _grads = loss.backward();
//! let logged = state.update(&terms, &config); // plain f64s for the log
//! assert_eq!(state.steps, 1);
//! # assert!(logged.total.is_finite());
//! # Ok::<(), fsct_vic::VicError>(())
//! ```
//!
//! Generic over `B: Backend`; depends on nothing but Burn and `fsct-precision` (the workspace's
//! cast helper, `precision.rs`), so it sits beside the model crates and only `fsct-train` uses it.

mod config;
mod covariance;
mod error;
mod precision;
mod state;
mod terms;
mod values;

#[cfg(test)]
mod reference;

pub use config::{CovarianceMode, VicConfig, VicWeighting};
pub use covariance::{covariance_term, CovarianceForm};
pub use error::VicError;
pub use state::VicState;
pub use terms::{invariance_term, try_vic_terms, variance_term, vic_terms, VicTerms};
pub use values::VicValues;
