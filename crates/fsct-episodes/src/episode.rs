//! One episode as host memory, and its conversion to a Burn tensor.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::spec::EpisodeSpec;

/// The images of one episode, `[N, K + M, C, H, W]` row-major (spec §2.1): position `n` along the
/// first axis is target class `n`; within a class the first K images are the support set and the
/// remaining M the queries.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Episode index the sampler drew this episode for.
    pub index: u64,
    /// `[N, K + M, C, H, W]`.
    pub shape: [usize; 5],
    pub k_shot: usize,
    /// Normalised pixels, `shape.iter().product()` values.
    pub images: Vec<f32>,
    /// The dataset's class index of each of the N positions.
    pub classes: Vec<usize>,
    /// The dataset's item index (within its class) of each image, `[N][K + M]`.
    pub items: Vec<Vec<usize>>,
}

impl Episode {
    /// The N-way K-shot M-query shape of this episode.
    pub fn spec(&self) -> EpisodeSpec {
        EpisodeSpec {
            n_way: self.shape[0],
            k_shot: self.k_shot,
            n_query: self.shape[1] - self.k_shot,
        }
    }

    /// The images as a `[N, K + M, C, H, W]` tensor on `device`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 5> {
        Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device)
    }

    /// Like [`to_tensor`](Self::to_tensor) without copying the pixels on the host.
    pub fn into_tensor<B: Backend>(self, device: &B::Device) -> Tensor<B, 5> {
        Tensor::from_data(TensorData::new(self.images, self.shape), device)
    }

    /// Query targets in the order FS-CT flattens queries (`[N · M]`, query `b` is class `⌊b/M⌋`).
    pub fn query_targets(&self) -> Vec<i64> {
        let m = self.shape[1] - self.k_shot;
        (0..self.shape[0] as i64).flat_map(|n| std::iter::repeat_n(n, m)).collect()
    }

    /// [`query_targets`](Self::query_targets) as an Int tensor on `device`.
    pub fn query_targets_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        let targets = self.query_targets();
        let len = targets.len();
        Tensor::from_data(TensorData::new(targets, [len]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn tensor_keeps_shape_and_values_and_targets_follow_positions() {
        let shape = [2, 3, 1, 2, 2];
        let images: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let episode = Episode {
            index: 7,
            shape,
            k_shot: 1,
            images: images.clone(),
            classes: vec![4, 1],
            items: vec![vec![0, 1, 2], vec![3, 4, 5]],
        };
        let device = Default::default();
        let x = episode.to_tensor::<Flex>(&device);
        assert_eq!(x.dims(), shape);
        assert_eq!(x.into_data().to_vec::<f32>().unwrap(), images);
        assert_eq!(episode.query_targets(), vec![0, 0, 1, 1]);
        assert_eq!(episode.spec(), EpisodeSpec { n_way: 2, k_shot: 1, n_query: 2 });
    }
}
