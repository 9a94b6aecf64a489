use burn::prelude::*;

use crate::backbone::Backbone;
use crate::conv_block::{ConvBlock, ConvBlockConfig};
use crate::segments::SegmentLevel;

/// Configuration of the Conv* family (spec §1.2).
///
/// | name | `depth` | `no_pool` | `single_channel` |
/// |---|---|---|---|
/// | Conv4 / Conv6 | 4 / 6 | false | false |
/// | Conv4NP / Conv6NP | 4 / 6 | true | false |
/// | Conv4S / Conv6S | 4 / 6 | false | true |
/// | Conv4SNP / Conv6SNP | 4 / 6 | true | true |
#[derive(Config, Debug)]
pub struct ConvNetConfig {
    /// Number of conv blocks (4 or 6 in the reference; any depth ≥ 1 works).
    #[config(default = 4)]
    pub depth: usize,
    /// The "NP" layout: max-pool only after blocks 0 and 1, whose convs have no padding.
    /// Otherwise blocks 0–3 pool and every conv pads by 1.
    #[config(default = false)]
    pub no_pool: bool,
    /// The "S" layout: one input channel, taken as channel 0 of the (normalised RGB) input.
    #[config(default = false)]
    pub single_channel: bool,
    /// Width of every block.
    #[config(default = 64)]
    pub width: usize,
}

/// A stack of [`ConvBlock`]s. The field is named `trunk` as in the reference, so its keys are
/// `trunk.{i}.C.*` and `trunk.{i}.BN.*`.
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    /// The blocks, in order.
    pub trunk: Vec<ConvBlock<B>>,
    /// Whether only channel 0 of the input is used.
    #[module(skip)]
    pub single_channel: bool,
    /// Output channels of every block.
    #[module(skip)]
    pub width: usize,
}

impl ConvNetConfig {
    /// Conv4 (`depth` 4) or Conv6 (`depth` 6) with the reference layout.
    pub fn conv(depth: usize) -> Self {
        Self::new().with_depth(depth)
    }

    /// Builds the network with the reference initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvNet<B> {
        let in_channels = if self.single_channel { 1 } else { 3 };
        let trunk = (0..self.depth)
            .map(|i| {
                let (pool, padding) =
                    if self.no_pool { (i < 2, if i < 2 { 0 } else { 1 }) } else { (i < 4, 1) };
                let cin = if i == 0 { in_channels } else { self.width };
                ConvBlockConfig::new(cin, self.width)
                    .with_pool(pool)
                    .with_padding(padding)
                    .init(device)
            })
            .collect();
        ConvNet { trunk, single_channel: self.single_channel, width: self.width }
    }
}

impl<B: Backend> ConvNet<B> {
    /// # Shapes
    /// - `images`: `[n, 3, h, w]` (or `[n, 1, h, w]` for the S variants)
    /// - output: `[n, width, h', w']` as given by [`Backbone::feature_shape`]
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("convnet", blocks = self.trunk.len()).entered();
        crate::flex_kernels::warn_if_stock_flex::<B>();
        let mut x = if self.single_channel { images.narrow(1, 0, 1) } else { images };
        for block in &self.trunk {
            x = block.forward(x);
        }
        x
    }

    /// The side length after all blocks for a square or rectangular input side, or `None` when
    /// the input is too small for this depth.
    pub fn output_side(&self, side: usize) -> Option<usize> {
        self.trunk.iter().try_fold(side, |s, block| block.output_size(s))
    }
}

impl<B: Backend> Backbone<B> for ConvNet<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward(images)
    }

    fn feature_shape(&self, input: [usize; 3]) -> [usize; 3] {
        let width = if self.trunk.is_empty() { input[0] } else { self.width };
        let h = self.output_side(input[1]).unwrap_or(0);
        let w = self.output_side(input[2]).unwrap_or(0);
        [width, h, w]
    }

    /// One segment per block at either level (a ConvNet has no stages); the S variants' channel
    /// selection runs in the first.
    fn segment_count(&self, _level: SegmentLevel) -> usize {
        self.trunk.len().max(1)
    }

    fn forward_segment(&self, _level: SegmentLevel, index: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if index == 0 && self.single_channel { x.narrow(1, 0, 1) } else { x };
        match self.trunk.get(index) {
            Some(block) => {
                let _span = tracing::trace_span!("convnet.block", index).entered();
                block.forward(x)
            }
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackboneName;
    use burn::backend::Flex;

    type B = Flex;

    /// (name, feature shape at 84 px, at 224 px), from the reference (spec §1.2, §1.6).
    const CASES: [(&str, [usize; 3], [usize; 3]); 8] = [
        ("Conv4", [64, 5, 5], [64, 14, 14]),
        ("Conv6", [64, 5, 5], [64, 14, 14]),
        ("Conv4NP", [64, 19, 19], [64, 54, 54]),
        ("Conv6NP", [64, 19, 19], [64, 54, 54]),
        ("Conv4S", [64, 5, 5], [64, 14, 14]),
        ("Conv6S", [64, 5, 5], [64, 14, 14]),
        ("Conv4SNP", [64, 19, 19], [64, 54, 54]),
        ("Conv6SNP", [64, 19, 19], [64, 54, 54]),
    ];

    #[test]
    fn feature_shapes_match_the_reference_and_the_real_output() {
        let device = Default::default();
        for (name, at84, at224) in CASES {
            let net = name.parse::<BackboneName>().unwrap().init::<B>(&device);
            assert_eq!(net.feature_shape([3, 84, 84]), at84, "{name} at 84 px");
            assert_eq!(net.feature_shape([3, 224, 224]), at224, "{name} at 224 px");
            for side in [84, 224] {
                let out = net.features(Tensor::<B, 4>::zeros([1, 3, side, side], &device));
                let [_, c, h, w] = out.dims();
                assert_eq!(
                    [c, h, w],
                    net.feature_shape([3, side, side]),
                    "{name} forward at {side} px"
                );
            }
        }
        // CIFAR (64 px) gives 4×4 and the S nets at 28 px give 1×1 (d = 64).
        let conv4 = ConvNetConfig::conv(4).init::<B>(&device);
        assert_eq!(conv4.feature_dim([3, 64, 64]), 1024);
        let conv4s = ConvNetConfig::conv(4).with_single_channel(true).init::<B>(&device);
        assert_eq!(conv4s.feature_dim([1, 28, 28]), 64);
    }

    #[test]
    fn parameter_counts_match_the_reference() {
        let device = Default::default();
        // Burn counts BatchNorm running statistics too (2 × 64 per block); PyTorch's figure doesn't.
        let running_stats = 4 * 2 * 64;
        let conv4 = ConvNetConfig::conv(4).init::<B>(&device);
        assert_eq!(conv4.num_params() - running_stats, 113_088);
        let conv4snp =
            ConvNetConfig::conv(4).with_no_pool(true).with_single_channel(true).init::<B>(&device);
        assert_eq!(conv4snp.num_params() - running_stats, 111_936);
    }

    #[test]
    fn single_channel_nets_use_only_channel_zero() {
        let device = Default::default();
        let net = ConvNetConfig::conv(4).with_single_channel(true).init::<B>(&device);
        let x =
            Tensor::<B, 4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let noise =
            Tensor::<B, 4>::random([2, 2, 28, 28], burn::tensor::Distribution::Default, &device);
        let a = net.forward(Tensor::cat(vec![x.clone(), noise], 1));
        let b = net.forward(Tensor::cat(vec![x.clone(), x.clone(), x], 1));
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    }

    #[test]
    fn conv_init_follows_the_reference() {
        let device = Default::default();
        let net = ConvNetConfig::conv(4).init::<B>(&device);
        // Weight ~ N(0, sqrt(2 / (9·64))) ≈ 0.0589 in every block, bias within ±1/sqrt(fan_in).
        let w: Vec<f32> = net.trunk[1].C.weight.val().into_data().to_vec().unwrap();
        let std = (w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - (2.0f64 / 576.0).sqrt()).abs() < 0.003, "std {std}");
        let b: Vec<f32> = net.trunk[0].C.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
        let bound = 1.0 / 27f32.sqrt();
        assert!(b.iter().all(|x| x.abs() <= bound) && b.iter().any(|x| x.abs() > bound / 2.0));
    }

    #[test]
    fn too_small_inputs_give_an_empty_map_instead_of_a_panic() {
        let device = Default::default();
        let net = ConvNetConfig::conv(4).init::<B>(&device);
        assert_eq!(net.feature_dim([3, 8, 8]), 0);
    }
}
