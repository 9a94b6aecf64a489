//! Dtype handling: the terms are always computed in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// Casts to f32 unless already f32. f16/bf16 embeddings (mixed precision) are widened so sums over
/// thousands of dimensions do not lose precision or overflow; f64 is narrowed so every term and
/// the total share one dtype (f32) regardless of the model's precision. The cast is differentiable:
/// gradients flow back in the input's dtype.
pub(crate) fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}
