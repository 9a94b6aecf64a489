//! BatchNorm as fsct's backbones compute it (always in f32, without transposed copies), and the
//! backbones' norm layers named by type for the precision policy ([`NormLayers`]).

use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::DType;
use fsct_precision::{to_dtype, to_f32, NormLayer, NormLayers};

use crate::{BasicBlock, BuiltinBackbone, ConvBlock, ConvNet, Downsample, ResNet};

/// How a backbone's BatchNorm layers normalise.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BatchNormMode {
    /// Burn's convention, like PyTorch's `train()`/`eval()`: batch statistics (and running-stat
    /// updates) on an autodiff backend, running statistics on the inner backend (`model.valid()`).
    Standard,
    /// Always normalise with the statistics of the current batch, in training, validation and
    /// test alike. This is how the reference runs its frozen torchvision ResNets (spec §1.5): the
    /// BatchNorms never leave train mode, so the whole episode is normalised together
    /// (transductive).
    BatchStatistics,
}

/// Applies `bn` to a `[n, c, h, w]` map according to `mode`.
///
/// BatchNorm always computes in f32: under mixed precision the activations arrive in f16 while
/// the BN parameters and running statistics stay f32 (they are shared with the f32 master model),
/// and batch statistics over many pixels need f32 accumulation anyway.
///
/// The maps are viewed as `[n, c, h·w]` and every statistic is reduced over the contiguous last
/// axis first, then over the batch: no transposed copies of the activations (Burn's own
/// `BatchNorm::forward` swaps the batch and channel axes twice, which on the CPU cost more than
/// the convolution it follows). Training-mode running statistics follow PyTorch: momentum 0.1 and
/// the unbiased batch variance (Burn's module stores the biased one).
pub(crate) fn batch_norm<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    mode: BatchNormMode,
) -> Tensor<B, 4> {
    let dtype = x.dtype();
    if dtype != DType::F32 {
        let y = batch_norm(bn, to_f32(x), mode);
        return to_dtype(y, dtype);
    }
    let training = B::ad_enabled(&x.device());
    match mode {
        // Burn's convention (like PyTorch's train()/eval()): batch statistics on an autodiff
        // backend, running statistics on the inner backend.
        BatchNormMode::Standard if !training => running_statistics_norm(bn, x),
        _ => batch_statistics_norm(bn, x, training),
    }
}

/// Normalises with the batch's own mean and biased variance; updates the running statistics
/// when `update_running` is set.
fn batch_statistics_norm<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    update_running: bool,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let x = x.reshape([n, c, h * w]);
    let mean = x.clone().sum_dim(2).sum_dim(0).div_scalar(count); // [1, c, 1]
    let centered = x.sub(mean.clone());
    let var = centered.clone().square().sum_dim(2).sum_dim(0).div_scalar(count); // [1, c, 1]
    if update_running {
        update_running_statistics(
            bn,
            mean.clone().detach().reshape([c]),
            var.clone().detach().reshape([c]),
            n * h * w,
        );
    }
    // Under pure half precision (`Cuda<f16>`, `Vulkan<f16>`) the parameters and running
    // statistics are stored in half: mixing them with f32 maps would make GPU kernels read half
    // values as f32 (Flex refuses mixed ops; cubecl does not check), so every one is cast.
    let scale =
        var.add_scalar(bn.epsilon).sqrt().recip().mul(to_f32(bn.gamma.val()).reshape([1, c, 1]));
    centered.mul(scale).add(to_f32(bn.beta.val()).reshape([1, c, 1])).reshape([n, c, h, w])
}

/// Moves the running statistics towards a batch's `mean` and biased `var` (both `[c]`, over
/// `count` values per channel) as PyTorch does: momentum `bn.momentum`, unbiased variance.
pub(crate) fn update_running_statistics<B: Backend>(
    bn: &BatchNorm<B>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    count: usize,
) {
    // A segment run again for its backward pass saw this batch already (segments.rs).
    if crate::segments::recomputing() {
        return;
    }
    let count = count as f64;
    let m = bn.momentum;
    let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    let (old_mean, old_var) = (bn.running_mean.value_sync(), bn.running_var.value_sync());
    let stored = old_mean.dtype();
    let running_mean = to_f32(old_mean).mul_scalar(1.0 - m).add(to_f32(mean).mul_scalar(m));
    let running_var = to_f32(old_var).mul_scalar(1.0 - m).add(to_f32(var).mul_scalar(unbiased * m));
    bn.running_mean.update(to_dtype(running_mean, stored));
    bn.running_var.update(to_dtype(running_var, stored));
}

/// Normalises with the running statistics (evaluation): one scale and one shift per channel.
fn running_statistics_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let scale = to_f32(bn.running_var.value())
        .add_scalar(bn.epsilon)
        .sqrt()
        .recip()
        .mul(to_f32(bn.gamma.val()));
    let shift = to_f32(bn.beta.val()).sub(to_f32(bn.running_mean.value()).mul(scale.clone()));
    x.reshape([n, c, h * w])
        .mul(scale.reshape([1, c, 1]))
        .add(shift.reshape([1, c, 1]))
        .reshape([n, c, h, w])
}

// The backbones' normalisation layers, by type (see `fsct_precision::NormLayers`): every
// `BatchNorm` field of every backbone module is listed here.

impl<B: Backend> NormLayers<B> for ConvBlock<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.BN.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for ConvNet<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.trunk.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for Downsample<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.bn.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for BasicBlock<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.bn1.for_each_norm(visit);
        self.bn2.for_each_norm(visit);
        self.downsample.for_each_norm(visit);
    }
}

impl<B: Backend> NormLayers<B> for ResNet<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        self.bn1.for_each_norm(visit);
        for stage in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            stage.for_each_norm(visit);
        }
    }
}

impl<B: Backend> NormLayers<B> for BuiltinBackbone<B> {
    fn for_each_norm<'a>(&'a self, visit: &mut dyn FnMut(NormLayer<'a, B>)) {
        match self {
            Self::Conv(net) => net.for_each_norm(visit),
            Self::ResNet(net) => net.for_each_norm(visit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    type AD = Autodiff<Flex>;

    /// An f64 reference computed element by element.
    fn reference(
        x: &[f32],
        [n, c, hw]: [usize; 3],
        gamma: &[f32],
        beta: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let count = (n * hw) as f64;
        let at = |i: usize, ch: usize, p: usize| x[(i * c + ch) * hw + p] as f64;
        let mean: Vec<f64> = (0..c)
            .map(|ch| {
                (0..n)
                    .flat_map(|i| (0..hw).map(move |p| (i, p)))
                    .map(|(i, p)| at(i, ch, p))
                    .sum::<f64>()
                    / count
            })
            .collect();
        let var: Vec<f64> = (0..c)
            .map(|ch| {
                (0..n)
                    .flat_map(|i| (0..hw).map(move |p| (i, p)))
                    .map(|(i, p)| (at(i, ch, p) - mean[ch]).powi(2))
                    .sum::<f64>()
                    / count
            })
            .collect();
        let mut y = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    y[(i * c + ch) * hw + p] = (at(i, ch, p) - mean[ch]) / (var[ch] + 1e-5).sqrt()
                        * gamma[ch] as f64
                        + beta[ch] as f64;
                }
            }
        }
        (y, mean, var)
    }

    #[test]
    fn training_mode_normalises_with_batch_statistics_and_updates_running_ones_like_pytorch() {
        let device = Default::default();
        let (n, c, h, w) = (3, 4, 5, 6);
        let mut bn = BatchNormConfig::new(c).init::<AD>(&device);
        bn.gamma = bn.gamma.map(|g| g.add_scalar(0.5));
        bn.beta = bn.beta.map(|b| b.add_scalar(-0.25));
        let x = Tensor::<AD, 4>::random([n, c, h, w], Distribution::Normal(1.0, 2.0), &device);
        let xs = x.to_data().to_vec::<f32>().unwrap();
        let gamma = bn.gamma.val().to_data().to_vec::<f32>().unwrap();
        let beta = bn.beta.val().to_data().to_vec::<f32>().unwrap();
        let (y_ref, mean, var) = reference(&xs, [n, c, h * w], &gamma, &beta);

        let y = batch_norm(&bn, x, BatchNormMode::Standard);
        y.into_data().assert_approx_eq::<f32>(
            &TensorData::new(y_ref, [n, c, h, w]),
            Tolerance::absolute(1e-4),
        );
        let count = (n * h * w) as f64;
        let running_mean: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
        let running_var: Vec<f64> =
            var.iter().map(|v| 0.9 + 0.1 * v * count / (count - 1.0)).collect();
        bn.running_mean.value_sync().into_data().assert_approx_eq::<f32>(
            &TensorData::new(running_mean, [c]),
            Tolerance::absolute(1e-5),
        );
        bn.running_var
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::new(running_var, [c]), Tolerance::absolute(1e-5));
    }

    #[test]
    fn evaluation_mode_uses_running_statistics_and_gradients_match_burns_batch_norm() {
        let device = Default::default();
        let (n, c, h, w) = (2, 3, 4, 4);
        let bn = BatchNormConfig::new(c).init::<AD>(&device);
        let x = Tensor::<AD, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();

        // Gradients through this implementation equal those through Burn's module.
        let weights =
            Tensor::<AD, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let ours = batch_norm(&bn, x.clone(), BatchNormMode::Standard).mul(weights.clone()).sum();
        let theirs = bn.forward(x.clone()).mul(weights).sum();
        let g_ours = x.grad(&ours.backward()).unwrap();
        let g_theirs = x.grad(&theirs.backward()).unwrap();
        g_ours
            .into_data()
            .assert_approx_eq::<f32>(&g_theirs.into_data(), Tolerance::absolute(1e-5));

        // The inner backend normalises with the running statistics: (x - rm) / sqrt(rv + eps).
        let valid = burn::module::AutodiffModule::valid(&bn);
        let xi = x.inner();
        let rm = valid.running_mean.value().reshape([1, c, 1, 1]);
        let rv = valid.running_var.value().reshape([1, c, 1, 1]);
        let expected = xi.clone().sub(rm).div(rv.add_scalar(1e-5).sqrt());
        batch_norm(&valid, xi, BatchNormMode::Standard)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }
}
