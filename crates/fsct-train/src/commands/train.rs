//! `fsct-train train` (the default): the config and its flags, then the experiment on the chosen
//! backend (Flex on the CPU, with or without gradient checkpointing; GPUs in [`crate::gpu`]).

use anyhow::Result;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use fsct_train::cli::TrainArgs;
use fsct_train::config::{Checkpointing, Config, DeviceKind};
use fsct_train::error::InputError;
use fsct_train::plan::budget::{choose, gib};
use fsct_train::plan::{Budget, PlanOptions};
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
    args.apply_sets(&mut config)?;
    config.validate(&path).map_err(|e| args.blame(e))?;
    if let Some(budget) = config.memory.budget {
        config = fit_budget(&config, budget, &path)?;
    }
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

/// The config with the fastest memory settings that fit `budget` (the planner's choice, logged),
/// or the planner's refusal (exit 2) naming the closest configuration that would fit.
fn fit_budget(config: &Config, budget: Budget, path: &std::path::Path) -> Result<Config> {
    tracing::info!(%budget, device = config.run.device.name(), "memory budget: planning (measures the model on the CPU first)");
    let choice = choose(config, budget, &PlanOptions::for_config(config))?;
    let p = &choice.prediction;
    tracing::info!(
        settings = %choice.candidate.describe(),
        step_peak = %gib(p.step_total),
        eval_peak = %gib(p.eval_total),
        %budget,
        "memory plan: the fastest settings that fit"
    );
    let mut chosen = config.clone();
    chosen.memory.precision = choice.candidate.precision;
    chosen.memory.gradient_checkpoint = choice.candidate.checkpointing;
    chosen.validate(path)?;
    Ok(chosen)
}
