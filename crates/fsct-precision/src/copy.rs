//! Mixed precision's compute copy of a model.
//!
//! Burn 0.21 has no autocast. Each step, [`half_copy`] maps the f32 model to a copy whose float
//! parameters are cast to f16/bf16; the cast is differentiable, so gradients land on the f32
//! master parameters. The copy is rebuilt every step (a reused copy silently drops gradients).

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::{to_dtype, LayerKind, NormLayers, Precision};

/// A copy of `model` for mixed precision in `dtype` ([`Precision::mixed`]): the parameters of
/// layers the policy computes in half are cast to `dtype`; those of layers it keeps in f32
/// ([`Precision::keeps_f32`]: the normalisation layers, found by type through [`NormLayers`])
/// are the master's own. Linked to the original by the autodiff graph: gradients flow back to
/// the f32 parameters.
pub fn half_copy<B: Backend, M: Module<B> + NormLayers<B>>(model: &M, dtype: FloatDType) -> M {
    let policy = Precision::mixed(dtype);
    let mut kept = HashSet::new();
    model.for_each_norm(&mut |layer| {
        if policy.keeps_f32(layer.kind()) {
            kept.extend(layer.param_ids());
        }
    });
    let cast_others = !policy.keeps_f32(LayerKind::Other);
    model.clone().map(&mut CastExcept { dtype, kept, cast_others })
}

/// Casts float parameters to `dtype`, except the `kept` ones.
struct CastExcept {
    dtype: FloatDType,
    kept: HashSet<ParamId>,
    cast_others: bool,
}

impl<B: Backend> ModuleMapper<B> for CastExcept {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.cast_others || self.kept.contains(&param.id) {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| to_dtype(t, dtype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::tensor::DType;

    type AD = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        linear: Linear<B>,
        bn: BatchNorm<B>,
        ln: Vec<LayerNorm<B>>,
    }

    impl<B: Backend> NormLayers<B> for Net<B> {
        fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(crate::NormLayer<'a, B>)) {
            self.bn.for_each_norm(visit);
            self.ln.for_each_norm(visit);
        }
    }

    #[test]
    fn norm_layers_stay_f32_and_gradients_reach_the_master() {
        let device = Default::default();
        let net = Net::<AD> {
            linear: LinearConfig::new(3, 3).init(&device),
            bn: BatchNormConfig::new(3).init(&device),
            ln: vec![LayerNormConfig::new(3).init(&device)],
        };
        // Burn draws a parameter lazily, at its first use: a copy made before would draw its own.
        let _ = net.linear.weight.val();
        let copy = half_copy(&net, FloatDType::F16);
        assert_eq!(copy.linear.weight.val().dtype(), DType::F16);
        assert_eq!(copy.bn.gamma.val().dtype(), DType::F32);
        assert_eq!(copy.bn.running_mean.value().dtype(), DType::F32);
        assert_eq!(copy.ln[0].gamma.val().dtype(), DType::F32);
        let x = Tensor::<AD, 2>::ones([2, 3], &device).cast(FloatDType::F16);
        let y = crate::to_f32(copy.linear.forward(x)).sum();
        let grads = y.backward();
        let g = net.linear.weight.grad(&grads).expect("the master's weight has a gradient");
        assert_eq!(g.dtype(), DType::F32);
    }
}
