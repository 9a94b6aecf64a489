//! `fsct-train test`: a checkpoint tested on the test split (of its own config's dataset, or of
//! `--config`'s `[data]`), the result printed and appended to `results.txt` beside it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::backend::Flex;
use fsct_train::checkpoint::Checkpoint;
use fsct_train::cli::TestArgs;
use fsct_train::config::{Config, ConfigError, DeviceKind};
use fsct_train::data::{open_split, Role, Stream};
use fsct_train::error::InputError;
use fsct_train::evaluate::evaluate;
use fsct_train::model::build_model;
use fsct_train::outputs::{report_test, Outputs, ResultsTag};
use fsct_train::weights::load_checkpoint_model;

/// Tests the checkpoint of `args` on the CPU.
pub fn test(args: &TestArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let config = test_config(args, &ckpt.header.config)?;
    if let Some(device @ (DeviceKind::Cuda | DeviceKind::Vulkan)) = args.device {
        return Err(InputError::new(format!(
            "`test` runs on the CPU in this version; drop --device {}",
            device.name()
        ))
        .into());
    }
    let device = Default::default();
    let model = build_model::<Flex>(&config, &device)?;
    let model = load_checkpoint_model(model, &ckpt, &args.checkpoint, &device)?;
    // Only the split the test uses: a dataset with just its test split works.
    let novel = open_split(&config, Role::Novel).context("opening the test split")?;
    let result = evaluate(&config, &model, &novel, Stream::Test, 0, &device)?;
    let dir = args
        .checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let results = Outputs::new(&dir).results;
    report_test(&config, &results, ResultsTag::Checkpoint(&args.checkpoint), result)
}

/// The config a checkpoint is tested with: the checkpoint's own (model, episodes, image size),
/// with the `[data]` section of `--config` when given. The image size stays the checkpoint's (the
/// model's weights are shaped by it): a `--config` that sets another one is refused.
fn test_config(args: &TestArgs, saved: &Config) -> Result<Config> {
    saved.validate(&args.checkpoint)?;
    let mut config = saved.clone();
    if let Some(path) = &args.config {
        let other = Config::read(path)?;
        let size = saved.image_size();
        if let Some(requested) = other.data.image_size.filter(|&s| s != size) {
            return Err(InputError::new(format!(
                "config `{}`: `data.image_size` is {requested} but the checkpoint `{}` was trained at {size} px, and \
                 its weights only fit that size; remove data.image_size from the config (the checkpoint's size is \
                 then used) or set it to {size}",
                path.display(),
                args.checkpoint.display()
            ))
            .into());
        }
        config.data = other.data;
        config.data.image_size = Some(size);
        // Only its [data] is used: validated with the checkpoint's episodes and model.
        config.validate(path)?;
        tracing::info!(config = %path.display(), image_size = size, "testing on the data of --config at the checkpoint's image size");
    }
    if let Some(n) = args.test_episodes {
        config.episodes.test_episodes = n;
        config.validate(&args.checkpoint).map_err(|e| match e {
            ConfigError::Invalid { field, why, .. } if field == "episodes.test_episodes" => {
                ConfigError::Flag { flag: "--test-episodes".into(), field, why }
            }
            other => other,
        })?;
    }
    Ok(config)
}
