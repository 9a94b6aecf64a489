//! `fsct-train train` (the default): the config and its flags, then the experiment on the chosen
//! backend (Flex on the CPU, with or without gradient checkpointing; GPUs in [`crate::gpu`]).

use anyhow::Result;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use fsct_train::cli::TrainArgs;
use fsct_train::config::{Checkpointing, Config, DeviceKind};
use fsct_train::error::InputError;
use fsct_train::train::{run_experiment, RunSummary};

use crate::gpu;

/// Reads and validates the config with the flags applied, and runs the experiment.
pub fn train(args: &TrainArgs) -> Result<RunSummary> {
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
            // Segment checkpointing runs on plain autodiff: it recomputes whole blocks itself.
            if config.memory.gradient_checkpoint == Checkpointing::Balanced {
                run_experiment::<Autodiff<Flex, BalancedCheckpointing>>(&config, &device)
            } else {
                run_experiment::<Autodiff<Flex>>(&config, &device)
            }
        }
        DeviceKind::Cuda | DeviceKind::Vulkan => gpu::train_on(&config),
    }
}
