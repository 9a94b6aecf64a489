//! What `memory.precision` means, in one place, for every fsct crate.
//!
//! - [`Precision`] (`policy.rs`): the policy. Its methods answer every question the crates ask of
//!   a precision: the master dtype (the backend's float type, in which parameters and optimizer
//!   state live), the compute dtype (forward and backward), whether a per-step compute copy is
//!   needed ([`Precision::compute_copy`]), which layers stay f32 ([`Precision::keeps_f32`] by
//!   [`LayerKind`]) and whether the loss is scaled ([`Precision::loss_scaling`]).
//! - [`to_dtype`] / [`to_f32`] (`cast.rs`): the one cast helper, a no-op when the tensor already
//!   has the dtype. The model crates and VIC use it around their numerically fragile parts
//!   (norms, softmax and cosine normalisations, the loss, VIC's reductions), whatever the
//!   activations' dtype.
//! - [`NormLayers`] / [`NormLayer`] (`norm_layers.rs`): normalisation layers named by type (Burn's
//!   `BatchNorm` and `LayerNorm`), implemented by each model type next to its definition crate.
//! - [`half_copy`] (`copy.rs`): mixed precision's compute copy of a model, rebuilt every step, with
//!   the layers [`Precision::keeps_f32`] names left on the f32 master parameters.
//!
//! Depends on Burn (and serde for the config value) only, so the model crates, `fsct-vic` and
//! `fsct-train` all sit above it without depending on each other. Generic over `B: Backend`.

mod cast;
mod copy;
mod norm_layers;
mod policy;

pub use cast::{to_dtype, to_f32};
pub use copy::half_copy;
pub use norm_layers::{NormLayer, NormLayers};
pub use policy::{LayerKind, Precision};
