use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::config::{AttentionVariant, CtxConfig};
use crate::episode::{check_way_shot, EpisodeForward, FewShotModel};
use crate::error::ModelError;
use fsct_backbone::Backbone;
use fsct_precision::{to_dtype, to_f32};

/// The reference's CTX baseline (spec §2.8) around a backbone `F` that yields `[c, h, w]` maps.
///
/// One 1×1 projection (`linear_attn`, c → 128, no bias) is shared by queries and supports, keys
/// and values (HEAD code). Each query attends over the K shots of each class with whole
/// flattened maps; the score is the negative squared distance between the query and its
/// attended class map, divided by h·w.
#[derive(Module, Debug)]
pub struct Ctx<B: Backend, F: Module<B>> {
    /// The backbone (not flattened).
    pub feature: F,
    /// The shared 1×1 projection, `[128, c, 1, 1]`.
    pub linear_attn: Conv2d<B>,
    /// Classes per episode.
    #[module(skip)]
    pub n_way: usize,
    /// Support images per class.
    #[module(skip)]
    pub k_shot: usize,
    /// Cosine or softmax attention over the shots.
    #[module(skip)]
    pub variant: AttentionVariant,
    /// Width of the projection.
    #[module(skip)]
    pub dim_attn: usize,
}

impl CtxConfig {
    /// Builds CTX around `backbone` (PyTorch's default conv init for the projection).
    pub fn init<B: Backend, F: Backbone<B>>(&self, backbone: F, device: &B::Device) -> Ctx<B, F> {
        Ctx {
            feature: backbone,
            linear_attn: Conv2dConfig::new([self.in_channels, self.dim_attn], [1, 1])
                .with_bias(false)
                .init(device),
            n_way: self.n_way,
            k_shot: self.k_shot,
            variant: self.variant,
            dim_attn: self.dim_attn,
        }
    }
}

impl<B: Backend, F: Backbone<B>> Ctx<B, F> {
    /// Scores the queries of an episode.
    ///
    /// # Shapes
    /// - `episode`: `[N, K+M, C, H, W]`
    /// - output: `[N·M, N]`
    pub fn forward(&self, episode: Tensor<B, 5>) -> Tensor<B, 2> {
        self.forward_episode(episode).scores
    }
}

impl<B: Backend, F: Backbone<B>> FewShotModel<B> for Ctx<B, F> {
    fn n_way(&self) -> usize {
        self.n_way
    }

    fn k_shot(&self) -> usize {
        self.k_shot
    }

    fn check_episode(&self, shape: [usize; 5]) -> Result<(), ModelError> {
        check_way_shot(shape, self.n_way, self.k_shot)?;
        let [c, h, w] = self.feature.feature_shape([shape[2], shape[3], shape[4]]);
        let expected = self.linear_attn.weight.dims()[1];
        if c != expected || h * w == 0 {
            return Err(ModelError::EpisodeShape {
                found: shape,
                why: format!(
                    "the backbone gives [{c}, {h}, {w}] maps but CTX was built for {expected} channels; \
                     set in_channels = {c} (and use images large enough for a non-empty map)"
                ),
            });
        }
        Ok(())
    }

    fn forward_episode(&self, episode: Tensor<B, 5>) -> EpisodeForward<B> {
        let [n_way, per_class, c, h, w] = episode.dims();
        let maps = {
            let _span = tracing::trace_span!("ctx.backbone").entered();
            self.feature.features(episode.reshape([n_way * per_class, c, h, w]))
        };
        self.forward_maps(maps, n_way, per_class)
    }

    fn forward_maps(
        &self,
        maps: Tensor<B, 4>,
        n_way: usize,
        per_class: usize,
    ) -> EpisodeForward<B> {
        let k_shot = self.k_shot;
        let n_query = per_class - k_shot;
        let q_count = n_way * n_query;
        let [_, fc, fh, fw] = maps.dims();
        let flat = maps.clone().reshape([n_way, per_class, fc * fh * fw]);
        let support_emb = flat.clone().narrow(1, 0, k_shot);
        let query_emb = flat.narrow(1, k_shot, n_query).reshape([q_count, fc * fh * fw]);

        let _span = tracing::trace_span!("ctx.attention").entered();
        let proj = self.linear_attn.forward(maps); // [N·(K+M), 128, h, w]
        let dim = self.dim_attn * fh * fw;
        let proj = proj.reshape([n_way, per_class, dim]);
        let s = proj.clone().narrow(1, 0, k_shot); // [N, K, D]
        let q = proj.narrow(1, k_shot, n_query).reshape([q_count, dim]); // [Q, D]
        let dtype = q.dtype();
        let (s32, q32) = (to_f32(s.clone()), to_f32(q.clone()));
        // dots[b, n, k] = <q_b, s_{n,k}>
        let dots = q32
            .clone()
            .matmul(s32.clone().reshape([n_way * k_shot, dim]).transpose())
            .reshape([q_count, n_way, k_shot]);
        let attn = match self.variant {
            AttentionVariant::Softmax => softmax(dots.div_scalar((self.dim_attn as f64).sqrt()), 2),
            AttentionVariant::Cosine => {
                let q_norm = q32.clone().square().sum_dim(1).sqrt().reshape([q_count, 1, 1]);
                let s_norm = s32.square().sum_dim(2).sqrt().reshape([1, n_way, k_shot]);
                dots.div(q_norm.mul(s_norm))
            }
        };
        // o[b, n] = Σ_k a[b, n, k] s_{n,k}: batched over classes.
        let attn = to_dtype(attn, dtype).swap_dims(0, 1); // [N, Q, K]
        let attended = attn.matmul(s).swap_dims(0, 1); // [Q, N, D]
        let diff = to_f32(q.reshape([q_count, 1, dim])).sub(to_f32(attended));
        let scores =
            diff.square().sum_dim(2).reshape([q_count, n_way]).div_scalar((fh * fw) as f64).neg();
        EpisodeForward { scores: to_dtype(scores, dtype), support: support_emb, query: query_emb }
    }
}
