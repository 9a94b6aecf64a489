//! [`Config::validate`]: every value that would otherwise fail later, checked up front with the
//! field and the fix.

use std::path::Path;

use super::{
    Config, ConfigError, DatasetKind, DeviceKind, LrScheduleKind, OptimizerKind, Precision,
};

impl Config {
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
        // `model.backbone` needs no check here: an unknown name fails while the file is parsed.
        self.validate_optim(path)?;
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
        if let Some(file) = &self.model.pretrained {
            if file.as_os_str().is_empty() {
                return Err(invalid(
                    "model.pretrained",
                    "is empty; give the weights file's path, or remove the line to start from random weights".into(),
                ));
            }
            if !self.backbone().is_resnet() {
                return Err(invalid(
                    "model.pretrained",
                    format!(
                        "is set, but {} has no pretrained weights layout: pretrained weights load into ResNet18/34 \
                         (a torchvision ImageNet state dict) or ResNet12/18/34 with model.feti = true (the \
                         reference's Pretrained_ResNet_FETI.pt.tar); remove the line or pick a ResNet",
                        self.model.backbone
                    ),
                ));
            }
        }
        // The data-parallel peers and the episodes of a step (crate::parallel).
        crate::parallel::Layout::from_config(self).map_err(|(field, why)| invalid(field, why))?;
        Ok(())
    }

    /// The `[optim]` checks of [`Self::validate`]: the optimizer's, the schedule's, clipping's and
    /// early stopping's values, and settings that would be silently ignored (Nesterov without
    /// momentum or with an Adam, a step size without the step schedule, …).
    fn validate_optim(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            path: path.into(),
            field: field.into(),
            why,
        };
        let o = &self.optim;
        if !(o.learning_rate > 0.0 && o.learning_rate.is_finite()) {
            return Err(invalid(
                "optim.learning_rate",
                format!("is {}; use a positive number such as 1e-3", o.learning_rate),
            ));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return Err(invalid(
                "optim.weight_decay",
                format!("is {}; use 0 or a positive number such as 1e-5", o.weight_decay),
            ));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(invalid(
                "optim.momentum",
                format!(
                    "is {}; use a factor in [0, 1) such as 0.9 (the reference's), or 0 for plain SGD",
                    o.momentum
                ),
            ));
        }
        if o.nesterov && o.optimizer != OptimizerKind::Sgd {
            return Err(invalid(
                "optim.nesterov",
                format!(
                    "is true, but only SGD has Nesterov momentum and optim.optimizer is \"{}\": remove the \
                     line or set optim.optimizer = \"sgd\"",
                    o.optimizer.name()
                ),
            ));
        }
        if o.nesterov && o.momentum == 0.0 {
            return Err(invalid(
                "optim.nesterov",
                "is true with optim.momentum = 0; Nesterov needs momentum: set optim.momentum (e.g. 0.9) or \
                 nesterov = false"
                    .into(),
            ));
        }
        // Burn's linear (warm-up) and cosine schedulers take rates in (0, 1].
        let bounded = o.warmup_steps > 0 || o.schedule == LrScheduleKind::Cosine;
        if bounded && o.learning_rate > 1.0 {
            return Err(invalid(
                "optim.learning_rate",
                format!(
                    "is {}; with a warm-up or the cosine schedule it must be at most 1: lower it",
                    o.learning_rate
                ),
            ));
        }
        if o.warmup_steps > 100_000_000 {
            return Err(invalid(
                "optim.warmup_steps",
                format!("is {}; it must be at most 100000000", o.warmup_steps),
            ));
        }
        if o.schedule == LrScheduleKind::Cosine {
            if !(o.min_learning_rate >= 0.0 && o.min_learning_rate <= o.learning_rate) {
                return Err(invalid(
                    "optim.min_learning_rate",
                    format!(
                        "is {}; the cosine schedule's final rate must be from 0 to optim.learning_rate ({})",
                        o.min_learning_rate, o.learning_rate
                    ),
                ));
            }
        } else if o.min_learning_rate != 0.0 {
            return Err(invalid(
                "optim.min_learning_rate",
                format!(
                    "is set, but only the cosine schedule reads it and optim.schedule is \"{}\": remove the line or \
                     set optim.schedule = \"cosine\"",
                    o.schedule.name()
                ),
            ));
        }
        match (o.schedule, o.step_size) {
            (LrScheduleKind::Step, None) => {
                return Err(invalid(
                    "optim.step_size",
                    "is missing; the step schedule needs the optimizer steps between two decays, e.g. \
                     step_size = 2000 (10 epochs of 200 episodes)"
                        .into(),
                ));
            }
            (LrScheduleKind::Step, Some(size)) if size == 0 || size > 1 << 31 => {
                return Err(invalid(
                    "optim.step_size",
                    format!("is {size}; use a number of optimizer steps from 1 to 2^31"),
                ));
            }
            (LrScheduleKind::Step, Some(_)) => {}
            (other, Some(_)) => {
                return Err(invalid(
                    "optim.step_size",
                    format!(
                        "is set, but only the step schedule reads it and optim.schedule is \"{}\": remove the line \
                         or set optim.schedule = \"step\"",
                        other.name()
                    ),
                ));
            }
            (_, None) => {}
        }
        if !(o.gamma > 0.0 && o.gamma < 1.0) {
            return Err(invalid(
                "optim.gamma",
                format!("is {}; use a factor in (0, 1) such as 0.1", o.gamma),
            ));
        }
        // Burn's step scheduler counts steps in an i32.
        let total = o.total_steps(self.episodes.train_episodes);
        if o.schedule == LrScheduleKind::Step && total > i32::MAX as u64 {
            return Err(invalid(
                "optim.schedule",
                format!(
                    "is \"step\" for a run of {total} optimizer steps; Burn's step schedule counts at most 2^31: \
                     lower optim.epochs or episodes.train_episodes"
                ),
            ));
        }
        if let Some(norm) = o.grad_clip_norm {
            if !(norm > 0.0 && norm.is_finite()) {
                return Err(invalid(
                    "optim.grad_clip_norm",
                    format!("is {norm}; use a positive norm such as 1.0, or remove the line for no clipping"),
                ));
            }
        }
        if o.early_stopping_patience == Some(0) {
            return Err(invalid(
                "optim.early_stopping_patience",
                "is 0; use the number of epochs without improvement to wait (at least 1), or remove the line"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks that `model.pretrained`, if set, is a readable file; `path` is the config file, for
    /// the message. Kept out of [`Self::validate`], which also checks the config saved in a
    /// checkpoint (by `fsct-train test`, the resume policy), where the weights come from the
    /// checkpoint and the pretrained file need not exist any more: this runs only when a new run
    /// starts, the one time the file is read.
    pub fn check_pretrained_file(&self, path: &Path) -> Result<(), ConfigError> {
        let Some(file) = &self.model.pretrained else { return Ok(()) };
        let why = match std::fs::File::open(file).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => return Ok(()),
            Ok(_) => "is not a file".to_string(),
            Err(err) => format!("cannot be read ({err})"),
        };
        let expected = if self.model.feti {
            "the reference's Pretrained_ResNet_FETI.pt.tar (model.feti = true)"
        } else {
            "torchvision's ImageNet state dict, e.g. resnet18-f37072fd.pth or resnet34-b627a593.pth (fsct downloads \
             nothing: use your own copy)"
        };
        Err(ConfigError::Invalid {
            path: path.into(),
            field: "model.pretrained".into(),
            why: format!(
                "is `{}`, which {why}: give the path of {expected} (a relative path is taken from the working \
                 directory, {}), or remove the line to start from random weights",
                file.display(),
                std::env::current_dir().map_or_else(|_| "unknown".into(), |d| d.display().to_string())
            ),
        })
    }
}
