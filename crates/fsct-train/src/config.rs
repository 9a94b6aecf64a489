//! The experiment configuration: a TOML file, every field documented, defaults from the reference
//! (spec §3.1), unknown keys rejected.

use std::path::{Path, PathBuf};

use fsct_backbone::BackboneName;
use fsct_vic::VicConfig;
use serde::{Deserialize, Serialize};

/// One experiment. Sections: `[data]`, `[episodes]`, `[model]`, `[vic]`, `[optim]`, `[memory]`, `[run]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where images come from and how they are transformed.
    pub data: DataConfig,
    /// Episode sizes and counts.
    pub episodes: EpisodesConfig,
    /// Method, backbone and transformer sizes.
    pub model: ModelConfig,
    /// VIC regularization (used when `model.use_vic = true`).
    pub vic: VicConfig,
    /// Optimizer and schedule.
    pub optim: OptimConfig,
    /// Memory features.
    pub memory: MemoryConfig,
    /// Output, seed, device, resume.
    pub run: RunConfig,
}

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
    /// ResNet34. The reference's default is ResNet18.
    pub backbone: String,
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
    /// statistics — meaningful only with ImageNet weights, which fsct cannot download.
    pub train_backbone: bool,
    /// Add VIC regularization (section `[vic]`) to the loss.
    pub use_vic: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            method: Method::FsctCosine,
            backbone: "ResNet18".into(),
            feti: false,
            depth: 1,
            heads: 8,
            dim_head: 64,
            mlp_dim: 512,
            train_backbone: false,
            use_vic: false,
        }
    }
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Only `adamw` (the reference's default) is implemented.
    pub optimizer: String,
    /// Constant learning rate (the reference has no schedule).
    pub learning_rate: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs, `--num_epoch`.
    pub epochs: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { optimizer: "adamw".into(), learning_rate: 1e-3, weight_decay: 1e-5, epochs: 50 }
    }
}

/// Numeric precision of training (`memory.precision`): the policy type of `fsct-precision`,
/// whose methods say what each value means (dtypes, layers kept in f32, loss scaling).
pub use fsct_precision::Precision;

/// `[memory]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Train on `Autodiff<B, BalancedCheckpointing>`: memory-bound activations are recomputed in
    /// the backward pass instead of kept.
    pub gradient_checkpoint: bool,
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
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            gradient_checkpoint: false,
            precision: Precision::F32,
            cleanup_every: 10,
            loss_scale: 65536.0,
            loss_scale_growth_interval: 200,
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
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            output: PathBuf::from("runs/experiment"),
            seed: 4040,
            device: DeviceKind::Cpu,
            resume: false,
            overwrite: false,
        }
    }
}

/// A configuration error: the file, the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed TOML or an unknown/mistyped key.
    #[error("config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (it names the key and the line).
        message: String,
    },
    /// A value given by a command-line flag that cannot work.
    #[error("command-line flag `{flag}`: `{field}` {why}")]
    Flag {
        /// The flag, e.g. `--image-size`.
        flag: String,
        /// The dotted config field it sets.
        field: String,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// A value that cannot work.
    #[error("config `{path}`: `{field}` {why}")]
    Invalid {
        /// The file (or `<flags>`).
        path: PathBuf,
        /// The dotted field name.
        field: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and parses a TOML file without validating it (a UTF-8 byte-order mark is accepted).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: format!(
                "is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text (`path` is only used in messages; a leading byte-order mark is skipped).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// The backbone, parsed.
    pub fn backbone(&self) -> Result<BackboneName, fsct_backbone::BackboneError> {
        Ok(self.model.backbone.parse::<BackboneName>()?.with_feti(self.model.feti))
    }

    /// The image side: the configured one, or the reference's default for backbone and dataset.
    pub fn image_size(&self) -> usize {
        let resnet = self.backbone().map(|b| b.is_resnet()).unwrap_or(false);
        self.data
            .image_size
            .unwrap_or_else(|| fsct_episodes::default_image_size(&self.data.name, resnet))
    }

    /// Checks every value that would otherwise fail later, with the field and the fix.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            path: path.into(),
            field: field.into(),
            why,
        };
        let e = &self.episodes;
        if e.n_way < 2 {
            return Err(invalid(
                "episodes.n_way",
                format!("is {}; use at least 2 classes per episode", e.n_way),
            ));
        }
        for (field, value) in [
            ("episodes.k_shot", e.k_shot),
            ("episodes.n_query", e.n_query),
            ("episodes.train_episodes", e.train_episodes),
            ("episodes.test_episodes", e.test_episodes),
            ("episodes.val_episodes", e.val_episodes()),
            ("optim.epochs", self.optim.epochs),
            ("model.depth", self.model.depth),
            ("model.heads", self.model.heads),
            ("model.dim_head", self.model.dim_head),
            ("model.mlp_dim", self.model.mlp_dim),
            ("data.threads", self.data.threads),
            ("data.prefetch", self.data.prefetch),
        ] {
            if value == 0 {
                return Err(invalid(field, "is 0; it must be at least 1".into()));
            }
        }
        // Upper bounds: far beyond any few-shot setting, low enough that sizes and counts
        // neither overflow nor ask for more memory than any machine has.
        for (field, value, max) in [
            ("episodes.n_way", e.n_way, 1000),
            ("episodes.k_shot", e.k_shot, 1000),
            ("episodes.n_query", e.n_query, 1000),
            ("episodes.train_episodes", e.train_episodes, 10_000_000),
            ("episodes.val_episodes", e.val_episodes(), 10_000_000),
            ("episodes.test_episodes", e.test_episodes, 10_000_000),
            ("optim.epochs", self.optim.epochs, 1_000_000),
            ("model.depth", self.model.depth, 64),
            ("model.heads", self.model.heads, 256),
            ("model.dim_head", self.model.dim_head, 4096),
            ("model.mlp_dim", self.model.mlp_dim, 65_536),
            ("data.threads", self.data.threads, 1024),
            ("data.prefetch", self.data.prefetch, 1024),
            ("data.image_size", self.data.image_size.unwrap_or(8), 2048),
            ("data.synthetic_classes", self.data.synthetic_classes, 100_000),
            ("data.synthetic_images_per_class", self.data.synthetic_images_per_class, 100_000),
            ("data.synthetic_native_size", self.data.synthetic_native_size, 1024),
        ] {
            if value > max {
                return Err(invalid(field, format!("is {value}; it must be at most {max}")));
            }
        }
        if self.data.synthetic_native_size < 8 {
            return Err(invalid(
                "data.synthetic_native_size",
                format!("is {}; use at least 8 pixels", self.data.synthetic_native_size),
            ));
        }
        let episode_bytes =
            (e.n_way * (e.k_shot + e.n_query)) as u128 * 3 * (self.image_size() as u128).pow(2) * 4;
        if episode_bytes > 16 << 30 {
            return Err(invalid(
                "episodes",
                format!(
                    "n_way × (k_shot + n_query) images of {0}×{0} px make an episode of {1} GiB; lower n_way, k_shot, \
                     n_query or data.image_size",
                    self.image_size(),
                    episode_bytes >> 30
                ),
            ));
        }
        if let Err(err) = self.backbone() {
            return Err(invalid("model.backbone", err.to_string()));
        }
        if self.optim.optimizer.to_ascii_lowercase() != "adamw" {
            return Err(invalid(
                "optim.optimizer",
                format!(
                    "is `{}`; only `adamw` (the reference's default) is implemented",
                    self.optim.optimizer
                ),
            ));
        }
        if !(self.optim.learning_rate > 0.0 && self.optim.learning_rate.is_finite()) {
            return Err(invalid(
                "optim.learning_rate",
                format!("is {}; use a positive number such as 1e-3", self.optim.learning_rate),
            ));
        }
        if !(self.optim.weight_decay >= 0.0 && self.optim.weight_decay.is_finite()) {
            return Err(invalid(
                "optim.weight_decay",
                format!("is {}; use 0 or a positive number such as 1e-5", self.optim.weight_decay),
            ));
        }
        if self.memory.precision.is_pure_half() && self.run.device == DeviceKind::Cpu {
            return Err(invalid(
                "memory.precision",
                "is a pure half precision, which needs a GPU, run.device = \"cuda\" or \"vulkan\" (the CPU \
                 backend computes in f32): use \"mixed-f16\" on the CPU"
                    .into(),
            ));
        }
        if self.run.device == DeviceKind::Vulkan
            && self.memory.precision.compute_dtype() == burn::tensor::FloatDType::BF16
        {
            return Err(invalid(
                "memory.precision",
                format!(
                    "is \"{}\", but Vulkan has no bf16 arithmetic: use \"{}\" on run.device = \"vulkan\" (bf16 needs \
                     run.device = \"cuda\")",
                    if self.memory.precision == Precision::Bf16 { "bf16" } else { "mixed-bf16" },
                    if self.memory.precision == Precision::Bf16 { "f16" } else { "mixed-f16" },
                ),
            ));
        }
        if !(self.memory.loss_scale >= 1.0 && self.memory.loss_scale <= 16_777_216.0) {
            return Err(invalid(
                "memory.loss_scale",
                format!(
                    "is {}; use a power of two from 1 to 2^24 such as 65536",
                    self.memory.loss_scale
                ),
            ));
        }
        if self.memory.loss_scale_growth_interval == 0 {
            return Err(invalid(
                "memory.loss_scale_growth_interval",
                "is 0; use a number of steps such as 200".into(),
            ));
        }
        let size = self.image_size();
        if size < 8 {
            return Err(invalid("data.image_size", format!("is {size}; use at least 8 pixels")));
        }
        if self.data.kind != DatasetKind::Synthetic && self.data.root.is_none() {
            return Err(invalid(
                "data.root",
                "is missing; set it to the dataset's folder (or use kind = \"synthetic\")".into(),
            ));
        }
        if self.data.kind == DatasetKind::Synthetic {
            let needed = e.k_shot + e.n_query;
            if self.data.synthetic_images_per_class < needed {
                return Err(invalid(
                    "data.synthetic_images_per_class",
                    format!(
                        "is {}; each class needs k_shot + n_query = {needed} images",
                        self.data.synthetic_images_per_class
                    ),
                ));
            }
            if self.data.synthetic_classes < 10 {
                return Err(invalid(
                    "data.synthetic_classes",
                    "must be at least 10 (split 64/16/20 %)".into(),
                ));
            }
        }
        if self.model.use_vic {
            self.vic.validate().map_err(|err| invalid("vic", err.to_string()))?;
        }
        Ok(())
    }

    /// The results-file setting name, as the reference writes it: `dataset-backbone-method[-aug][-FETI]-NwKs`.
    pub fn setting_name(&self) -> String {
        let mut s =
            format!("{}-{}-{}", self.data.name, self.model.backbone, self.model.method.name());
        if self.data.train_aug {
            s.push_str("-aug");
        }
        if self.model.feti {
            s.push_str("-FETI");
        }
        s.push_str(&format!("-{}w{}s", self.episodes.n_way, self.episodes.k_shot));
        s
    }
}
