//! The one cast helper: every dtype change fsct makes for precision reasons goes through here.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// `x` in the float dtype `dtype`; a no-op (no graph node) when it already is.
///
/// The cast is differentiable: gradients flow back in `x`'s dtype. `dtype` is taken as a
/// [`DType`] (what [`Tensor::dtype`] returns, so "back to the input's dtype" reads
/// `to_dtype(y, x_dtype)`) or a [`FloatDType`]; a dtype other than f16, bf16 or f64 means f32.
pub fn to_dtype<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dtype: impl Into<DType>,
) -> Tensor<B, D> {
    let dtype = dtype.into();
    if x.dtype() == dtype {
        return x;
    }
    x.cast(match dtype {
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    })
}

/// `x` in f32 ([`to_dtype`] to f32): what norms, softmax and cosine normalisations, the loss and
/// VIC's reductions compute in whatever the model's precision. f16/bf16 is widened (sums over
/// many elements neither lose precision nor overflow); f64 is narrowed, so every such result
/// shares one dtype.
pub fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    to_dtype(x, DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type AD = Autodiff<Flex>;

    #[test]
    fn casts_are_differentiable_and_no_ops_at_the_same_dtype() {
        let device = Default::default();
        let x = Tensor::<AD, 1>::from_floats([1.5, -2.0], &device).require_grad();
        let half = to_dtype(x.clone(), FloatDType::F16);
        assert_eq!(half.dtype(), DType::F16);
        assert_eq!(to_dtype(half.clone(), DType::F16).dtype(), DType::F16);
        let back = to_f32(half);
        assert_eq!(back.dtype(), DType::F32);
        let grads = back.mul_scalar(3.0).sum().backward();
        let g = x.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
        assert_eq!(g, vec![3.0, 3.0]);
        // Not a float dtype: f32.
        assert_eq!(
            to_dtype(x.clone().inner().cast(FloatDType::F16), DType::I32).dtype(),
            DType::F32
        );
    }
}
