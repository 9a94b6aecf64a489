//! The transformer under half precision: LayerNorm computed in f32 ([`layer_norm`]), and the
//! transformer's norm layers named by type for the precision policy (`fsct_precision::NormLayers`,
//! which the mixed-precision compute copy uses to leave them on the f32 master parameters). The
//! casts around softmax, cosine normalisations and the loss are `fsct_precision`'s
//! `to_f32`/`to_dtype`, used where those are computed.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DType;
use fsct_precision::{to_dtype, to_f32, NormLayer, NormLayers};

use crate::{Attention, Ctx, FeedForward, FewShotTransformer, OutputHead, PreNormLinear};

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
        return to_dtype(norm.forward(to_f32(x)), dtype);
    }
    let norm = norm.clone().map(&mut ToF32);
    to_dtype(norm.forward(to_f32(x)), dtype)
}

/// Casts every float parameter to f32.
struct ToF32;

impl<B: Backend> ModuleMapper<B> for ToF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(to_f32)
    }
}

// The transformer's normalisation layers, by type: every `LayerNorm` field of every module of
// this crate, and the backbone's through `F`.

impl<B: Backend> NormLayers<B> for PreNormLinear<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.norm.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for Attention<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.input_linear.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for FeedForward<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.norm.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for OutputHead<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.norm.for_each_norm(visit);
    }
}

impl<B: Backend, F: Module<B> + NormLayers<B>> NormLayers<B> for FewShotTransformer<B, F> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.feature.for_each_norm(visit);
        self.ATTN.for_each_norm(visit);
        self.FFN.for_each_norm(visit);
        self.linear.for_each_norm(visit);
    }
}

impl<B: Backend, F: Module<B> + NormLayers<B>> NormLayers<B> for Ctx<B, F> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        // The 1×1 projection has no norm: only the backbone's.
        self.feature.for_each_norm(visit);
    }
}
