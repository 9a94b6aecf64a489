//! The fused tail against the composed one: same outputs, gradients and running statistics.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType, Tolerance};

use burn::nn::conv::{Conv2d, Conv2dConfig};

use super::{composed, Pool};

fn batch_norm<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    let mut bn = BatchNormConfig::new(c).init::<B>(device);
    let gamma: Vec<f32> =
        (0..c).map(|ch| if ch % 3 == 2 { -0.6 } else { 0.8 + 0.1 * ch as f32 }).collect();
    let beta: Vec<f32> = (0..c).map(|ch| 0.1 * ch as f32 - 0.2).collect();
    bn.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [c]), device));
    bn.beta = Param::from_tensor(Tensor::from_data(TensorData::new(beta, [c]), device));
    bn
}

/// Output, gradients of x, gamma and beta, and the updated running statistics.
fn run<B: AutodiffBackend>(
    fused: bool,
    x: &Tensor<B, 4>,
    weights: &Tensor<B, 4>,
    pool: Pool,
) -> Vec<TensorData> {
    let device = x.device();
    let bn = batch_norm::<B>(x.dims()[1], &device);
    let x = x.clone().require_grad();
    let y = if fused { fast_path(&bn, x.clone(), pool) } else { composed(&bn, x.clone(), pool) };
    let grads = y.clone().mul(weights.clone()).sum().backward();
    vec![
        y.into_data(),
        x.grad(&grads).map(|g| g.into_data()).unwrap_or_else(|| TensorData::from([0f32])),
        bn.gamma.grad(&grads).map(|g| g.into_data()).unwrap_or_else(|| TensorData::from([0f32])),
        bn.beta.grad(&grads).map(|g| g.into_data()).unwrap_or_else(|| TensorData::from([0f32])),
        bn.running_mean.value().into_data(),
        bn.running_var.value().into_data(),
    ]
}

/// The fused path itself: fails the test if it declines the backend.
fn fast_path<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, pool: Pool) -> Tensor<B, 4> {
    match super::relu_pool::try_forward(bn, x, pool) {
        Ok(y) => y,
        Err(_) => panic!("the fused path declined {}", core::any::type_name::<B>()),
    }
}

fn agree<B: AutodiffBackend>(shape: [usize; 4], pool: Pool) {
    let device = Default::default();
    let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
    let [n, c, h, w] = shape;
    let o = super::kernels::Dims { n, c, h, w }.output(pool);
    let out = [o.n, o.c, o.h, o.w];
    let weights = Tensor::<B, 4>::random(out, Distribution::Normal(0.0, 1.0), &device);
    let fused = run(true, &x, &weights, pool);
    let reference = run(false, &x, &weights, pool);
    let names = ["output", "dx", "dgamma", "dbeta", "running mean", "running var"];
    for ((a, b), name) in fused.into_iter().zip(reference).zip(names) {
        assert_eq!(a.shape, b.shape, "{name}");
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(2e-5));
    }
}

#[test]
fn fused_training_tail_matches_the_composed_one_with_pooling() {
    agree::<Autodiff<Flex>>([4, 3, 6, 10], Pool::Max2x2);
}

#[test]
fn fused_training_tail_matches_on_odd_sizes_and_without_pooling() {
    agree::<Autodiff<Flex>>([3, 2, 7, 5], Pool::Max2x2);
    agree::<Autodiff<Flex>>([3, 4, 5, 6], Pool::Off);
    // Planes of several 16-lane blocks and a tail in the backward sums.
    agree::<Autodiff<Flex>>([2, 3, 9, 7], Pool::Off);
}

#[test]
fn fused_training_tail_matches_under_gradient_checkpointing() {
    agree::<Autodiff<Flex, BalancedCheckpointing>>([2, 3, 8, 8], Pool::Max2x2);
    agree::<Autodiff<Flex, BalancedCheckpointing>>([2, 3, 8, 7], Pool::Max3x3Stride2);
}

/// torchvision's stem pool (3×3, stride 2, padding 1: overlapping windows), even and odd sides.
#[test]
fn fused_training_tail_matches_the_composed_one_with_the_stem_pool() {
    agree::<Autodiff<Flex>>([3, 4, 10, 12], Pool::Max3x3Stride2);
    agree::<Autodiff<Flex>>([2, 3, 9, 7], Pool::Max3x3Stride2);
    agree::<Autodiff<Flex>>([2, 2, 1, 2], Pool::Max3x3Stride2);
}

#[test]
fn fused_inference_tail_uses_the_running_statistics() {
    let device = Default::default();
    let mut bn = batch_norm::<Flex>(3, &device);
    bn.running_mean =
        burn::module::RunningState::new(Tensor::from_data([0.5f32, -1.0, 2.0], &device));
    bn.running_var =
        burn::module::RunningState::new(Tensor::from_data([4.0f32, 0.25, 1.0], &device));
    let x = Tensor::<Flex, 4>::random([2, 3, 6, 4], Distribution::Normal(0.0, 2.0), &device);
    for pool in [Pool::Max2x2, Pool::Max3x3Stride2, Pool::Off] {
        let fused = fast_path(&bn, x.clone(), pool);
        let reference = composed(&bn, x.clone(), pool);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-5));
    }
}

#[test]
fn half_precision_maps_stay_half_forward_and_backward() {
    let device = Default::default();
    let bn = batch_norm::<Autodiff<Flex>>(2, &device);
    let x =
        Tensor::<Autodiff<Flex>, 4>::random([2, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device)
            .cast(FloatDType::F16)
            .require_grad();
    let weights =
        Tensor::<Autodiff<Flex>, 4>::random([2, 2, 2, 2], Distribution::Normal(0.0, 1.0), &device);
    let mut results = Vec::new();
    for fused in [true, false] {
        let y = if fused {
            fast_path(&bn, x.clone(), Pool::Max2x2)
        } else {
            composed(&bn, x.clone(), Pool::Max2x2)
        };
        assert_eq!(y.dtype(), burn::tensor::DType::F16);
        let grads = y.clone().cast(FloatDType::F32).mul(weights.clone()).sum().backward();
        let dx = x.grad(&grads).map(|g| g.into_data());
        assert_eq!(
            dx.as_ref().map(|d| d.dtype),
            Some(burn::tensor::DType::F16),
            "the gradient of a half map is half"
        );
        results.push((y.into_data().convert::<f32>(), dx.map(|d| d.convert::<f32>())));
    }
    let tolerance = Tolerance::absolute(1e-2);
    results[0].0.assert_approx_eq::<f32>(&results[1].0, tolerance);
    if let (Some(a), Some(b)) = (&results[0].1, &results[1].1) {
        a.assert_approx_eq::<f32>(b, tolerance);
    }
}

/// A whole Conv4, fused (what `ConvNet::forward` runs on Flex) against the same blocks composed
/// from Burn's ops: every parameter gradient agrees, without and with gradient checkpointing
/// (which may drop the fused op's output and recompute it through its retro-forward).
#[test]
fn conv4_parameter_gradients_agree_with_the_composed_blocks() {
    conv4_gradients_agree::<Autodiff<Flex>>();
    conv4_gradients_agree::<Autodiff<Flex, BalancedCheckpointing>>();
}

fn conv4_gradients_agree<B: AutodiffBackend>() {
    let device = Default::default();
    let net = crate::ConvNetConfig::conv(4).init::<B>(&device);
    let images = Tensor::<B, 4>::random([6, 3, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let fused = conv4_gradients(&net, images.clone(), Path::Fused);
    let composed = conv4_gradients(&net, images.clone(), Path::Composed);
    // How far the composed blocks' own gradients move when the input moves by one ulp either way.
    // At 28 px the last block normalises 6 values per channel (1×1 maps), and some random draws
    // put a max-pool window or a ReLU on a knife edge that one rounding flips: there the gradient
    // of the first convolution jumps by a few percent on either path (seen in 3 of 200 seeds).
    let nudged: Vec<_> = [1.0 + f32::EPSILON, 1.0 - f32::EPSILON]
        .map(|factor| conv4_gradients(&net, images.clone().mul_scalar(factor), Path::Composed))
        .into();
    assert_eq!(fused.len(), 16, "conv weight, conv bias, gamma, beta per block");
    let max_diff =
        |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // Conv biases feed a batch norm, so their true gradient is 0 and both paths return rounding
    // noise: every gradient is held to the scale of its block's weight gradient.
    for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
        let weights = &composed[i - i % 4];
        let scale = weights.iter().fold(0f32, |m, v| m.max(v.abs()));
        let sensitivity = nudged.iter().map(|n| max_diff(&n[i], b)).fold(0f32, f32::max);
        let err = max_diff(a, b);
        let bound = (1e-4 * scale).max(2.0 * sensitivity);
        assert!(
            err <= bound,
            "parameter {i}: max |Δ| {err} vs max |g| {scale} (one ulp of input moves it {sensitivity})"
        );
    }
}

/// Which way a Conv block's batch norm → ReLU → max-pool tail is computed.
#[derive(Clone, Copy)]
enum Path {
    Fused,
    Composed,
}

/// Every parameter gradient of `net` (in visiting order) for the loss Σ features² on `images`.
fn conv4_gradients<B: AutodiffBackend>(
    net: &crate::ConvNet<B>,
    images: Tensor<B, 4>,
    path: Path,
) -> Vec<Vec<f32>> {
    use burn::module::{ModuleVisitor, Param};

    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = param.val().grad(self.grads) {
                self.out.push(g.into_data().to_vec::<f32>().unwrap_or_default());
            }
        }
    }

    let mut x = images;
    for block in &net.trunk {
        let conv = block.C.forward(x);
        let pool = if block.pool { Pool::Max2x2 } else { Pool::Off };
        x = match path {
            Path::Fused => fast_path(&block.BN, conv, pool),
            Path::Composed => composed(&block.BN, conv, pool),
        };
    }
    let loss = x.clone().mul(x).sum();
    let grads = loss.backward();
    let mut collect = Collect::<B> { grads: &grads, out: Vec::new() };
    net.visit(&mut collect);
    collect.out
}

/// Output and the gradients of x, the residual, gamma and beta, and the running statistics.
fn run_residual<B: AutodiffBackend>(
    fused: bool,
    x: &Tensor<B, 4>,
    r: &Tensor<B, 4>,
    weights: &Tensor<B, 4>,
) -> Vec<TensorData> {
    let device = x.device();
    let bn = batch_norm::<B>(x.dims()[1], &device);
    let (x, r) = (x.clone().require_grad(), r.clone().require_grad());
    let y = if fused {
        match super::residual::try_forward(&bn, x.clone(), r.clone()) {
            Ok(y) => y,
            Err(_) => panic!("the fused residual path declined {}", core::any::type_name::<B>()),
        }
    } else {
        super::composed_residual(&bn, x.clone(), r.clone(), crate::BatchNormMode::Standard)
    };
    let grads = y.clone().mul(weights.clone()).sum().backward();
    let grad = |g: Option<Tensor<B::InnerBackend, 4>>| {
        g.map(|g| g.into_data()).unwrap_or_else(|| TensorData::from([0f32]))
    };
    let grad1 = |g: Option<Tensor<B::InnerBackend, 1>>| {
        g.map(|g| g.into_data()).unwrap_or_else(|| TensorData::from([0f32]))
    };
    vec![
        y.into_data(),
        grad(x.grad(&grads)),
        grad(r.grad(&grads)),
        grad1(bn.gamma.grad(&grads)),
        grad1(bn.beta.grad(&grads)),
        bn.running_mean.value().into_data(),
        bn.running_var.value().into_data(),
    ]
}

fn residual_agrees<B: AutodiffBackend>(shape: [usize; 4]) {
    let device = Default::default();
    let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
    let r = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let weights = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let fused = run_residual(true, &x, &r, &weights);
    let reference = run_residual(false, &x, &r, &weights);
    let names = ["output", "dx", "dresidual", "dgamma", "dbeta", "running mean", "running var"];
    for ((a, b), name) in fused.into_iter().zip(reference).zip(names) {
        assert_eq!(a.shape, b.shape, "{name}");
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(2e-5));
    }
}

#[test]
fn fused_residual_tail_matches_the_composed_one() {
    residual_agrees::<Autodiff<Flex>>([3, 4, 5, 6]);
    residual_agrees::<Autodiff<Flex, BalancedCheckpointing>>([2, 3, 4, 4]);
}

#[test]
fn fused_residual_inference_uses_the_running_statistics() {
    let device = Default::default();
    let mut bn = batch_norm::<Flex>(3, &device);
    bn.running_mean =
        burn::module::RunningState::new(Tensor::from_data([0.5f32, -1.0, 2.0], &device));
    bn.running_var =
        burn::module::RunningState::new(Tensor::from_data([4.0f32, 0.25, 1.0], &device));
    let x = Tensor::<Flex, 4>::random([2, 3, 5, 4], Distribution::Normal(0.0, 2.0), &device);
    let r = Tensor::<Flex, 4>::random([2, 3, 5, 4], Distribution::Normal(0.0, 1.0), &device);
    let fused = match super::residual::try_forward(&bn, x.clone(), r.clone()) {
        Ok(y) => y,
        Err(_) => panic!("the fused residual path declined Flex"),
    };
    let reference = super::composed_residual(&bn, x, r, crate::BatchNormMode::Standard);
    fused.into_data().assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-5));
}

/// Which of the inputs of `conv(relu(bn(x)))` the test asks gradients of.
#[derive(Clone, Copy, Debug)]
enum Tracked {
    All,
    /// A frozen convolution: the node still returns the gradients of x, gamma and beta.
    FrozenWeight,
    /// An untracked input map: only the weight's gradient (and the batch norm's) flow.
    InputMapOff,
}

/// One of the fused nodes that hold a convolution.
#[derive(Clone, Copy, Debug)]
enum ConvOp {
    /// `conv(relu(bn(x)))` ([`super::relu_conv`]).
    ReluConv,
    /// `pool?(relu(bn(conv(x))))` ([`super::conv_tail`]), recomputing at any size.
    ConvTail(Pool),
}

type Ad = Autodiff<Flex>;

impl ConvOp {
    /// The fused node itself: fails the test if it declines.
    fn fused(self, bn: &BatchNorm<Ad>, conv: &Conv2d<Ad>, x: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
        let y = match self {
            Self::ReluConv => super::relu_conv::try_forward(bn, x, conv),
            Self::ConvTail(pool) => super::conv_tail::try_forward(conv, bn, x, pool, 0),
        };
        y.unwrap_or_else(|_| panic!("the fused {self:?} node declined"))
    }

    /// The same function as the convolution and the composed tail.
    fn composed(self, bn: &BatchNorm<Ad>, conv: &Conv2d<Ad>, x: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
        match self {
            Self::ReluConv => conv.forward(composed(bn, x, Pool::Off)),
            Self::ConvTail(pool) => composed(bn, conv.forward(x), pool),
        }
    }

    /// The channels of the op's batch norm.
    fn bn_channels(self, conv: &Conv2d<Ad>) -> usize {
        let [c_out, c_in, _, _] = conv.weight.dims();
        match self {
            Self::ReluConv => c_in,
            Self::ConvTail(_) => c_out,
        }
    }
}

/// Output and the gradients of x, gamma, beta and the convolution weight, and the running
/// statistics, of `op` as one node (`fused`) or as the convolution and the composed tail.
fn run_conv_op(
    op: ConvOp,
    fused: bool,
    x: &Tensor<Ad, 4>,
    conv: &Conv2d<Ad>,
    weights: &Tensor<Ad, 4>,
    tracked: Tracked,
) -> Vec<TensorData> {
    let bn = batch_norm::<Ad>(op.bn_channels(conv), &x.device());
    let mut conv = conv.clone();
    if matches!(tracked, Tracked::FrozenWeight) {
        conv.weight = conv.weight.clone().set_require_grad(false);
    }
    let x = match tracked {
        Tracked::InputMapOff => x.clone(),
        _ => x.clone().require_grad(),
    };
    let y =
        if fused { op.fused(&bn, &conv, x.clone()) } else { op.composed(&bn, &conv, x.clone()) };
    let grads = y.clone().mul(weights.clone()).sum().backward();
    let none = || TensorData::from([0f32]);
    vec![
        y.into_data(),
        x.grad(&grads).map_or_else(none, |g| g.into_data()),
        bn.gamma.grad(&grads).map_or_else(none, |g| g.into_data()),
        bn.beta.grad(&grads).map_or_else(none, |g| g.into_data()),
        conv.weight.grad(&grads).map_or_else(none, |g| g.into_data()),
        bn.running_mean.value().into_data(),
        bn.running_var.value().into_data(),
    ]
}

/// `op` as one node agrees with the convolution and the composed tail on an `x` of `shape`:
/// output, every gradient and the running statistics, relative to the reference's largest value.
fn conv_op_agrees(op: ConvOp, shape: [usize; 4], conv: Conv2dConfig, tracked: Tracked) {
    let device = Default::default();
    let x = Tensor::<Ad, 4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
    let conv = conv.init::<Ad>(&device);
    let bn = batch_norm::<Ad>(op.bn_channels(&conv), &device);
    let out = op.composed(&bn, &conv, x.clone()).dims();
    let weights = Tensor::<Ad, 4>::random(out, Distribution::Normal(0.0, 1.0), &device);
    let fused = run_conv_op(op, true, &x, &conv, &weights, tracked);
    let reference = run_conv_op(op, false, &x, &conv, &weights, tracked);
    let names = ["output", "dx", "dgamma", "dbeta", "dweight", "running mean", "running var"];
    for ((a, b), name) in fused.into_iter().zip(reference).zip(names) {
        assert_eq!(a.shape, b.shape, "{name} ({op:?}, {tracked:?}, {shape:?})");
        let scale = b.iter::<f32>().fold(1f32, |m, v| m.max(v.abs()));
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(2e-5 * scale));
    }
}

/// A BasicBlock's middle (3×3, padding 1, the output's sizes) and a strided, unpadded 1×1 and a
/// 3×3 stride-2 convolution, with every input tracked, a frozen weight and an untracked map.
#[test]
fn fused_relu_conv_matches_the_composed_tail_and_convolution() {
    use burn::nn::PaddingConfig2d;
    let three = Conv2dConfig::new([4, 5], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false);
    for tracked in [Tracked::All, Tracked::FrozenWeight, Tracked::InputMapOff] {
        conv_op_agrees(ConvOp::ReluConv, [3, 4, 6, 7], three.clone(), tracked);
    }
    conv_op_agrees(ConvOp::ReluConv, [2, 4, 7, 5], three.clone().with_stride([2, 2]), Tracked::All);
    let one = Conv2dConfig::new([4, 3], [1, 1]).with_stride([2, 2]).with_bias(false);
    conv_op_agrees(ConvOp::ReluConv, [2, 4, 5, 6], one, Tracked::All);
}

/// Where the node does not apply it hands the map back: a convolution with a bias, "same"
/// padding, or another backend.
#[test]
fn fused_relu_conv_declines_what_it_does_not_compute() {
    use burn::nn::PaddingConfig2d;
    let device = Default::default();
    let bn = batch_norm::<Autodiff<Flex>>(4, &device);
    let x = Tensor::<Autodiff<Flex>, 4>::random([2, 4, 5, 5], Distribution::Default, &device);
    let biased = Conv2dConfig::new([4, 2], [3, 3]).init::<Autodiff<Flex>>(&device);
    assert!(super::relu_conv::try_forward(&bn, x.clone(), &biased).is_err());
    let same = Conv2dConfig::new([4, 2], [2, 2])
        .with_padding(PaddingConfig2d::Same)
        .with_bias(false)
        .init::<Autodiff<Flex>>(&device);
    assert!(super::relu_conv::try_forward(&bn, x.clone(), &same).is_err());
    let plain = Conv2dConfig::new([4, 2], [3, 3]).with_bias(false);
    let balanced = batch_norm::<Autodiff<Flex, BalancedCheckpointing>>(4, &device);
    let xb = Tensor::<Autodiff<Flex, BalancedCheckpointing>, 4>::random(
        [2, 4, 5, 5],
        Distribution::Default,
        &device,
    );
    let conv = plain.init::<Autodiff<Flex, BalancedCheckpointing>>(&device);
    assert!(super::relu_conv::try_forward(&balanced, xb, &conv).is_err());
    let conv = plain.init::<Autodiff<Flex>>(&device);
    assert!(super::relu_conv::try_forward(&bn, x, &conv).is_ok());
}

/// torchvision's stem (7×7 stride 2, padding 3, then the 3×3 stride-2 pool) on even and odd
/// sides, with every input tracked, a frozen weight and untracked images (the stem's usual
/// case); and the 2×2 pool and no pool after a 3×3 convolution.
#[test]
fn fused_conv_tail_matches_the_convolution_and_the_composed_tail() {
    use burn::nn::PaddingConfig2d;
    let stem = Conv2dConfig::new([3, 4], [7, 7])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
        .with_bias(false);
    for tracked in [Tracked::All, Tracked::FrozenWeight, Tracked::InputMapOff] {
        conv_op_agrees(
            ConvOp::ConvTail(Pool::Max3x3Stride2),
            [3, 3, 16, 14],
            stem.clone(),
            tracked,
        );
    }
    conv_op_agrees(
        ConvOp::ConvTail(Pool::Max3x3Stride2),
        [2, 3, 13, 11],
        stem,
        Tracked::InputMapOff,
    );
    let three = Conv2dConfig::new([3, 5], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false);
    conv_op_agrees(ConvOp::ConvTail(Pool::Max2x2), [2, 3, 6, 7], three.clone(), Tracked::All);
    conv_op_agrees(ConvOp::ConvTail(Pool::Off), [2, 3, 6, 7], three, Tracked::All);
}

/// Below its size threshold the stem keeps its convolution's output (two ops); at or above it,
/// one node.
#[test]
fn fused_conv_tail_recomputes_only_outputs_of_the_threshold_size() {
    use burn::nn::PaddingConfig2d;
    type B = Autodiff<Flex>;
    let device = Default::default();
    let conv = Conv2dConfig::new([3, 4], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init::<B>(&device);
    let bn = batch_norm::<B>(4, &device);
    let x = Tensor::<B, 4>::random([2, 3, 9, 8], Distribution::Default, &device);
    // 2 images × 4 channels × 5 × 4 outputs × 4 bytes.
    let bytes = 2 * 4 * 5 * 4 * 4;
    let at = |threshold| {
        super::conv_tail::try_forward(&conv, &bn, x.clone(), Pool::Off, threshold).is_ok()
    };
    assert!(at(bytes));
    assert!(!at(bytes + 1));
}

/// `with_block_ops(Composed, ..)` runs the composed ops on Flex inside, the fused ones again
/// after (the planner's GPU measurement relies on both).
#[test]
fn block_ops_choose_the_composed_path_only_inside_the_scope() {
    use crate::{with_block_ops, BlockOps};
    let device = Default::default();
    let bn = batch_norm::<Flex>(2, &device);
    let x = Tensor::<Flex, 4>::random([1, 2, 4, 4], Distribution::Default, &device);
    let fused = |x: Tensor<Flex, 4>| super::relu_pool::try_forward(&bn, x, Pool::Off).is_ok();
    assert!(with_block_ops(BlockOps::Fused, || fused(x.clone())));
    assert!(!with_block_ops(BlockOps::Composed, || fused(x.clone())));
    assert!(fused(x.clone()), "the previous choice is restored");
}
