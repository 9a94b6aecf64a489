//! The sections of the config file (`[data]`, `[episodes]`, `[model]`, `[optim]`, `[memory]`,
//! `[run]`; `[vic]` is fsct-vic's [`VicConfig`](fsct_vic::VicConfig)) with their reference defaults.

use std::path::PathBuf;

use fsct_backbone::BackboneName;
use serde::{Deserialize, Serialize};

/// The kind of dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Procedural glyphs made in code (no files): the quickstart's data.
    Synthetic,
    /// The reference's split files `base.json`, `val.json`, `novel.json` in `root`.
    Json,
    /// Image folders `root/{train,val,test}/<class>/<image>`.
    Folder,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `synthetic` (default), `json` or `folder`.
    pub kind: DatasetKind,
    /// The dataset's folder (json: holds the split files; folder: holds train/val/test).
    pub root: Option<PathBuf>,
    /// The reference dataset name (miniImagenet, CUB, CIFAR, Omniglot, …): decides the default
    /// image size (spec §3.2) and the results-file setting name.
    pub name: String,
    /// Base (training) split file name for `json`, default `base.json`.
    pub base_split: String,
    /// Validation split file name for `json`, default `val.json`.
    pub val_split: String,
    /// Test split file name for `json`, default `novel.json` (the reference's `--split novel`).
    pub test_split: String,
    /// Image side in pixels; default per backbone and dataset as the reference (84 Conv, 224
    /// ResNet; CIFAR 64/112).
    pub image_size: Option<usize>,
    /// Training augmentation (random resized crop, flip, colour jitter); the reference's `--train_aug`.
    pub train_aug: bool,
    /// Use the reference's 2022 evaluation transform (extra 1.15× square resize), which produced
    /// the published numbers.
    pub eval_reference_2022: bool,
    /// Loader worker threads.
    pub threads: usize,
    /// Episodes decoded ahead of training.
    pub prefetch: usize,
    /// Keep decoded, resized images in memory (for datasets that fit).
    pub cache: bool,
    /// Synthetic dataset: number of classes (split 64/16/20 %).
    pub synthetic_classes: usize,
    /// Synthetic dataset: images per class.
    pub synthetic_images_per_class: usize,
    /// Synthetic dataset: side at which glyphs are drawn before the transforms.
    pub synthetic_native_size: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            kind: DatasetKind::Synthetic,
            root: None,
            name: "synthetic".into(),
            base_split: "base.json".into(),
            val_split: "val.json".into(),
            test_split: "novel.json".into(),
            image_size: None,
            train_aug: false,
            eval_reference_2022: false,
            threads: 2,
            prefetch: 4,
            cache: false,
            synthetic_classes: 100,
            synthetic_images_per_class: 60,
            synthetic_native_size: 32,
        }
    }
}

/// `[episodes]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodesConfig {
    /// Classes per episode (N), the reference's `--n_way`.
    pub n_way: usize,
    /// Support images per class (K), `--k_shot`.
    pub k_shot: usize,
    /// Query images per class (M), `--n_query`.
    pub n_query: usize,
    /// Training episodes per epoch, `--n_episode` (the reference validates on as many).
    pub train_episodes: usize,
    /// Validation episodes per epoch; default: as many as training episodes, like the reference.
    pub val_episodes: Option<usize>,
    /// Test episodes, `--test_iter`.
    pub test_episodes: usize,
    /// Training episodes per optimizer step, over all peers (data-parallel training, see
    /// `crate::parallel`): their gradients are averaged. Default: one per peer (one on a single
    /// device, the reference's step). More than the peers accumulates gradients on each.
    pub per_step: Option<usize>,
}

impl Default for EpisodesConfig {
    fn default() -> Self {
        Self {
            n_way: 5,
            k_shot: 5,
            n_query: 16,
            train_episodes: 200,
            val_episodes: None,
            test_episodes: 600,
            per_step: None,
        }
    }
}

impl EpisodesConfig {
    /// Validation episodes per epoch.
    pub fn val_episodes(&self) -> usize {
        self.val_episodes.unwrap_or(self.train_episodes)
    }
}

/// The few-shot method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// FS-CT with cosine attention (the paper's).
    #[serde(rename = "FSCT_cosine")]
    FsctCosine,
    /// FS-CT with softmax attention.
    #[serde(rename = "FSCT_softmax")]
    FsctSoftmax,
    /// CTX with cosine attention.
    #[serde(rename = "CTX_cosine")]
    CtxCosine,
    /// CTX with softmax attention.
    #[serde(rename = "CTX_softmax")]
    CtxSoftmax,
}

impl Method {
    /// The reference's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::FsctCosine => "FSCT_cosine",
            Self::FsctSoftmax => "FSCT_softmax",
            Self::CtxCosine => "CTX_cosine",
            Self::CtxSoftmax => "CTX_softmax",
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `FSCT_cosine` (default), `FSCT_softmax`, `CTX_cosine` or `CTX_softmax`.
    pub method: Method,
    /// Conv4, Conv6, Conv4NP, Conv6NP, Conv4S, Conv6S, Conv4SNP, Conv6SNP, ResNet12, ResNet18,
    /// ResNet34. The reference's default is ResNet18. Written as the reference's name (see
    /// `backbone_name` in this file); whether a ResNet is FETI is `feti`'s to say (see [`Config::backbone`](super::Config::backbone)).
    #[serde(with = "backbone_name")]
    pub backbone: BackboneName,
    /// ResNets: the trained "FETI" layout instead of the frozen torchvision one (`--FETI`).
    pub feti: bool,
    /// Encoder blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width per head.
    pub dim_head: usize,
    /// FFN hidden width.
    pub mlp_dim: usize,
    /// Train a torchvision-layout ResNet (ResNet18/34 without `feti`) end to end, as the fork's
    /// memory guide does. The reference (default `false`) freezes it with BatchNorm on batch
    /// statistics — meaningful only with ImageNet weights (fsct downloads none: give your copy
    /// of torchvision's file in `pretrained`).
    pub train_backbone: bool,
    /// Pretrained backbone weights, loaded when a new run starts (a resumed run and `test` take
    /// every weight from their checkpoint and never read this file). ResNets only, in their
    /// layout: a torchvision ImageNet state dict (`resnet18-f37072fd.pth`,
    /// `resnet34-b627a593.pth`) for ResNet18/34 without `feti`, the reference's
    /// `Pretrained_ResNet_FETI.pt.tar` with `feti = true`. A relative path is taken from the
    /// working directory, as `data.root`. Every key the backbone needs must be in the file, with
    /// its shape (see `fsct_transformer::import::import_backbone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Add VIC regularization (section `[vic]`) to the loss.
    pub use_vic: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            method: Method::FsctCosine,
            backbone: BackboneName::ResNet { depth: 18, feti: false },
            feti: false,
            depth: 1,
            heads: 8,
            dim_head: 64,
            mlp_dim: 512,
            train_backbone: false,
            pretrained: None,
            use_vic: false,
        }
    }
}

/// The optimizer (`optim.optimizer`), the reference's `--optimization`: each is Burn's
/// implementation with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8 for the Adams; no dampening
/// for SGD), all taking `optim.learning_rate` and `optim.weight_decay` as the reference does.
///
/// In a config file the name is case-insensitive (`"AdamW"` as the reference writes it reads as
/// `"adamw"`); it is written lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW, decoupled weight decay (the reference's default): `burn::optim::AdamW`.
    #[default]
    AdamW,
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`'s `weight_decay`):
    /// `burn::optim::Adam`.
    Adam,
    /// SGD with L2 weight decay and momentum `optim.momentum` (0 = plain SGD), Nesterov's when
    /// `optim.nesterov` (`torch.optim.SGD` without dampening): `burn::optim::Sgd`.
    Sgd,
}

impl OptimizerKind {
    /// The value as written in a config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdamW => "adamw",
            Self::Adam => "adam",
            Self::Sgd => "sgd",
        }
    }

    /// Whether the update divides by the gradients' second moment (Adam, AdamW), so that it does
    /// not depend on the gradients' scale (what pure f16 relies on, see [`crate::step`]).
    pub fn is_adaptive(self) -> bool {
        matches!(self, Self::AdamW | Self::Adam)
    }

    /// The buffers the optimizer keeps per trained parameter: two moments for Adam and AdamW,
    /// the momentum buffer for SGD with `momentum` > 0, none for plain SGD.
    pub fn state_buffers(self, momentum: f64) -> u64 {
        match self {
            Self::AdamW | Self::Adam => 2,
            Self::Sgd if momentum > 0.0 => 1,
            Self::Sgd => 0,
        }
    }
}

impl<'de> Deserialize<'de> for OptimizerKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.to_ascii_lowercase().as_str() {
            "adamw" => Ok(Self::AdamW),
            "adam" => Ok(Self::Adam),
            "sgd" => Ok(Self::Sgd),
            _ => Err(serde::de::Error::custom(format!(
                "unknown optimizer \"{name}\": use \"adamw\" (the reference's default), \"adam\" or \"sgd\""
            ))),
        }
    }
}

/// The learning rate schedule (`optim.schedule`), per optimizer step, after the optional linear
/// warm-up (`optim.warmup_steps`). The reference has none: `constant` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduleKind {
    /// `optim.learning_rate` at every step (`burn::lr_scheduler::constant::ConstantLr`).
    #[default]
    Constant,
    /// Cosine annealing from `optim.learning_rate` to `optim.min_learning_rate` over the steps
    /// after the warm-up to the end of the run (`optim.epochs` × `episodes.train_episodes`), as
    /// PyTorch's `CosineAnnealingLR` with `T_max` = those steps
    /// (`burn::lr_scheduler::cosine::CosineAnnealingLrScheduler`).
    Cosine,
    /// `optim.learning_rate` × `optim.gamma`^⌊s / `optim.step_size`⌋ at step s after the warm-up,
    /// as PyTorch's `StepLR` stepped per optimizer step (`burn::lr_scheduler::step::StepLrScheduler`).
    Step,
}

impl LrScheduleKind {
    /// The value as written in a config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
            Self::Step => "step",
        }
    }
}

/// `[optim]`: the optimizer, its learning rate schedule, gradient clipping, early stopping and
/// the number of epochs. Every default is the reference's behaviour: AdamW, lr 1e-3, weight
/// decay 1e-5, constant rate, no warm-up, no clipping, no early stopping, 50 epochs.
///
/// Schedules count optimizer steps (one per training episode; a step mixed precision skips for
/// inf/NaN gradients still counts), so their position is `steps` of the trainer state and a
/// resumed run continues them exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `adamw` (default, the reference's), `adam` or `sgd` (see [`OptimizerKind`]).
    pub optimizer: OptimizerKind,
    /// The learning rate: constant, or where the schedule starts after the warm-up.
    pub learning_rate: f64,
    /// Weight decay: decoupled for AdamW, an L2 term added to the gradient for Adam and SGD (as
    /// `torch.optim`).
    pub weight_decay: f64,
    /// SGD's momentum factor in [0, 1) (the reference's `--momentum`, 0.9; 0 = plain SGD). Only
    /// SGD reads it.
    pub momentum: f64,
    /// SGD: Nesterov momentum (needs `momentum` > 0).
    pub nesterov: bool,
    /// `constant` (default), `cosine` or `step` (see [`LrScheduleKind`]).
    pub schedule: LrScheduleKind,
    /// Steps of linear warm-up before the schedule (0 = none): step s < W uses
    /// `learning_rate` × (s + 1) / (W + 1), then the schedule starts at `learning_rate`.
    pub warmup_steps: u64,
    /// `cosine`: the rate the schedule ends at (default 0).
    pub min_learning_rate: f64,
    /// `step`: optimizer steps between two multiplications by `gamma` (required for `step`;
    /// one epoch is `episodes.train_episodes` steps).
    pub step_size: Option<u64>,
    /// `step`: the factor applied every `step_size` steps, in (0, 1) (default 0.1, PyTorch's).
    pub gamma: f64,
    /// Clip each parameter tensor's gradient to this L2 norm before the update (Burn's
    /// `GradientClippingConfig::Norm`, which clips per parameter tensor, not over all
    /// parameters together as PyTorch's `clip_grad_norm_`). Default: no clipping.
    pub grad_clip_norm: Option<f64>,
    /// Stop training when validation accuracy has not improved for this many epochs (the best
    /// model is still tested). Default: never; may change when a run resumes.
    pub early_stopping_patience: Option<usize>,
    /// Epochs, `--num_epoch`.
    pub epochs: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::AdamW,
            learning_rate: 1e-3,
            weight_decay: 1e-5,
            momentum: 0.9,
            nesterov: false,
            schedule: LrScheduleKind::Constant,
            warmup_steps: 0,
            min_learning_rate: 0.0,
            step_size: None,
            gamma: 0.1,
            grad_clip_norm: None,
            early_stopping_patience: None,
            epochs: 50,
        }
    }
}

impl OptimConfig {
    /// Optimizer steps in the whole run (`epochs` × `train_episodes`).
    pub fn total_steps(&self, train_episodes: usize) -> u64 {
        self.epochs as u64 * train_episodes as u64
    }
}

/// Numeric precision of training (`memory.precision`): the policy type of `fsct-precision`,
/// whose methods say what each value means (dtypes, layers kept in f32, loss scaling).
pub use fsct_precision::Precision;

/// Gradient checkpointing (`memory.gradient_checkpoint`): what the backward pass recomputes
/// instead of keeping from the forward pass.
///
/// In a config file: `false` or `"none"`, `true` or `"balanced"`, `"blocks"`, `"stages"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpointing {
    /// Keep every activation the backward pass needs.
    #[default]
    None,
    /// Burn's op-level strategy, `Autodiff<B, BalancedCheckpointing>`: memory-bound results
    /// (element-wise ops) are recomputed, compute-bound ones (every convolution and matmul output)
    /// kept.
    Balanced,
    /// Segment checkpointing (as PyTorch's `checkpoint_sequential`): each backbone block (a Conv
    /// block, a ResNet stem or BasicBlock) keeps only its input during the forward pass and is run
    /// again in the backward pass (`fsct_backbone::segments`).
    Blocks,
    /// As [`Self::Blocks`] with whole ResNet stages as segments (fewer inputs kept, a larger
    /// segment recomputed at a time); the same as `Blocks` for the Conv backbones.
    Stages,
}

impl Checkpointing {
    /// The value as written in a config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Balanced => "balanced",
            Self::Blocks => "blocks",
            Self::Stages => "stages",
        }
    }

    /// The backbone segments checkpointed, for the segment modes.
    pub fn segments(self) -> Option<fsct_backbone::SegmentLevel> {
        match self {
            Self::Blocks => Some(fsct_backbone::SegmentLevel::Blocks),
            Self::Stages => Some(fsct_backbone::SegmentLevel::Stages),
            Self::None | Self::Balanced => None,
        }
    }

    /// Whether anything is recomputed.
    pub fn is_on(self) -> bool {
        self != Self::None
    }
}

impl Serialize for Checkpointing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Checkpointing {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `true`/`false` as before segment checkpointing existed, or one of the names.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Switch(bool),
            Name(String),
        }
        let written = Written::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected true, false, \"none\", \"balanced\", \"blocks\" or \"stages\"",
            )
        })?;
        match written {
            Written::Switch(false) => Ok(Self::None),
            Written::Switch(true) => Ok(Self::Balanced),
            Written::Name(name) => match name.as_str() {
                "none" => Ok(Self::None),
                "balanced" => Ok(Self::Balanced),
                "blocks" => Ok(Self::Blocks),
                "stages" => Ok(Self::Stages),
                other => Err(serde::de::Error::custom(format!(
                    "unknown value \"{other}\": use \"none\" (or false), \"balanced\" (or true), \
                     \"blocks\" or \"stages\""
                ))),
            },
        }
    }
}

/// `[memory]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// What the backward pass recomputes instead of keeping: `false`/`"none"` (default),
    /// `true`/`"balanced"`, `"blocks"` or `"stages"` (see [`Checkpointing`]).
    pub gradient_checkpoint: Checkpointing,
    /// `f32` (default), `mixed-f16` or `mixed-bf16` (f32 master weights, half compute), or
    /// `f16` / `bf16` (pure half on the backend type; GPU only, bf16 on CUDA only).
    pub precision: Precision,
    /// Release the backend's cached memory every this many steps (0 = never) and between train,
    /// validation and test.
    pub cleanup_every: usize,
    /// Initial dynamic loss scale for mixed precision.
    pub loss_scale: f64,
    /// Good steps before the loss scale doubles.
    pub loss_scale_growth_interval: usize,
    /// A memory budget for training, e.g. `"8GiB"` (default: none). Before training, the memory
    /// planner ([`crate::plan`]) predicts the peak of a training step and of an evaluation
    /// episode and picks the fastest settings that fit: f32 without checkpointing, balanced,
    /// blocks, mixed f16, mixed f16 with blocks (this overrides `gradient_checkpoint` and
    /// `precision`); when none fits, the run is refused (exit 2) naming the closest
    /// configuration that would (fewer queries, a smaller backbone or images). On a GPU it is the
    /// device memory to stay within; on the CPU, the RAM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::plan::Budget>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            gradient_checkpoint: Checkpointing::None,
            precision: Precision::F32,
            cleanup_every: 10,
            loss_scale: 65536.0,
            loss_scale_growth_interval: 200,
            budget: None,
        }
    }
}

/// The compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Burn's Flex CPU backend.
    Cpu,
    /// CUDA (needs a build with `--features cuda` and an NVIDIA GPU).
    Cuda,
    /// Vulkan through wgpu (needs a build with `--features vulkan` and a Vulkan driver): AMD,
    /// Intel and NVIDIA GPUs, Apple GPUs through MoltenVK, or Mesa's software device.
    Vulkan,
}

impl DeviceKind {
    /// The value as written in a config (`run.device`) or on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Vulkan => "vulkan",
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Output folder: checkpoints, metrics, results.
    pub output: PathBuf,
    /// Seed of the model initialisation and of every episode.
    pub seed: u64,
    /// `cpu` (default), `cuda` or `vulkan`.
    pub device: DeviceKind,
    /// Continue from `output/last.ckpt` if it exists.
    pub resume: bool,
    /// Replace a run already in `output` (the `--overwrite` flag only; never read from or
    /// written to a file).
    #[serde(skip)]
    pub overwrite: bool,
    /// Data-parallel peers on this node, comma-separated: `"cpu:0,cpu:1"` (CPU peers, one thread
    /// each with its share of the cores), `"cuda:0,cuda:1"`. Default: the one `run.device`.
    pub devices: Option<String>,
    /// Nodes (machines) of a multi-node run; every node runs the same command (default 1).
    pub nodes: usize,
    /// This node's index among `run.nodes` (0-based; node 0 writes the run's files).
    pub node_rank: usize,
    /// This node's `host:port`, reachable by the other nodes (multi-node runs).
    pub node_address: Option<String>,
    /// The orchestrator's `host:port` (`fsct-train orchestrator --port P`; multi-node runs).
    pub orchestrator: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            output: PathBuf::from("runs/experiment"),
            seed: 4040,
            device: DeviceKind::Cpu,
            resume: false,
            overwrite: false,
            devices: None,
            nodes: 1,
            node_rank: 0,
            node_address: None,
            orchestrator: None,
        }
    }
}

/// `model.backbone` as text, in config files and checkpoint headers: the reference's name
/// ([`BackboneName::reference_name`]), exactly what configs and checkpoints held when the field
/// was a string. An unknown name fails while the file is read, naming the field and the choices.
mod backbone_name {
    use fsct_backbone::{BackboneError, BackboneName};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &BackboneName, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&name.reference_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<BackboneName, D::Error> {
        let text = String::deserialize(input)?;
        text.parse()
            .map_err(|err: BackboneError| D::Error::custom(format!("`model.backbone` {err}")))
    }
}
