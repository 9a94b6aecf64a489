//! Initialisation helpers that reproduce PyTorch's defaults where Burn's differ.
use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;

/// A conv layer whose weight is drawn from `weight_init` and whose bias (if any) keeps PyTorch's
/// default `U(±1/sqrt(fan_in))` — Burn would otherwise draw the bias from the weight's initialiser.
pub(crate) fn conv2d<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    weight_init: Initializer,
    device: &B::Device,
) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
        .with_bias(false)
        .with_initializer(weight_init)
        .init(device);
    if bias {
        let bound = 1.0 / ((channels[0] * kernel * kernel) as f64).sqrt();
        let init = Initializer::Uniform { min: -bound, max: bound };
        conv.bias = Some(init.init::<B, 1, _>([channels[1]], device));
    }
    conv
}

/// `Normal(0, std)` as a Burn initialiser.
pub(crate) fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}
