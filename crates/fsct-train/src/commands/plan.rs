//! `fsct-train plan`: the memory planner's tables for a config, without training.

use anyhow::Result;
use fsct_train::cli::PlanArgs;
use fsct_train::config::Config;
use fsct_train::plan::budget::{candidates, fits, gib};
use fsct_train::plan::report::{budgets_table, table};
use fsct_train::plan::{predict, Budget, PlanOptions};

/// Prints the plan of `args.config` (and, with `--vram`, the settings that fit each budget).
pub fn plan(args: &PlanArgs) -> Result<()> {
    let mut config = Config::read(&args.config)?;
    config.validate(&args.config)?;
    if let Some(device) = args.device {
        config.run.device = device;
        config.validate(&args.config).map_err(|e| match e {
            fsct_train::config::ConfigError::Invalid { field, why, .. } => {
                fsct_train::config::ConfigError::Flag { flag: "--device".into(), field, why }
            }
            other => other,
        })?;
    }
    let options = PlanOptions { device: config.run.device, quick: args.quick };
    let prediction = predict(&config, &options)?;
    println!("{}", table(&prediction));
    if let Some(budget) = config.memory.budget {
        println!(
            "memory.budget = {budget}: these settings {} (peak {}).",
            if fits(&prediction, budget) { "fit" } else { "do not fit" },
            gib(prediction.peak())
        );
    }
    if !args.vram.is_empty() {
        let budgets: Vec<Budget> = args.vram.iter().map(|&g| Budget::gib(g)).collect();
        let mut predictions = Vec::new();
        for candidate in candidates(&config) {
            let c = candidate.apply(&config);
            let p = if c == config { prediction.clone() } else { predict(&c, &options)? };
            predictions.push((candidate, p));
        }
        println!("{}", budgets_table(&predictions, &budgets));
    }
    Ok(())
}
