//! `fsct-train`: picks the backend (Flex on the CPU, CUDA with `--features cuda`), with or
//! without gradient checkpointing, and reports every error as one message and a non-zero exit
//! code (2 for bad input: config, data, checkpoints; 1 for failures during the run).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
#[cfg(feature = "cuda")]
use burn::prelude::*;

use clap::Parser;
use fsct_backbone::BackboneName;
use fsct_train::checkpoint::{Checkpoint, CheckpointError, Header, TrainerState};
use fsct_train::cli::{Cli, Command, ImportArgs, TestArgs, TrainArgs};
use fsct_train::config::{Config, ConfigError, DeviceKind, Precision};
use fsct_train::data::{Stream, open_splits};
use fsct_train::model::build_model;
use fsct_train::train::{RunSummary, append_line, evaluate, load_model_bytes, model_bytes, run_experiment};
use fsct_transformer::import::{ImportOptions, import_reference};

/// Large activation buffers on huge pages: far fewer page faults per step (see the module).
#[global_allocator]
static GLOBAL: fsct_train::hugepages::HugePageAllocator = fsct_train::hugepages::HugePageAllocator;

/// Bad input found before any work: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InputError(String);

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if is_input_error(&err) { ExitCode::from(2) } else { ExitCode::from(1) }
        }
    }
}

fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<InputError>()
            || cause.is::<ConfigError>()
            || cause.is::<CheckpointError>()
            || cause.is::<fsct_episodes::EpisodeError>()
            || cause.is::<fsct_transformer::ModelError>()
            || cause.is::<fsct_transformer::import::ImportError>()
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(args) => train(&args).map(|_| ()),
        Command::Test(args) => test(&args),
        Command::ImportPytorch(args) => import(&args),
    }
}

fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    Ok(Config::parse(&text, path)?)
}

fn train(args: &TrainArgs) -> Result<RunSummary> {
    let path = args
        .config
        .clone()
        .ok_or_else(|| InputError("no config given: pass --config FILE, e.g. --config configs/quickstart.toml".into()))?;
    let mut config = load_config(&path)?;
    args.apply(&mut config);
    config.validate(&path)?;
    tracing::info!(config = %path.display(), output = %config.run.output.display(), "fsct-train");
    let checkpointing = config.memory.gradient_checkpoint;
    match config.run.device {
        DeviceKind::Cpu => {
            let device = Default::default();
            if checkpointing {
                run_experiment::<Autodiff<Flex, BalancedCheckpointing>>(&config, &device)
            } else {
                run_experiment::<Autodiff<Flex>>(&config, &device)
            }
        }
        DeviceKind::Cuda => cuda::train(&config, checkpointing, config.memory.precision),
    }
}

fn test(args: &TestArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let mut config = ckpt.header.config.clone();
    if let Some(path) = &args.config {
        config.data = load_config(path)?.data;
    }
    if let Some(n) = args.test_episodes {
        config.episodes.test_episodes = n;
    }
    config.validate(&args.checkpoint)?;
    if args.device == Some(DeviceKind::Cuda) {
        return Err(InputError("`test` runs on the CPU in this version; drop --device cuda".into()).into());
    }
    let device = Default::default();
    let model = load_model_bytes(build_model::<Flex>(&config, &device)?, &ckpt.model, &device)?;
    let splits = open_splits(&config).context("opening the dataset")?;
    let (acc, ci) = evaluate(&config, &model, &splits, Stream::Test, 0, &device)?;
    println!("test: {} episodes, accuracy {acc:.2}% ± {ci:.2}% (95% CI)", config.episodes.test_episodes);
    let dir = args.checkpoint.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    append_line(
        &dir.join("results.txt"),
        &format!("Checkpoint: {}   Setting: {:<50} Test Acc = {acc:.2}% +- {ci:.2}%", args.checkpoint.display(), config.setting_name()),
    )
}

fn import(args: &ImportArgs) -> Result<()> {
    let config = load_config(&args.config)?;
    config.validate(&args.config)?;
    let device = Default::default();
    let model = build_model::<Flex>(&config, &device)?;
    // The reference never saves its frozen torchvision ResNets (spec §1.5).
    let frozen = matches!(config.backbone(), Ok(BackboneName::ResNet { feti: false, .. }));
    let options = ImportOptions { allow_missing_backbone: frozen };
    let (model, report) = import_reference(model, &args.input, &options)?;
    let epochs_done = report.epoch.map_or(0, |e| e.max(0) as usize + 1);
    let state = TrainerState { epochs_done, best_val_acc: 0.0, best_epoch: None, steps: 0, vic: None, scaler: None };
    let ckpt = Checkpoint { header: Header { config, state }, model: model_bytes(&model)?, optimizer: Vec::new() };
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

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::Cuda;

    /// Burn 0.21 panics in a worker thread at the first CUDA op when no GPU can be used; probe
    /// once, quietly, and turn that into an error.
    fn probe() -> Result<<Cuda as burn::tensor::backend::BackendTypes>::Device> {
        let device = <Cuda as burn::tensor::backend::BackendTypes>::Device::default();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = std::panic::catch_unwind(|| Tensor::<Cuda, 1>::zeros([1], &Default::default()).into_data()).is_ok();
        std::panic::set_hook(hook);
        if ok {
            Ok(device)
        } else {
            Err(InputError(
                "run.device = \"cuda\" but no usable CUDA GPU was found (driver or libcuda missing): use --device cpu".into(),
            )
            .into())
        }
    }

    /// Picks the backend type: the float type is half for the pure half precisions.
    pub fn train(config: &Config, checkpointing: bool, precision: Precision) -> Result<RunSummary> {
        use burn::tensor::{bf16, f16};
        let device = probe()?;
        match (precision, checkpointing) {
            (Precision::F16, true) => run_experiment::<Autodiff<Cuda<f16>, BalancedCheckpointing>>(config, &device),
            (Precision::F16, false) => run_experiment::<Autodiff<Cuda<f16>>>(config, &device),
            (Precision::Bf16, true) => run_experiment::<Autodiff<Cuda<bf16>, BalancedCheckpointing>>(config, &device),
            (Precision::Bf16, false) => run_experiment::<Autodiff<Cuda<bf16>>>(config, &device),
            (_, true) => run_experiment::<Autodiff<Cuda, BalancedCheckpointing>>(config, &device),
            (_, false) => run_experiment::<Autodiff<Cuda>>(config, &device),
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn train(_config: &Config, _checkpointing: bool, _precision: Precision) -> Result<RunSummary> {
        Err(InputError(
            "run.device = \"cuda\" but this build has no CUDA support: rebuild with `cargo build --release --features cuda`, or use --device cpu".into(),
        )
        .into())
    }
}
