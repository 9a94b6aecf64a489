//! The experiment configuration: a TOML file, every field documented, defaults from the reference
//! (spec §3.1), unknown keys rejected.
//!
//! - this file: [`Config`], reading and parsing it, [`ConfigError`], the values derived from
//!   several fields (backbone, image size, results-file setting name);
//! - [`sections`]: one struct per section, with the reference defaults, and the enums of its
//!   fields (`model.backbone` is fsct-backbone's [`BackboneName`], stored as the reference's name);
//! - `validate.rs`: [`Config::validate`], the checks of values that parse but cannot work.

use std::path::{Path, PathBuf};

use fsct_backbone::BackboneName;
use fsct_vic::VicConfig;
use serde::{Deserialize, Serialize};

pub mod sections;
mod validate;

pub use sections::{
    Checkpointing, DataConfig, DatasetKind, DeviceKind, EpisodesConfig, LrScheduleKind,
    MemoryConfig, Method, ModelConfig, OptimConfig, OptimizerKind, Precision, RunConfig,
};

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
    /// The file this config was read from ([`Config::read`]), for messages about its values
    /// that are checked later than [`Config::validate`] (`model.pretrained`); never written.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
        let mut config = Self::parse(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text (`path` is only used in messages; a leading byte-order mark is skipped).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Sets the dotted field `key` (e.g. `optim.learning_rate`) to `value`, written as in the TOML
    /// file (`5e-4`, `true`, `"blocks"`, `[1, 2]`; a bare word such as `mixed-f16` is taken as a
    /// string): what `--set key=value` does. The config is rebuilt through serde, so an unknown
    /// field or a mistyped value fails as it would in the file.
    ///
    /// # Errors
    /// The message names the field and what is wrong (the caller adds the flag).
    pub fn set_field(&mut self, key: &str, value: &str) -> Result<(), String> {
        let parts: Vec<&str> = key.split('.').collect();
        if key.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "`{key}` is not a field name: write section.field, e.g. optim.learning_rate"
            ));
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut tree = toml::Value::try_from(&*self).map_err(|e| e.to_string())?;
        let mut node = &mut tree;
        for part in &parts[..parts.len() - 1] {
            let table =
                node.as_table_mut().ok_or_else(|| format!("`{key}`: `{part}` is not a section"))?;
            node = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        let table =
            node.as_table_mut().ok_or_else(|| format!("`{key}` is not inside a section"))?;
        table.insert(parts[parts.len() - 1].to_string(), parsed);
        *self = tree.try_into().map_err(|e: toml::de::Error| e.message().trim_end().to_string())?;
        Ok(())
    }

    /// The config as TOML text (what a run writes into its folder as `config.toml`).
    ///
    /// # Errors
    /// A value TOML cannot hold (none of fsct's fields).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// The backbone the model is built with: `model.backbone` with `model.feti` applied.
    pub fn backbone(&self) -> BackboneName {
        self.model.backbone.with_feti(self.model.feti)
    }

    /// The image side: the configured one, or the reference's default for backbone and dataset.
    pub fn image_size(&self) -> usize {
        let resnet = self.backbone().is_resnet();
        self.data
            .image_size
            .unwrap_or_else(|| fsct_episodes::default_image_size(&self.data.name, resnet))
    }

    /// The results-file setting name, as the reference writes it: `dataset-backbone-method[-aug][-FETI]-NwKs`.
    pub fn setting_name(&self) -> String {
        let mut s = format!(
            "{}-{}-{}",
            self.data.name,
            self.model.backbone.reference_name(),
            self.model.method.name()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backbone name reads into its [`BackboneName`] and is written back as the same text,
    /// so files and checkpoint headers keep the form they had when the field was a string.
    #[test]
    fn backbone_names_round_trip_as_the_reference_names() {
        let names = [
            "Conv4", "Conv6", "Conv4NP", "Conv6NP", "Conv4S", "Conv6S", "Conv4SNP", "Conv6SNP",
            "ResNet12", "ResNet18", "ResNet34",
        ];
        for name in names {
            let text = format!("[model]\nbackbone = \"{name}\"\n");
            let config = Config::parse(&text, Path::new("b.toml")).unwrap();
            assert_eq!(config.model.backbone, name.parse().unwrap());
            let written = toml::to_string(&config).unwrap();
            assert!(written.contains(&format!("backbone = \"{name}\"")), "{written}");
            let json = serde_json::to_value(&config).unwrap();
            assert_eq!(json["model"]["backbone"], name);
            assert!(config.setting_name().contains(&format!("-{name}-")));
        }
    }

    #[test]
    fn an_unknown_backbone_names_the_file_the_field_and_the_choices() {
        let err = Config::parse("[model]\nbackbone = \"ResNet50\"\n", Path::new("x/b.toml"))
            .unwrap_err()
            .to_string();
        for part in ["x/b.toml", "model.backbone", "ResNet50", "Conv4SNP", "ResNet34"] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
