//! Dtype handling: the terms are always computed in f32.
//!
//! [`to_f32`] is the workspace's one cast helper (`fsct_precision`), the same the model crates
//! cast with. f16/bf16 embeddings (mixed precision) are widened so sums over thousands of
//! dimensions do not lose precision or overflow; f64 is narrowed so every term and the total share
//! one dtype (f32) regardless of the model's precision. The cast is differentiable: gradients
//! flow back in the input's dtype.

pub(crate) use fsct_precision::to_f32;
