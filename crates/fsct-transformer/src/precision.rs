//! Keeps numerically fragile reductions in f32 when the model computes in half precision.
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// `x` as f32 (a no-op when it already is).
pub(crate) fn f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}

/// `x` back in `dtype` (a no-op when it already is).
pub(crate) fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    match dtype {
        d if d == x.dtype() => x,
        DType::F16 => x.cast(FloatDType::F16),
        DType::BF16 => x.cast(FloatDType::BF16),
        DType::F64 => x.cast(FloatDType::F64),
        _ => x.cast(FloatDType::F32),
    }
}

/// LayerNorm computed in f32 whatever the activations' dtype (its parameters stay f32 under
/// mixed precision), returned in the input's dtype. Under pure half precision (`Cuda<f16>`,
/// `Vulkan<f16>`) the parameters themselves are half: they are cast too (differentiably), since
/// GPU kernels would read half values as f32 in a mixed op.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    norm: &burn::nn::LayerNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if norm.gamma.val().dtype() == DType::F32 {
        return to_dtype(norm.forward(f32(x)), dtype);
    }
    let norm = norm.clone().map(&mut ToF32);
    to_dtype(norm.forward(f32(x)), dtype)
}

/// Casts every float parameter to f32.
struct ToF32;

impl<B: Backend> burn::module::ModuleMapper<B> for ToF32 {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        param.map(f32)
    }
}
