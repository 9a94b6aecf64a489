//! The batch-norm pieces every fused tail shares: the per-channel affine map on running or batch
//! statistics, the state its backward pass keeps, and the running-statistics update.

use burn::nn::BatchNorm;
use burn::prelude::*;

use super::kernels::{self, Decisions, Dims, Saved};
use super::route::AdTensor;
use super::storage::{values, Stored};
use crate::norm::update_running_statistics;

/// A batch's per-channel mean and biased variance.
pub(super) type Moments = (Vec<f64>, Vec<f64>);

/// Moves `bn`'s running statistics towards a batch's `moments` over a `[n, c, h, w]` map.
pub(super) fn update_running<B: Backend>(
    bn: &BatchNorm<B>,
    (mean, var): Moments,
    [n, c, h, w]: [usize; 4],
) {
    let device = bn.gamma.device();
    let as_tensor =
        |v: Vec<f64>| Tensor::<B, 1>::from_data(TensorData::new(v, [c]).convert::<f32>(), &device);
    update_running_statistics(bn, as_tensor(mean), as_tensor(var), n * h * w);
}

/// The per-channel `(scale, shift)` of `bn` on its running statistics (evaluation).
pub(super) fn running_affine<B: Backend>(bn: &BatchNorm<B>) -> (Vec<f32>, Vec<f32>) {
    let per_channel =
        |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
    let scale = bn.running_var.value().add_scalar(bn.epsilon).sqrt().recip().mul(bn.gamma.val());
    let shift = bn.beta.val().sub(bn.running_mean.value().mul(scale.clone()));
    (per_channel(scale), per_channel(shift))
}

/// A batch norm's per-channel affine map on batch statistics, with what its backward needs.
pub(super) struct BatchAffine {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    /// `gamma · inv_std`
    pub scale: Vec<f32>,
    /// `beta − mean · scale`
    pub shift: Vec<f32>,
}

impl BatchAffine {
    /// The backward state of a tail over `dims`, with the ReLU (and pool) `decisions` the
    /// forward recorded in `codes`.
    pub(super) fn into_saved(self, dims: Dims, decisions: Decisions, codes: Vec<u8>) -> Saved {
        let BatchAffine { mean, inv_std, gamma, scale, shift } = self;
        Saved { dims, mean, inv_std, gamma, scale, shift, decisions, codes }
    }
}

/// The batch statistics of a map (returned for the running statistics) and its batch norm's
/// affine map.
pub(super) fn batch_affine<E: Stored>(
    xs: &[E],
    d: Dims,
    gamma: &AdTensor,
    beta: &AdTensor,
    epsilon: f64,
) -> (BatchAffine, Moments) {
    let (mean, var) = kernels::channel_moments(xs, d);
    let gamma = values::<f32>(&gamma.primitive).into_owned();
    let beta = values::<f32>(&beta.primitive);
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + epsilon).sqrt()) as f32).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] as f32 * scale[ch]).collect();
    let affine = BatchAffine {
        mean: mean.iter().map(|&m| m as f32).collect(),
        inv_std,
        gamma,
        scale,
        shift,
    };
    (affine, (mean, var))
}
