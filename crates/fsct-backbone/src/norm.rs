use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

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
pub(crate) fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, mode: BatchNormMode) -> Tensor<B, 4> {
    let dtype = x.dtype();
    if dtype != DType::F32 {
        let y = batch_norm(bn, x.cast(FloatDType::F32), mode);
        return y.cast(float_dtype(dtype));
    }
    let ad = B::ad_enabled(&x.device());
    match mode {
        BatchNormMode::Standard => bn.forward(x),
        // On an autodiff backend Burn already uses (and updates) batch statistics.
        BatchNormMode::BatchStatistics if ad => bn.forward(x),
        BatchNormMode::BatchStatistics => batch_statistics_norm(bn, x),
    }
}

/// BatchNorm with the batch's own mean and biased variance, without touching running statistics.
fn batch_statistics_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let flat = x.clone().swap_dims(0, 1).reshape([c, n * h * w]);
    let mean = flat.clone().mean_dim(1);
    let var = flat.sub(mean.clone()).square().mean_dim(1);
    let mean = mean.reshape([1, c, 1, 1]);
    let std = var.add_scalar(bn.epsilon).sqrt().reshape([1, c, 1, 1]);
    let gamma = bn.gamma.val().reshape([1, c, 1, 1]);
    let beta = bn.beta.val().reshape([1, c, 1, 1]);
    x.sub(mean).div(std).mul(gamma).add(beta)
}

/// The float dtype of a tensor dtype (f32 for anything unexpected).
pub(crate) fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}
