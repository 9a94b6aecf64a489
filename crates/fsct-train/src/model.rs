//! The model the binary trains: FS-CT or CTX around a built-in backbone, chosen by the config.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use fsct_backbone::{Backbone, BuiltinBackbone};
use fsct_transformer::{
    AttentionVariant, Ctx, CtxConfig, EpisodeForward, FewShotModel, FewShotTransformer, FsctConfig,
    ModelError,
};

use crate::config::{Config, Method};

/// FS-CT or CTX around a [`BuiltinBackbone`].
// A model is built once and moved a handful of times per step: boxing the large variant would
// buy nothing and add an indirection to every parameter visit.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyModel<B: Backend> {
    /// Few-Shot Cosine Transformer.
    Fsct(FewShotTransformer<B, BuiltinBackbone<B>>),
    /// The CTX baseline.
    Ctx(Ctx<B, BuiltinBackbone<B>>),
}

impl<B: Backend> AnyModel<B> {
    /// The backbone.
    pub fn backbone(&self) -> &BuiltinBackbone<B> {
        match self {
            Self::Fsct(m) => &m.feature,
            Self::Ctx(m) => &m.feature,
        }
    }

    /// Whether any backbone parameter is trained (`false` for the frozen torchvision ResNets:
    /// their forward pass records nothing, so segment checkpointing has nothing to save).
    pub fn trains_backbone(&self) -> bool {
        struct AnyTrainable(bool);
        impl<B: Backend> ModuleVisitor<B> for AnyTrainable {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0 |= param.val().is_require_grad();
            }
        }
        let mut any = AnyTrainable(false);
        self.backbone().visit(&mut any);
        any.0
    }
}

/// Builds the configured model, sized from the backbone's output at the configured image size,
/// with the reference initialisation throughout: `model.pretrained` is not read. For a model
/// whose weights then come from a checkpoint (a resumed run, `test`, the best model, an import,
/// the memory planner's measurements), where the pretrained file would be overwritten anyway
/// and need not exist any more. A new training run uses [`build_new_model`].
pub fn build_model<B: Backend>(
    config: &Config,
    device: &B::Device,
) -> Result<AnyModel<B>, ModelError> {
    let backbone = config.backbone().init_with::<B>(config.model.train_backbone, device);
    assemble(config, backbone, device)
}

/// As [`build_model`], for the start of a new training run: the backbone's weights (BatchNorm
/// statistics included) come from `model.pretrained` when it is set, checked key by key and
/// shape by shape ([`fsct_transformer::import::import_backbone`]), before the head is sized
/// and initialised. A frozen torchvision backbone stays frozen (`model.train_backbone = false`:
/// the reference's setup, spec §1.5); a trained one stays trained.
///
/// # Errors
/// [`ModelError`] as [`build_model`]; an [`ImportError`](fsct_transformer::import::ImportError)
/// naming the file and the key (exit code 2) when the file does not fit the backbone.
pub fn build_new_model<B: Backend>(
    config: &Config,
    device: &B::Device,
) -> anyhow::Result<AnyModel<B>> {
    let name = config.backbone();
    let mut backbone = name.init_with::<B>(config.model.train_backbone, device);
    if let Some(file) = &config.model.pretrained {
        backbone = match backbone {
            BuiltinBackbone::ResNet(net) => {
                let (net, report) = fsct_transformer::import::import_backbone(net, file)?;
                tracing::info!(
                    file = %file.display(),
                    backbone = %name,
                    loaded = report.loaded.len(),
                    frozen = !config.model.train_backbone && !config.model.feti,
                    "model.pretrained: backbone weights loaded"
                );
                BuiltinBackbone::ResNet(net)
            }
            BuiltinBackbone::Conv(_) => {
                return Err(ModelError::Config {
                    field: "model.pretrained",
                    why: format!("is set, but {name} has no pretrained weights layout; remove the line or pick a ResNet"),
                }
                .into())
            }
        };
    }
    Ok(assemble(config, backbone, device)?)
}

/// The model around `backbone`, its head sized from the backbone's output.
fn assemble<B: Backend>(
    config: &Config,
    backbone: BuiltinBackbone<B>,
    device: &B::Device,
) -> Result<AnyModel<B>, ModelError> {
    let name = config.backbone();
    let side = config.image_size();
    let [c, h, w] = backbone.feature_shape([3, side, side]);
    if c * h * w == 0 {
        return Err(ModelError::Config {
            field: "data.image_size",
            why: format!("{side} px is too small for {name}: its feature map would be empty; use larger images"),
        });
    }
    let e = &config.episodes;
    let m = &config.model;
    let (variant, ctx) = match m.method {
        Method::FsctCosine => (AttentionVariant::Cosine, false),
        Method::FsctSoftmax => (AttentionVariant::Softmax, false),
        Method::CtxCosine => (AttentionVariant::Cosine, true),
        Method::CtxSoftmax => (AttentionVariant::Softmax, true),
    };
    Ok(if ctx {
        AnyModel::Ctx(
            CtxConfig::new(e.n_way, e.k_shot, c).with_variant(variant).init(backbone, device),
        )
    } else {
        let fsct = FsctConfig::new(e.n_way, e.k_shot, c * h * w)
            .with_variant(variant)
            .with_depth(m.depth)
            .with_heads(m.heads)
            .with_dim_head(m.dim_head)
            .with_mlp_dim(m.mlp_dim);
        fsct.validate()?;
        AnyModel::Fsct(fsct.init(backbone, device))
    })
    .inspect(|model| {
        // Burn draws a parameter's initial values lazily, at its first use, and a clone made
        // before that draws its own. The mixed-precision half copy is such a clone: without this,
        // the first half step would run on other weights than the f32 master's.
        model.visit(&mut Materialise);
    })
}

/// Touches every float parameter, which makes Burn draw its initial values now.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

impl<B: Backend> FewShotModel<B> for AnyModel<B> {
    fn n_way(&self) -> usize {
        match self {
            Self::Fsct(m) => m.n_way(),
            Self::Ctx(m) => m.n_way(),
        }
    }

    fn k_shot(&self) -> usize {
        match self {
            Self::Fsct(m) => m.k_shot(),
            Self::Ctx(m) => m.k_shot(),
        }
    }

    fn check_episode(&self, shape: [usize; 5]) -> Result<(), ModelError> {
        match self {
            Self::Fsct(m) => m.check_episode(shape),
            Self::Ctx(m) => m.check_episode(shape),
        }
    }

    fn forward_episode(&self, episode: Tensor<B, 5>) -> EpisodeForward<B> {
        match self {
            Self::Fsct(m) => m.forward_episode(episode),
            Self::Ctx(m) => m.forward_episode(episode),
        }
    }

    fn forward_maps(
        &self,
        maps: Tensor<B, 4>,
        n_way: usize,
        per_class: usize,
    ) -> EpisodeForward<B> {
        match self {
            Self::Fsct(m) => m.forward_maps(maps, n_way, per_class),
            Self::Ctx(m) => m.forward_maps(maps, n_way, per_class),
        }
    }
}
