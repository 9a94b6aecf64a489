use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::error::ModelError;
use fsct_precision::to_f32;

/// What one forward pass over an episode yields.
#[derive(Debug, Clone)]
pub struct EpisodeForward<B: Backend> {
    /// Class scores, `[Q, N]` with `Q = N·M`; row `b` is query `b`, of class `⌊b/M⌋`.
    pub scores: Tensor<B, 2>,
    /// The backbone's support embeddings, `[N, K, d]`, live (for VIC).
    pub support: Tensor<B, 3>,
    /// The backbone's query embeddings, `[Q, d]`, live (for VIC).
    pub query: Tensor<B, 2>,
}

/// A few-shot classifier over episodes `[N, K+M, C, H, W]`: FS-CT, CTX, or your own.
pub trait FewShotModel<B: Backend>: Module<B> {
    /// Classes per episode the model was built for.
    fn n_way(&self) -> usize;
    /// Support images per class the model was built for.
    fn k_shot(&self) -> usize;
    /// Checks an episode shape before any computation, with an error that says how to fix it.
    fn check_episode(&self, shape: [usize; 5]) -> Result<(), ModelError>;
    /// Scores the queries of one episode.
    ///
    /// # Shapes
    /// - `episode`: `[N, K+M, C, H, W]`; in each class the first K images are the support set
    /// - output: see [`EpisodeForward`]
    fn forward_episode(&self, episode: Tensor<B, 5>) -> EpisodeForward<B>;

    /// The model after its backbone: scores an episode from the backbone's feature maps of its
    /// images. [`Self::forward_episode`] is this on `backbone.features(episode.reshape(..))`;
    /// segment checkpointing (`fsct_backbone::segments`) runs the backbone itself and calls this.
    ///
    /// # Shapes
    /// - `maps`: `[N·(K+M), c, h, w]`, the images class by class as in
    ///   `episode.reshape([N·(K+M), C, H, W])`
    /// - `n_way`: N; `per_class`: K+M
    /// - output: see [`EpisodeForward`]
    fn forward_maps(&self, maps: Tensor<B, 4>, n_way: usize, per_class: usize)
        -> EpisodeForward<B>;
}

/// Checks what every model needs of an episode: N classes, more than K images each.
pub(crate) fn check_way_shot(
    shape: [usize; 5],
    n_way: usize,
    k_shot: usize,
) -> Result<(), ModelError> {
    if shape[0] != n_way {
        return Err(ModelError::EpisodeShape {
            found: shape,
            why: format!(
                "the model was built for {n_way}-way episodes (its prototype weights are [{n_way}, {k_shot}, 1]); \
                 sample {n_way} classes per episode or build a new model"
            ),
        });
    }
    if shape[1] <= k_shot {
        return Err(ModelError::EpisodeShape {
            found: shape,
            why: format!("each class needs {k_shot} support images plus at least one query"),
        });
    }
    Ok(())
}

/// The implicit targets of an episode: `[0,…,0, 1,…,1, …]`, each class repeated `n_query` times.
pub fn episode_targets<B: Backend>(
    n_way: usize,
    n_query: usize,
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    Tensor::<B, 1, Int>::arange(0..n_way as i64, device)
        .reshape([n_way, 1])
        .repeat_dim(1, n_query)
        .reshape([n_way * n_query])
}

/// Mean cross-entropy of the scores against the implicit targets, computed in f32 (spec §2.6).
///
/// # Shapes
/// - `scores`: `[N·M, N]`
/// - output: `[1]`
pub fn episode_loss<B: Backend>(scores: Tensor<B, 2>, n_query: usize) -> Tensor<B, 1> {
    let [q, n_way] = scores.dims();
    let targets = episode_targets::<B>(n_way, n_query, &scores.device()).reshape([q, 1]);
    log_softmax(to_f32(scores), 1).gather(1, targets).mean().neg()
}

/// Fraction of queries whose highest score is their class.
pub fn episode_accuracy<B: Backend>(scores: Tensor<B, 2>, n_query: usize) -> f64 {
    let [q, n_way] = scores.dims();
    let targets = episode_targets::<B>(n_way, n_query, &scores.device());
    let predicted = scores.argmax(1).reshape([q]);
    let correct = predicted.equal(targets).int().sum().into_scalar();
    correct.elem::<f64>() / q as f64
}
