//! The experiment: claim the output folder, check a resume against the policy, open the dataset,
//! run the [`Trainer`]'s epochs, test the best model (spec §3.5–3.6), generic over the autodiff
//! backend.

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::data::{open_splits, Stream};
use crate::error::InputError;
use crate::evaluate::{evaluate, Evaluation};
use crate::outputs::{
    append_metrics, report_test, utc_timestamp, write_new_file, MetricsLine, Outputs, TestMetrics,
};
use crate::resume;
use crate::run_dir::{Existing, RunDir};
use crate::trainer::Trainer;

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Best validation accuracy (%).
    pub best_val_acc: f64,
    /// Test accuracy mean (%).
    pub test_acc: f64,
    /// Its 95% confidence half-width (%).
    pub test_ci95: f64,
    /// Test episodes run.
    pub test_episodes: usize,
}

/// Trains, validates and tests as configured. `B` is `Autodiff<…>` with or without checkpointing.
///
/// The output folder is claimed first ([`RunDir::claim`]: writable, locked, no other run's files
/// unless `run.resume` or `run.overwrite`), then the dataset is opened, then training starts.
///
/// # Errors
/// Input errors (exit code 2: the output folder, the dataset, a checkpoint that does not fit or
/// a resume that changes a must-match field, see [`crate::resume`]) before any step; [`Diverged`](crate::error::Diverged)
/// (exit code 1) when the loss becomes non-finite or mixed precision's loss scale is stuck at its
/// floor, in which case no result is written.
pub fn run_experiment<B: AutodiffBackend>(
    config: &Config,
    device: &B::Device,
) -> Result<RunSummary> {
    if config.run.node_rank > 0 {
        // Another node of a multi-node run: node 0 writes the run's files.
        return train_and_test::<B>(config, &Outputs::new(&config.run.output), device);
    }
    let out_dir = &config.run.output;
    let _run_dir = RunDir::claim(out_dir, existing_policy(config)?)?;
    let outputs = Outputs::new(out_dir);
    // The resolved config (file and flags) and the console's log, from the start.
    write_new_file(&outputs.config, config.to_toml()?.as_bytes(), true, "run.output")?;
    crate::run_log::start(&out_dir.join(crate::run_log::FILE_NAME))?;
    let result = train_and_test::<B>(config, &outputs, device);
    if let Err(err) = &result {
        crate::run_log::note(&format!("error: {}", crate::error::render(err)));
    }
    crate::run_log::stop();
    result
}

/// The run after its folder is claimed: resume check, dataset, epochs, test.
fn train_and_test<B: AutodiffBackend>(
    config: &Config,
    outputs: &Outputs,
    device: &B::Device,
) -> Result<RunSummary> {
    // The resume policy is checked before the dataset is opened: a refused resume costs nothing.
    let resumed = checkpoint_to_resume(config, outputs)?;
    // Likewise the pretrained weights file of a new run (a resumed one never reads it).
    if resumed.is_none() {
        let source = config.source.as_deref().unwrap_or(std::path::Path::new("<config>"));
        config.check_pretrained_file(source)?;
    }
    let splits = open_splits(config).context("opening the dataset")?;
    tracing::info!(
        base = splits.base.num_classes(),
        val = splits.val.num_classes(),
        novel = splits.novel.num_classes(),
        image_size = config.image_size(),
        "dataset ready"
    );

    let layout = crate::parallel::Layout::from_config(config)
        .map_err(|(field, why)| InputError::new(format!("{field} {why}")))?;
    if layout.is_parallel() {
        return crate::parallel::train_and_test_parallel::<B>(
            config, outputs, device, &splits, resumed, &layout,
        );
    }

    let last = outputs.last.clone();
    let run_outputs = Outputs::new(&config.run.output);
    let mut trainer = match resumed {
        Some(ckpt) => Trainer::<B>::resumed(config, run_outputs, device, ckpt, &last)?,
        None => Trainer::<B>::new(config, run_outputs, device)?,
    };
    for epoch in trainer.state().epochs_done..config.optim.epochs {
        // Checked before each epoch, so a resumed run that had already run out of patience
        // (or whose patience was lowered) stops too.
        if stops_early(config, trainer.state()) {
            break;
        }
        trainer.run_epoch(&splits.base, &splits.val, epoch)?;
    }

    let test_model = trainer.model_to_test()?;
    let test = evaluate(config, &test_model, &splits.novel, Stream::Test, 0, device)?;
    B::memory_cleanup(device);
    record_test(config, outputs, test)?;
    Ok(RunSummary {
        best_val_acc: trainer.state().best_val_acc,
        test_acc: test.accuracy,
        test_ci95: test.ci95,
        test_episodes: config.episodes.test_episodes,
    })
}

/// The test's lines: `results.txt` and the test line of `metrics.jsonl`, naming the model tested
/// (the best checkpoint's when one was written, see `Trainer::model_to_test`).
pub(crate) fn record_test(config: &Config, outputs: &Outputs, test: Evaluation) -> Result<()> {
    let tested = if outputs.best.exists() { &outputs.best } else { &outputs.last };
    report_test(config, &outputs.results, tested, test)?;
    let line = TestMetrics {
        time: utc_timestamp(),
        test_acc: test.accuracy,
        test_ci95: test.ci95,
        episodes: config.episodes.test_episodes,
        checkpoint: tested.clone(),
    };
    append_metrics(&outputs.metrics, &MetricsLine::Test(line))?;
    Ok(())
}

/// Early stopping (`optim.early_stopping_patience`): whether validation accuracy has not improved
/// for `patience` completed epochs (logged when so). The best model is still tested.
pub(crate) fn stops_early(config: &Config, state: &crate::checkpoint::TrainerState) -> bool {
    let Some(patience) = config.optim.early_stopping_patience else { return false };
    let waited = state.epochs_without_improvement();
    if waited < patience {
        return false;
    }
    tracing::info!(
        patience,
        epochs_done = state.epochs_done,
        best_epoch = state.best_epoch.map(|e| e + 1),
        best_val_acc = state.best_val_acc,
        "early stopping: validation accuracy has not improved for {waited} epochs (optim.early_stopping_patience = \
         {patience}); testing the best model"
    );
    true
}

/// What to do with a run already in the output folder (`run.resume`, `run.overwrite`).
fn existing_policy(config: &Config) -> Result<Existing> {
    Ok(match (config.run.resume, config.run.overwrite) {
        (true, true) => {
            return Err(InputError::new(
                "--overwrite and run.resume = true (or --resume) contradict each other: drop one of them",
            )
            .into());
        }
        (true, false) => Existing::Resume,
        (false, true) => Existing::Overwrite,
        (false, false) => Existing::Refuse,
    })
}

/// The run's `last.ckpt` when `run.resume` asks for it and it exists, after the resume policy
/// ([`resume::compare`]) allowed every field that changed (each change is logged).
fn checkpoint_to_resume(config: &Config, outputs: &Outputs) -> Result<Option<Checkpoint>> {
    if !config.run.resume {
        return Ok(None);
    }
    if !outputs.last.exists() {
        tracing::warn!(
            "resume requested but {} does not exist: starting from scratch",
            outputs.last.display()
        );
        return Ok(None);
    }
    let ckpt = Checkpoint::load(&outputs.last)?;
    let (takes_effect, must_match) = resume::compare(config, &ckpt.header.config);
    if !must_match.is_empty() {
        return Err(InputError::new(resume::refusal(&outputs.last, &must_match)).into());
    }
    for d in &takes_effect {
        tracing::info!("resume: `{}` changes from {} to {}", d.field, d.saved, d.now);
    }
    Ok(Some(ckpt))
}
