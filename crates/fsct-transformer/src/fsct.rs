#![allow(non_snake_case)] // `ATTN` and `FFN` mirror the reference checkpoint keys.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::attention::Attention;
use crate::config::FsctConfig;
use crate::episode::{check_way_shot, EpisodeForward, FewShotModel};
use crate::error::ModelError;
use crate::feed_forward::FeedForward;
use crate::head::OutputHead;
use fsct_backbone::Backbone;

/// The Few-Shot Cosine Transformer (spec §2) around a backbone `F`.
///
/// Field names mirror the reference's state dict (`proto_weight`, `feature.*`, `ATTN.*`, `FFN.*`,
/// `linear.*`) so that [`crate::import`] maps checkpoints key by key.
#[derive(Module, Debug)]
pub struct FewShotTransformer<B: Backend, F: Module<B>> {
    /// Prototype weights `[N, K, 1]`, initialised to ones; softmax over the shots.
    pub proto_weight: Param<Tensor<B, 3>>,
    /// The backbone.
    pub feature: F,
    /// The attention of each encoder block (the reference shares one module across `depth`).
    pub ATTN: Attention<B>,
    /// The feed-forward of each encoder block (shared across `depth`, as in the reference).
    pub FFN: FeedForward<B>,
    /// The output head.
    pub linear: OutputHead<B>,
    /// Number of encoder iterations.
    #[module(skip)]
    pub depth: usize,
    /// Flattened feature dimension d.
    #[module(skip)]
    pub dim: usize,
}

/// Every intermediate of one FS-CT forward pass, named as in the parity fixtures.
#[derive(Debug, Clone)]
pub struct FsctIntermediates<B: Backend> {
    /// Backbone output, flattened: `[N·(K+M), d]`.
    pub features: Tensor<B, 2>,
    /// Softmax of `proto_weight` over the shots: `[N, K, 1]`.
    pub proto_softmax: Tensor<B, 3>,
    /// Weighted prototypes: `[1, N, d]`.
    pub z_proto: Tensor<B, 3>,
    /// Query features: `[Q, 1, d]`.
    pub z_query: Tensor<B, 3>,
    /// Attention output plus residual: `[Q, N, d]`.
    pub after_attn: Tensor<B, 3>,
    /// FFN output plus residual: `[Q, N, d]`.
    pub after_ffn: Tensor<B, 3>,
    /// Scores `[Q, N]`.
    pub scores: Tensor<B, 2>,
    /// Support features `[N, K, d]`.
    pub support: Tensor<B, 3>,
}

impl FsctConfig {
    /// Builds FS-CT around `backbone` with the reference initialisation (PyTorch default Linear
    /// init, LayerNorm 1/0, `proto_weight` = 1).
    ///
    /// `dim` must equal `backbone.feature_dim(image_shape)` for the images it will see; the
    /// training binary computes it that way, and [`FewShotModel::check_episode`] verifies it.
    pub fn init<B: Backend, F: Backbone<B>>(
        &self,
        backbone: F,
        device: &B::Device,
    ) -> FewShotTransformer<B, F> {
        FewShotTransformer {
            proto_weight: Param::from_tensor(Tensor::ones([self.n_way, self.k_shot, 1], device)),
            feature: backbone,
            ATTN: Attention::new(self.dim, self.heads, self.dim_head, self.variant, device),
            FFN: FeedForward::new(self.dim, self.mlp_dim, device),
            linear: crate::head::OutputHead::new(self.dim, self.dim_head, self.variant, device),
            depth: self.depth,
            dim: self.dim,
        }
    }
}

impl<B: Backend, F: Backbone<B>> FewShotTransformer<B, F> {
    /// Scores the queries of an episode.
    ///
    /// # Shapes
    /// - `episode`: `[N, K+M, C, H, W]`
    /// - output: `[N·M, N]`
    pub fn forward(&self, episode: Tensor<B, 5>) -> Tensor<B, 2> {
        self.forward_detailed(episode).scores
    }

    /// The forward pass, keeping every intermediate (for parity checks and inspection).
    ///
    /// # Shapes
    /// - `episode`: `[N, K+M, C, H, W]`
    /// - output: see [`FsctIntermediates`]
    pub fn forward_detailed(&self, episode: Tensor<B, 5>) -> FsctIntermediates<B> {
        let [n_way, per_class, c, h, w] = episode.dims();
        let maps = {
            let _span = tracing::trace_span!("fsct.backbone").entered();
            self.feature.features(episode.reshape([n_way * per_class, c, h, w]))
        };
        self.head_detailed(maps, n_way, per_class)
    }

    /// Everything after the backbone, from its feature maps `[N·(K+M), c, h, w]`.
    fn head_detailed(
        &self,
        maps: Tensor<B, 4>,
        n_way: usize,
        per_class: usize,
    ) -> FsctIntermediates<B> {
        let k_shot = self.proto_weight.dims()[1];
        let n_query = per_class - k_shot;
        let features = maps.reshape([n_way * per_class, self.dim]);
        let z = features.clone().reshape([n_way, per_class, self.dim]);
        let support = z.clone().narrow(1, 0, k_shot);
        let z_query = z.narrow(1, k_shot, n_query).reshape([n_way * n_query, 1, self.dim]);

        let proto_softmax = softmax(self.proto_weight.val(), 1);
        let z_proto =
            support.clone().mul(proto_softmax.clone()).sum_dim(1).reshape([1, n_way, self.dim]);

        let mut x = z_proto.clone();
        let mut after_attn = x.clone();
        for _ in 0..self.depth {
            let _span = tracing::trace_span!("fsct.block").entered();
            x = self.ATTN.forward(x.clone(), z_query.clone()).add(x);
            after_attn = x.clone();
            x = self.FFN.forward(x.clone()).add(x);
        }
        let scores = self.linear.forward(x.clone());
        FsctIntermediates {
            features,
            proto_softmax,
            z_proto,
            z_query,
            after_attn,
            after_ffn: x,
            scores,
            support,
        }
    }
}

impl<B: Backend, F: Backbone<B>> FewShotModel<B> for FewShotTransformer<B, F> {
    fn n_way(&self) -> usize {
        self.proto_weight.dims()[0]
    }

    fn k_shot(&self) -> usize {
        self.proto_weight.dims()[1]
    }

    fn check_episode(&self, shape: [usize; 5]) -> Result<(), ModelError> {
        check_way_shot(shape, self.n_way(), self.k_shot())?;
        let image = [shape[2], shape[3], shape[4]];
        let d = self.feature.feature_dim(image);
        if d != self.dim {
            return Err(ModelError::EpisodeShape {
                found: shape,
                why: format!(
                    "images of {image:?} give {d} backbone features (map {:?}) but the transformer was built for \
                     d = {}; build it with dim = {d} or feed images of the size it was built for",
                    self.feature.feature_shape(image),
                    self.dim
                ),
            });
        }
        Ok(())
    }

    fn forward_episode(&self, episode: Tensor<B, 5>) -> EpisodeForward<B> {
        episode_forward(self.forward_detailed(episode))
    }

    fn forward_maps(
        &self,
        maps: Tensor<B, 4>,
        n_way: usize,
        per_class: usize,
    ) -> EpisodeForward<B> {
        episode_forward(self.head_detailed(maps, n_way, per_class))
    }
}

/// What [`FewShotModel`] returns, from the intermediates.
fn episode_forward<B: Backend>(out: FsctIntermediates<B>) -> EpisodeForward<B> {
    let [q, _, d] = out.z_query.dims();
    EpisodeForward { scores: out.scores, support: out.support, query: out.z_query.reshape([q, d]) }
}
