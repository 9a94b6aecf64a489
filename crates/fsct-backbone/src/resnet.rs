use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};

use crate::backbone::Backbone;
use crate::fused::{
    batch_norm_add_relu, batch_norm_relu, batch_norm_relu_conv, conv_batch_norm_relu_pool, Pool,
};
use crate::init::{conv2d, normal};
use crate::norm::{batch_norm, BatchNormMode};
use crate::segments::SegmentLevel;

/// The stem (and head) layout of a [`ResNet`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ResNetStem {
    /// The reference's "FETI" ResNet (spec §1.4): 5×5 stride-2 conv with padding 1, no max-pool,
    /// and an adaptive average pool to 7×7, so the output is `[512, 7, 7]` for any input size.
    Feti,
    /// torchvision's ResNet (spec §1.5): 7×7 stride-2 conv with padding 3, then a 3×3 stride-2
    /// max-pool; no final pool, so the output is `[512, ⌈h/32⌉, ⌈w/32⌉]`.
    TorchVision,
}

/// Configuration of a [`ResNet`] of BasicBlocks (widths 64/128/256/512 by default, strides
/// 1/2/2/2).
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// BasicBlocks per stage: `[2,1,1,1]` ResNet12, `[2,2,2,2]` ResNet18, `[3,4,6,3]` ResNet34.
    pub blocks: [usize; 4],
    /// The stem's width; the stages are `base_width`·{1, 2, 4, 8} wide. The reference's (and
    /// torchvision's) 64 is the default; a smaller one gives the same layout and parameter names
    /// at a fraction of the size (fsct's pretrained-weight fixtures use 8).
    #[config(default = 64)]
    pub base_width: usize,
    /// The stem layout.
    #[config(default = "ResNetStem::Feti")]
    pub stem: ResNetStem,
    /// How the BatchNorms normalise. The reference's torchvision ResNets use
    /// [`BatchNormMode::BatchStatistics`] (their BNs never leave train mode).
    #[config(default = "BatchNormMode::Standard")]
    pub batch_norm: BatchNormMode,
}

impl ResNetConfig {
    /// FETI ResNet12 (`[2,1,1,1]`).
    pub fn resnet12_feti() -> Self {
        Self::new([2, 1, 1, 1])
    }
    /// FETI ResNet18 (`[2,2,2,2]`).
    pub fn resnet18_feti() -> Self {
        Self::new([2, 2, 2, 2])
    }
    /// FETI ResNet34 (`[3,4,6,3]`).
    pub fn resnet34_feti() -> Self {
        Self::new([3, 4, 6, 3])
    }
    /// torchvision ResNet18, BatchNorm on batch statistics as in the reference.
    pub fn resnet18_torchvision() -> Self {
        Self::new([2, 2, 2, 2])
            .with_stem(ResNetStem::TorchVision)
            .with_batch_norm(BatchNormMode::BatchStatistics)
    }
    /// torchvision ResNet34, BatchNorm on batch statistics as in the reference.
    pub fn resnet34_torchvision() -> Self {
        Self::new([3, 4, 6, 3])
            .with_stem(ResNetStem::TorchVision)
            .with_batch_norm(BatchNormMode::BatchStatistics)
    }

    /// Builds the network: convs ~ kaiming normal (fan_out, ReLU gain), no conv bias, BN γ 1 β 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let (kernel, padding) = match self.stem {
            ResNetStem::Feti => (5, 1),
            ResNetStem::TorchVision => (7, 3),
        };
        let base = self.base_width;
        let mut in_channels = base;
        let mut stage = |index: usize| {
            let width = base << index;
            let stride = if index == 0 { 1 } else { 2 };
            let blocks: Vec<BasicBlock<B>> = (0..self.blocks[index])
                .map(|j| {
                    let block = BasicBlock::new(
                        in_channels,
                        width,
                        if j == 0 { stride } else { 1 },
                        self.batch_norm,
                        device,
                    );
                    in_channels = width;
                    block
                })
                .collect();
            blocks
        };
        let layer1 = stage(0);
        let layer2 = stage(1);
        let layer3 = stage(2);
        let layer4 = stage(3);
        ResNet {
            conv1: kaiming_conv(3, base, kernel, 2, padding, device),
            bn1: BatchNormConfig::new(base).init(device),
            layer1,
            layer2,
            layer3,
            layer4,
            stem: self.stem,
            batch_norm: self.batch_norm,
            base_width: base,
        }
    }
}

fn kaiming_conv<B: Backend>(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &B::Device,
) -> Conv2d<B> {
    // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (cout·k·k)).
    let std = (2.0 / (cout * kernel * kernel) as f64).sqrt();
    conv2d([cin, cout], kernel, stride, padding, false, normal(std), device)
}

/// The shortcut projection of a [`BasicBlock`]: 1×1 conv (no bias) + BatchNorm. The reference
/// names these `downsample.0` and `downsample.1`; the importer maps them to `conv` and `bn`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1×1 strided convolution.
    pub conv: Conv2d<B>,
    /// Its BatchNorm.
    pub bn: BatchNorm<B>,
}

/// conv3x3 → BN → ReLU → conv3x3 → BN, plus the identity or a [`Downsample`], then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First 3×3 conv (carries the stride).
    pub conv1: Conv2d<B>,
    /// First BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Second 3×3 conv.
    pub conv2: Conv2d<B>,
    /// Second BatchNorm.
    pub bn2: BatchNorm<B>,
    /// Present where the stride or the width changes.
    pub downsample: Option<Downsample<B>>,
    /// How the BatchNorms normalise.
    #[module(skip)]
    pub batch_norm: BatchNormMode,
}

impl<B: Backend> BasicBlock<B> {
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        mode: BatchNormMode,
        device: &B::Device,
    ) -> Self {
        let downsample = (stride != 1 || cin != cout).then(|| Downsample {
            conv: kaiming_conv(cin, cout, 1, stride, 0, device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        Self {
            conv1: kaiming_conv(cin, cout, 3, stride, 1, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: kaiming_conv(cout, cout, 3, 1, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            downsample,
            batch_norm: mode,
        }
    }

    /// # Shapes
    /// - `x`: `[n, cin, h, w]`
    /// - output: `[n, cout, ⌈h/stride⌉, ⌈w/stride⌉]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mode = self.batch_norm;
        // The ReLU output between the two convolutions is not kept on Flex (recomputed in the
        // backward pass from conv1's output, which the batch norm keeps anyway).
        let out = batch_norm_relu_conv(&self.bn1, self.conv1.forward(x.clone()), &self.conv2, mode);
        let shortcut = match &self.downsample {
            Some(d) => batch_norm(&d.bn, shortcut_conv(&d.conv, x), mode),
            None => x,
        };
        batch_norm_add_relu(&self.bn2, out, shortcut, mode)
    }
}

/// The shortcut's 1×1 convolution with stride `s`. Off Flex it runs as the same function in two
/// steps — keep every `s`-th row and column, then a 1×1 convolution with stride 1 — because
/// burn-cubecl 0.21 (CUDA, Vulkan; its direct transposed convolution, used without autotune)
/// returns a zero input gradient for a convolution whose kernel is smaller than its stride: the
/// shortcut's gradient was silently dropped on every GPU. On Flex the strided convolution is
/// exact and stays as it was.
fn shortcut_conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [sh, sw] = conv.stride;
    let plain = conv.kernel_size == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0));
    if (sh == 1 && sw == 1) || !plain || crate::fused::is_flex::<B>() {
        return conv.forward(x);
    }
    let [n, c, h, w] = x.dims();
    let x = x.slice(s![0..n, 0..c, 0..h;sh as isize, 0..w;sw as isize]);
    burn::tensor::module::conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    )
}

/// A ResNet of [`BasicBlock`]s with reference parameter names (`conv1`, `bn1`,
/// `layer{1..4}.{j}.conv1`, …).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// Stem convolution (5×5 FETI, 7×7 torchvision), no bias.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stage 1, width 64 (`base_width`), stride 1.
    pub layer1: Vec<BasicBlock<B>>,
    /// Stage 2, width 128 (2·`base_width`), stride 2.
    pub layer2: Vec<BasicBlock<B>>,
    /// Stage 3, width 256 (4·`base_width`), stride 2.
    pub layer3: Vec<BasicBlock<B>>,
    /// Stage 4, width 512 (8·`base_width`), stride 2.
    pub layer4: Vec<BasicBlock<B>>,
    /// The stem layout.
    #[module(skip)]
    pub stem: ResNetStem,
    /// How the stem BatchNorm normalises (the blocks carry their own copy).
    #[module(skip)]
    pub batch_norm: BatchNormMode,
    /// The stem's width ([`ResNetConfig::base_width`]; 64 unless configured).
    #[module(skip)]
    pub base_width: usize,
}

impl<B: Backend> ResNet<B> {
    /// # Shapes
    /// - `images`: `[n, 3, h, w]`
    /// - output: `[n, 512, 7, 7]` (FETI) or `[n, 512, ⌈h/32⌉, ⌈w/32⌉]` (torchvision); 512 is
    ///   8·`base_width`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        crate::flex_kernels::warn_if_stock_flex::<B>();
        let mut x = self.stem_forward(images);
        for (i, stage) in self.stages().into_iter().enumerate() {
            let _span = tracing::trace_span!("resnet.layer", index = i + 1).entered();
            for block in stage {
                x = block.forward(x);
            }
        }
        self.final_pool(x)
    }

    /// The stem: conv1, bn1, ReLU and (torchvision) the max-pool.
    fn stem_forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("resnet.stem").entered();
        match (self.stem, self.batch_norm) {
            // One node on Autodiff<Flex> that keeps the images, not the convolution's output (run
            // again in the backward pass); the fused tail alone on Flex; composed elsewhere.
            (ResNetStem::TorchVision, BatchNormMode::Standard) => {
                conv_batch_norm_relu_pool(&self.conv1, &self.bn1, images, Pool::Max3x3Stride2)
            }
            (ResNetStem::TorchVision, BatchNormMode::BatchStatistics) => max_pool2d(
                batch_norm_relu(&self.bn1, self.conv1.forward(images), self.batch_norm),
                [3, 3],
                [2, 2],
                [1, 1],
                [1, 1],
                false,
            ),
            (ResNetStem::Feti, mode) => {
                batch_norm_relu(&self.bn1, self.conv1.forward(images), mode)
            }
        }
    }

    /// The pool after the last stage (FETI: adaptive average to 7×7; torchvision: none).
    fn final_pool(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.stem {
            ResNetStem::Feti => adaptive_avg_pool2d(x, [7, 7]),
            ResNetStem::TorchVision => x,
        }
    }

    fn stages(&self) -> [&Vec<BasicBlock<B>>; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }

    /// The blocks of segment `index` (after the stem, segment 0) at `level`.
    fn segment_blocks(&self, level: SegmentLevel, index: usize) -> Vec<&BasicBlock<B>> {
        let Some(after_stem) = index.checked_sub(1) else { return Vec::new() };
        match level {
            SegmentLevel::Blocks => {
                self.stages().into_iter().flatten().nth(after_stem).into_iter().collect()
            }
            SegmentLevel::Stages => self
                .stages()
                .into_iter()
                .filter(|stage| !stage.is_empty())
                .nth(after_stem)
                .map_or_else(Vec::new, |stage| stage.iter().collect()),
        }
    }

    /// Freezes every parameter (no gradients, never updated), as the reference's torchvision
    /// backbone is in effect (spec §1.5).
    pub fn freeze(self) -> Self {
        self.no_grad()
    }

    fn width(&self) -> usize {
        let base = self.base_width;
        self.stages().iter().rposition(|s| !s.is_empty()).map_or(base, |i| base << i)
    }
}

/// Output side of a conv/pool with the given kernel, stride and padding (floor), if positive.
fn out_side(side: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (side + 2 * padding).checked_sub(kernel).map(|s| s / stride + 1)
}

impl<B: Backend> Backbone<B> for ResNet<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward(images)
    }

    fn feature_shape(&self, input: [usize; 3]) -> [usize; 3] {
        let side = |s: usize| -> usize {
            let strided_stages =
                [&self.layer2, &self.layer3, &self.layer4].iter().filter(|l| !l.is_empty()).count();
            let stem = match self.stem {
                ResNetStem::Feti => out_side(s, 5, 2, 1),
                ResNetStem::TorchVision => out_side(s, 7, 2, 3).and_then(|s| out_side(s, 3, 2, 1)),
            };
            let Some(stem) = stem else { return 0 };
            let trunk = (0..strided_stages).try_fold(stem, |s, _| out_side(s, 3, 2, 1));
            match (self.stem, trunk) {
                (_, None) => 0,
                (ResNetStem::Feti, Some(_)) => 7,
                (ResNetStem::TorchVision, Some(s)) => s,
            }
        };
        [self.width(), side(input[1]), side(input[2])]
    }

    /// The stem, then each BasicBlock (`Blocks`) or each non-empty stage (`Stages`); the final
    /// pool runs in the last segment.
    fn segment_count(&self, level: SegmentLevel) -> usize {
        let stages = self.stages();
        1 + match level {
            SegmentLevel::Blocks => stages.iter().map(|s| s.len()).sum::<usize>(),
            SegmentLevel::Stages => stages.iter().filter(|s| !s.is_empty()).count(),
        }
    }

    fn forward_segment(&self, level: SegmentLevel, index: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = if index == 0 {
            crate::flex_kernels::warn_if_stock_flex::<B>();
            self.stem_forward(x)
        } else {
            let _span = tracing::trace_span!("resnet.segment", index).entered();
            self.segment_blocks(level, index).into_iter().fold(x, |x, block| block.forward(x))
        };
        if index + 1 == self.segment_count(level) {
            x = self.final_pool(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackboneName, BuiltinBackbone};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type B = Flex;

    #[test]
    fn parameter_counts_match_the_reference() {
        let device = Default::default();
        // Burn also counts BatchNorm running statistics, which PyTorch's figure leaves out.
        let trainable = |net: ResNet<B>| {
            let mut bn_channels = 64;
            for block in net.layer1.iter().chain(&net.layer2).chain(&net.layer3).chain(&net.layer4)
            {
                let width = block.bn1.gamma.val().dims()[0];
                bn_channels += 2 * width + block.downsample.as_ref().map_or(0, |_| width);
            }
            net.num_params() - 2 * bn_channels
        };
        assert_eq!(trainable(ResNetConfig::resnet12_feti().init(&device)), 4_975_168);
        assert_eq!(trainable(ResNetConfig::resnet18_feti().init(&device)), 11_171_904);
        assert_eq!(trainable(ResNetConfig::resnet34_feti().init(&device)), 21_280_064);
    }

    #[test]
    fn feature_shapes_at_84_and_224_px() {
        let device = Default::default();
        // (name, at 84 px, at 224 px): FETI always pools to 7×7; torchvision gives ⌈side/32⌉.
        let cases = [
            ("ResNet12", true, [512, 7, 7], [512, 7, 7]),
            ("ResNet18", true, [512, 7, 7], [512, 7, 7]),
            ("ResNet34", true, [512, 7, 7], [512, 7, 7]),
            ("ResNet18", false, [512, 3, 3], [512, 7, 7]),
            ("ResNet34", false, [512, 3, 3], [512, 7, 7]),
        ];
        for (name, feti, at84, at224) in cases {
            let net = name.parse::<BackboneName>().unwrap().with_feti(feti).init::<B>(&device);
            assert_eq!(net.feature_shape([3, 84, 84]), at84, "{name} feti={feti} at 84");
            assert_eq!(net.feature_shape([3, 224, 224]), at224, "{name} feti={feti} at 224");
            for side in [84, 224] {
                let out = net.features(Tensor::<B, 4>::zeros([1, 3, side, side], &device));
                let [_, c, h, w] = out.dims();
                assert_eq!(
                    [c, h, w],
                    net.feature_shape([3, side, side]),
                    "{name} forward at {side}"
                );
            }
        }
        // CIFAR's 112 px through a torchvision ResNet: 4×4 (d = 8192).
        let tv = ResNetConfig::resnet18_torchvision().init::<B>(&device);
        assert_eq!(tv.feature_dim([3, 112, 112]), 8192);
    }

    #[test]
    fn base_width_scales_every_stage() {
        let device = Default::default();
        let narrow = ResNetConfig::resnet18_torchvision().with_base_width(8).init::<B>(&device);
        assert_eq!(narrow.feature_shape([3, 64, 64]), [64, 2, 2]);
        let out = narrow.features(Tensor::<B, 4>::zeros([2, 3, 64, 64], &device));
        assert_eq!(out.dims(), [2, 64, 2, 2]);
        assert_eq!(narrow.layer2[0].conv1.weight.dims(), [16, 8, 3, 3]);
        assert_eq!(
            narrow.layer4[0].downsample.as_ref().unwrap().conv.weight.dims(),
            [64, 32, 1, 1]
        );
    }

    #[test]
    fn torchvision_resnets_are_frozen_and_use_batch_statistics() {
        let device = Default::default();
        let net = BackboneName::ResNet { depth: 18, feti: false }.init::<Autodiff<B>>(&device);
        let x = Tensor::<Autodiff<B>, 4>::random([2, 3, 32, 32], Distribution::Default, &device)
            .require_grad();
        let grads = net.features(x.clone()).sum().backward();
        assert!(x.grad(&grads).is_some(), "gradients still flow through to the input");
        let BuiltinBackbone::ResNet(resnet) = &net else { panic!("expected a ResNet") };
        assert!(resnet.conv1.weight.val().grad(&grads).is_none(), "frozen weights get no gradient");

        // On the inner backend (validation/test), BN still normalises with the batch's statistics:
        // scaling the input changes nothing after the (bias-free) stem conv and its BN, whereas
        // running statistics (mean 0, var 1) would pass the scale through.
        let stem_only = |mode| {
            ResNetConfig::new([0, 0, 0, 0]).with_stem(ResNetStem::TorchVision).with_batch_norm(mode)
        };
        let x = Tensor::<B, 4>::random([3, 3, 32, 32], Distribution::Default, &device);
        let batch = stem_only(BatchNormMode::BatchStatistics).init::<B>(&device);
        let a = batch.forward(x.clone());
        let b = batch.forward(x.clone().mul_scalar(5.0));
        // Only BN's epsilon (1e-5 against a small variance) separates the two.
        a.clone()
            .into_data()
            .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::rel_abs(2e-3, 1e-5));
        let standard = stem_only(BatchNormMode::Standard).init::<B>(&device);
        let scaled = standard.forward(x.clone().mul_scalar(5.0)).sum().into_scalar();
        let ratio = scaled / standard.forward(x).sum().into_scalar();
        assert!(
            (ratio - 5.0).abs() < 1e-3,
            "running statistics keep the input scale (ratio {ratio})"
        );
    }
}
