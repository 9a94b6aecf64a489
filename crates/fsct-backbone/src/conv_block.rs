#![allow(non_snake_case)] // `C` and `BN` mirror the reference checkpoint keys.
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;

use crate::fused::{batch_norm_relu_pool, Pool};
use crate::init::{conv2d, normal};
use burn::nn::conv::Conv2d;

/// Configuration of a [`ConvBlock`]: 3×3 conv (with bias) → BatchNorm → ReLU → optional 2×2
/// max-pool, the building block of every Conv* backbone (spec §1.1).
#[derive(Config, Debug)]
pub struct ConvBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Whether a 2×2, stride-2 max-pool (floor) follows the ReLU.
    #[config(default = true)]
    pub pool: bool,
    /// Zero padding of the 3×3 conv: 1 normally, 0 in the first two blocks of the NP variants.
    #[config(default = 1)]
    pub padding: usize,
}

/// One conv block. The fields are named `C` and `BN` as in the reference so that checkpoint keys
/// (`trunk.{i}.C.weight`, `trunk.{i}.BN.running_mean`, …) map 1:1.
#[derive(Module, Debug)]
#[allow(non_snake_case)]
pub struct ConvBlock<B: Backend> {
    /// The 3×3 convolution, with bias.
    pub C: Conv2d<B>,
    /// Batch normalisation (eps 1e-5, momentum 0.1).
    pub BN: BatchNorm<B>,
    /// Whether a 2×2 max-pool follows.
    #[module(skip)]
    pub pool: bool,
    /// Conv padding.
    #[module(skip)]
    pub padding: usize,
}

impl ConvBlockConfig {
    /// Initialises the block as the reference does: conv weight ~ N(0, sqrt(2 / (3·3·out))) — the
    /// fan uses the *output* channels, even in the first layer — conv bias ~ U(±1/sqrt(fan_in)),
    /// BN γ = 1, β = 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvBlock<B> {
        let std = (2.0 / (9.0 * self.out_channels as f64)).sqrt();
        ConvBlock {
            C: conv2d(
                [self.in_channels, self.out_channels],
                3,
                1,
                self.padding,
                true,
                normal(std),
                device,
            ),
            BN: BatchNormConfig::new(self.out_channels).init(device),
            pool: self.pool,
            padding: self.padding,
        }
    }
}

impl<B: Backend> ConvBlock<B> {
    /// # Shapes
    /// - `x`: `[n, in_channels, h, w]`
    /// - output: `[n, out_channels, h', w']`, see [`ConvBlock::output_size`]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("conv_block", pool = self.pool).entered();
        let pool = if self.pool { Pool::Max2x2 } else { Pool::Off };
        batch_norm_relu_pool(&self.BN, self.C.forward(x), pool)
    }

    /// Spatial size after this block for an input side of `side` pixels (`None` if it vanishes).
    pub fn output_size(&self, side: usize) -> Option<usize> {
        let conv = (side + 2 * self.padding).checked_sub(2).filter(|&s| s > 0)?;
        if self.pool {
            Some(conv / 2).filter(|&s| s > 0)
        } else {
            Some(conv)
        }
    }
}
