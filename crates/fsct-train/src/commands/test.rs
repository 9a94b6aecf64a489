//! `fsct-train test`: a checkpoint tested on the test split (of its own config's dataset, or of
//! `--config`'s `[data]`) with the episode shape, count and seed the flags choose; the result
//! printed, appended to `results.txt` beside the checkpoint, and written in detail (summary,
//! per-class accuracy, confusion counts) by [`fsct_train::test_report`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::backend::Flex;
use fsct_train::checkpoint::Checkpoint;
use fsct_train::cli::TestArgs;
use fsct_train::config::{Config, ConfigError, DeviceKind, Method};
use fsct_train::data::{open_split, Role, Stream};
use fsct_train::error::InputError;
use fsct_train::evaluate::{evaluate_episodes, Evaluation};
use fsct_train::model::build_model;
use fsct_train::outputs::{report_test, Outputs};
use fsct_train::test_report::{self, Summary};
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
    let folder = args
        .output
        .clone()
        .unwrap_or_else(|| test_report::default_folder(&args.checkpoint, &config));
    if folder.join("summary.json").exists() && !args.overwrite {
        return Err(InputError::new(format!(
            "`{}` already holds the results of a test with this protocol; pass --overwrite to \
             replace them, or --output another folder",
            folder.display()
        ))
        .into());
    }
    let device = Default::default();
    let model = build_model::<Flex>(&config, &device)?;
    let model = load_checkpoint_model(model, &ckpt, &args.checkpoint, &device)?;
    // Only the split the test uses: a dataset with just its test split works.
    let novel = open_split(&config, Role::Novel).context("opening the test split")?;
    let e = &config.episodes;
    tracing::info!(
        n_way = e.n_way,
        k_shot = e.k_shot,
        n_query = e.n_query,
        episodes = e.test_episodes,
        seed = config.run.seed,
        "testing {}",
        args.checkpoint.display()
    );
    let records = evaluate_episodes(&config, &model, &novel, Stream::Test, 0, &device)?;
    let (accuracy, ci95) = args.ci.interval(&records.accuracies);
    let results = Outputs::new(&checkpoint_folder(&args.checkpoint)).results;
    report_test(&config, &results, &args.checkpoint, Evaluation { accuracy, ci95 })?;
    let (classes, confusion) = test_report::per_class(&records, &novel);
    let summary = Summary {
        checkpoint: args.checkpoint.clone(),
        setting: config.setting_name(),
        test_split: novel.source.clone(),
        n_way: e.n_way,
        k_shot: e.k_shot,
        n_query: e.n_query,
        episodes: records.accuracies.len(),
        seed: config.run.seed,
        image_size: config.image_size(),
        accuracy,
        ci95,
        ci: args.ci,
    };
    test_report::write(&folder, args.overwrite, &summary, &classes, &confusion)?;
    for line in test_report::highlights(&classes, &confusion, 3) {
        println!("{line}");
    }
    println!("details: {}", folder.display());
    Ok(())
}

/// The folder holding the checkpoint (`.` for a bare file name).
fn checkpoint_folder(checkpoint: &Path) -> PathBuf {
    checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The config a checkpoint is tested with: the checkpoint's own (model, episodes, image size),
/// with the `[data]` section of `--config` when given and the episode flags applied. The image
/// size stays the checkpoint's (the model's weights are shaped by it): a `--config` that sets
/// another one is refused; so are `--n-way`/`--k-shot` other than the training's for FS-CT.
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
    let fsct = matches!(config.model.method, Method::FsctCosine | Method::FsctSoftmax);
    for (flag, requested, trained) in [
        ("--n-way", args.n_way, saved.episodes.n_way),
        ("--k-shot", args.k_shot, saved.episodes.k_shot),
    ] {
        if let Some(requested) = requested.filter(|&r| fsct && r != trained) {
            return Err(InputError::new(format!(
                "{flag} {requested}: the checkpoint `{}` is FS-CT trained {}-way {}-shot, and its \
                 learnable prototype weights are shaped [n_way, k_shot] = [{}, {}], so it can only \
                 be tested with that way and shot; drop {flag} (or train a model for {requested}; \
                 CTX models take any way and shot)",
                args.checkpoint.display(),
                saved.episodes.n_way,
                saved.episodes.k_shot,
                saved.episodes.n_way,
                saved.episodes.k_shot,
            ))
            .into());
        }
    }
    let flags = [
        ("--episodes", "episodes.test_episodes", args.episodes),
        ("--n-query", "episodes.n_query", args.n_query),
        ("--n-way", "episodes.n_way", args.n_way),
        ("--k-shot", "episodes.k_shot", args.k_shot),
    ];
    for (flag, field, value) in flags {
        let Some(value) = value else { continue };
        match field {
            "episodes.test_episodes" => config.episodes.test_episodes = value,
            "episodes.n_query" => config.episodes.n_query = value,
            "episodes.n_way" => config.episodes.n_way = value,
            _ => config.episodes.k_shot = value,
        }
        config.validate(&args.checkpoint).map_err(|e| match e {
            ConfigError::Invalid { field: bad, why, .. } if bad == field => {
                ConfigError::Flag { flag: flag.into(), field: bad, why }
            }
            other => other,
        })?;
    }
    if let Some(seed) = args.seed {
        config.run.seed = seed;
    }
    Ok(config)
}
