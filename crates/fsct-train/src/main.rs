//! `fsct-train`: picks the backend (Flex on the CPU; CUDA with `--features cuda`, Vulkan with
//! `--features vulkan`: the GPU part is in [`gpu`]), with or without gradient checkpointing, and reports every error as one line and an exit code: 2 for
//! bad input or environment (config, flags, data, checkpoints, output folder), 1 for a valid run
//! that failed (divergence, out of memory, an internal error). See [`fsct_train::error`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};

use clap::Parser;
use fsct_backbone::BackboneName;
use fsct_train::checkpoint::{Checkpoint, Header, TrainerState};
use fsct_train::cli::{Cli, Command, ImportArgs, TestArgs, TrainArgs};
use fsct_train::config::{Config, ConfigError, DeviceKind};
use fsct_train::data::{open_split, Role, Stream};
use fsct_train::error::{exit_code, render, InputError};
use fsct_train::model::build_model;
use fsct_train::train::{append_line, evaluate, run_experiment, RunSummary};
use fsct_train::weights::{load_model_bytes, model_bytes};
use fsct_transformer::import::{import_reference, ImportOptions};

mod gpu;

/// Large activation buffers on huge pages: far fewer page faults per step (see the module).
#[global_allocator]
static GLOBAL: fsct_train::hugepages::HugePageAllocator = fsct_train::hugepages::HugePageAllocator;

/// The log filter without `RUST_LOG`: fsct-train's own messages; the GPU runtimes' (wgpu, cubecl)
/// only when they warn.
const DEFAULT_LOG: &str = "info,wgpu=warn,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl_wgpu=warn,cubecl_cuda=warn,cubecl_runtime=warn";

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    // A panic is a bug in fsct-train (every input error is checked before it could reach one):
    // one line that says so, no backtrace, exit code 1.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        let place =
            info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error in fsct-train ({message}{place}); please report it with the command and config");
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {}", render(&err));
            ExitCode::from(exit_code(&err))
        }
        Err(_) => ExitCode::from(1),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(args) => train(&args).map(|_| ()),
        Command::Test(args) => test(&args),
        Command::ImportPytorch(args) => import(&args),
    }
}

fn train(args: &TrainArgs) -> Result<RunSummary> {
    let path = args.config.clone().ok_or_else(|| {
        InputError::new(
            "no config given: pass --config FILE, e.g. --config configs/quickstart.toml",
        )
    })?;
    let mut config = Config::read(&path)?;
    // The file's own values first, so that a bad value is blamed on the file or on the flag
    // that set it, never on the other.
    config.validate(&path)?;
    args.apply(&mut config);
    config.validate(&path).map_err(|e| args.blame(e))?;
    tracing::info!(config = %path.display(), output = %config.run.output.display(), "fsct-train");
    match config.run.device {
        DeviceKind::Cpu => {
            let device = Default::default();
            if config.memory.gradient_checkpoint {
                run_experiment::<Autodiff<Flex, BalancedCheckpointing>>(&config, &device)
            } else {
                run_experiment::<Autodiff<Flex>>(&config, &device)
            }
        }
        DeviceKind::Cuda | DeviceKind::Vulkan => gpu::train_on(&config),
    }
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

fn test(args: &TestArgs) -> Result<()> {
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
    let source = format!("checkpoint `{}`", args.checkpoint.display());
    let model =
        load_model_bytes(build_model::<Flex>(&config, &device)?, &ckpt.model, &source, &device)?;
    // Only the split the test uses: a dataset with just its test split works.
    let novel = open_split(&config, Role::Novel).context("opening the test split")?;
    let (acc, ci) = evaluate(&config, &model, &novel, Stream::Test, 0, &device)?;
    println!(
        "test: {} episodes, accuracy {acc:.2}% ± {ci:.2}% (95% CI)",
        config.episodes.test_episodes
    );
    let dir = args
        .checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    append_line(
        &dir.join("results.txt"),
        &format!(
            "Checkpoint: {}   Setting: {:<50} Test Acc = {acc:.2}% +- {ci:.2}%",
            args.checkpoint.display(),
            config.setting_name()
        ),
    )
}

fn import(args: &ImportArgs) -> Result<()> {
    let config = Config::read(&args.config)?;
    config.validate(&args.config)?;
    if args.output.exists() && !args.overwrite {
        return Err(InputError::new(format!(
            "--output `{}` already exists; pass --overwrite to replace it, or choose another path",
            args.output.display()
        ))
        .into());
    }
    let device = Default::default();
    let model = build_model::<Flex>(&config, &device)?;
    // The reference never saves its frozen torchvision ResNets (spec §1.5).
    let frozen = matches!(config.backbone(), Ok(BackboneName::ResNet { feti: false, .. }));
    let options = ImportOptions { allow_missing_backbone: frozen, ..Default::default() };
    let (model, report) = import_reference(model, &args.input, &options)?;
    let epochs_done = report.epoch.map_or(0, |e| e.max(0) as usize + 1);
    let state = TrainerState {
        epochs_done,
        best_val_acc: 0.0,
        best_epoch: None,
        steps: 0,
        vic: None,
        scaler: None,
    };
    let ckpt = Checkpoint {
        header: Header { config, state },
        model: model_bytes(&model)?,
        optimizer: Vec::new(),
    };
    ckpt.save(&args.output)?;
    println!(
        "imported {} tensors from {} (epoch {:?}; {} keys ignored{}) into {}",
        report.loaded.len(),
        args.input.display(),
        report.epoch,
        report.ignored.len(),
        if report.backbone_kept { "; backbone kept: the file holds none" } else { "" },
        args.output.display()
    );
    Ok(())
}
