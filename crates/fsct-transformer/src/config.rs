use burn::prelude::*;

/// The attention of FS-CT and CTX (`--method FSCT_cosine|FSCT_softmax|CTX_cosine|CTX_softmax`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum AttentionVariant {
    /// Cosine similarity, no softmax, no scale (the paper's contribution).
    Cosine,
    /// Scaled dot product and softmax. For FS-CT the softmax runs over an axis of size 1 in the
    /// reference, so all weights are 1 (spec §2.3); this is reproduced as is.
    Softmax,
}

/// Configuration of [`crate::FewShotTransformer`], with the reference's defaults (spec §2).
#[derive(Config, Debug)]
pub struct FsctConfig {
    /// Classes per episode (N). `proto_weight` is `[n_way, k_shot, 1]`, so a model is tied to it.
    pub n_way: usize,
    /// Support images per class (K).
    pub k_shot: usize,
    /// Flattened backbone feature dimension d (1600 for Conv4 at 84 px, 25088 for ResNets).
    pub dim: usize,
    /// Cosine or softmax attention.
    #[config(default = "AttentionVariant::Cosine")]
    pub variant: AttentionVariant,
    /// Number of encoder blocks.
    #[config(default = 1)]
    pub depth: usize,
    /// Attention heads H.
    #[config(default = 8)]
    pub heads: usize,
    /// Width of each head Dh; the inner width is H·Dh (512).
    #[config(default = 64)]
    pub dim_head: usize,
    /// Hidden width of the FFN.
    #[config(default = 512)]
    pub mlp_dim: usize,
}

impl FsctConfig {
    /// Checks the values that would otherwise fail deep inside a forward pass.
    pub fn validate(&self) -> Result<(), crate::ModelError> {
        let positive = [
            ("n_way", self.n_way),
            ("k_shot", self.k_shot),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("dim_head", self.dim_head),
            ("mlp_dim", self.mlp_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(crate::ModelError::Config { field, why: "must be at least 1".into() });
            }
        }
        if self.n_way < 2 {
            return Err(crate::ModelError::Config {
                field: "n_way",
                why: "must be at least 2: the reference squeezes the score matrix, which collapses for one class".into(),
            });
        }
        Ok(())
    }
}

/// Configuration of [`crate::Ctx`] (spec §2.8).
#[derive(Config, Debug)]
pub struct CtxConfig {
    /// Classes per episode (N).
    pub n_way: usize,
    /// Support images per class (K).
    pub k_shot: usize,
    /// Channels c of the backbone's feature map (512 for ResNets, 64 for Conv nets).
    pub in_channels: usize,
    /// Cosine or softmax attention over the shots.
    #[config(default = "AttentionVariant::Cosine")]
    pub variant: AttentionVariant,
    /// Width of the shared 1×1 projection.
    #[config(default = 128)]
    pub dim_attn: usize,
}
