//! The experiment: episodic training with validation each epoch, best/last checkpoints, resume,
//! and the final test (spec §3.5–3.6), generic over the autodiff backend.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use fsct_transformer::{episode_accuracy, FewShotModel};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use fsct_episodes::Dataset;

use crate::checkpoint::{Checkpoint, Header, TrainerState};
use crate::config::Config;
use crate::data::{loader, open_splits, Splits, Stream};
use crate::error::{Diverged, InputError};
use crate::model::{build_model, AnyModel};
use crate::resume;
use crate::run_dir::{Existing, RunDir};
use crate::stats::mean_ci95;
use crate::step::{new_optimizer, new_trainer_state, train_step, Optim};
use crate::weights::{load_model_bytes, model_bytes, ModelRecorder};
use fsct_transformer::import::quietly;

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

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct EpochMetrics {
    epoch: usize,
    train_loss: f64,
    train_acc: f64,
    val_acc: f64,
    val_ci95: f64,
    vic_variance: Option<f64>,
    vic_invariance: Option<f64>,
    vic_covariance: Option<f64>,
    vic_lambdas: Option<[f64; 3]>,
    step_seconds: f64,
    loss_scale: Option<f64>,
    skipped_steps: u64,
    peak_rss_mib: Option<f64>,
}

/// Paths inside the output folder.
pub struct Outputs {
    /// Best model by validation accuracy.
    pub best: PathBuf,
    /// The last completed epoch (resume point).
    pub last: PathBuf,
    /// Per-epoch metrics, JSON lines.
    pub metrics: PathBuf,
    /// One line per finished run.
    pub results: PathBuf,
}

impl Outputs {
    /// The files of `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            best: dir.join("best.ckpt"),
            last: dir.join("last.ckpt"),
            metrics: dir.join("metrics.jsonl"),
            results: dir.join("results.txt"),
        }
    }
}

/// Trains, validates and tests as configured. `B` is `Autodiff<…>` with or without checkpointing.
///
/// The output folder is claimed first ([`RunDir::claim`]: writable, locked, no other run's files
/// unless `run.resume` or `run.overwrite`), then the dataset is opened, then training starts.
///
/// # Errors
/// Input errors (exit code 2: the output folder, the dataset, a checkpoint that does not fit or
/// a resume that changes a must-match field, see [`crate::resume`]) before any step; [`Diverged`]
/// (exit code 1) when the loss becomes non-finite or mixed precision's loss scale is stuck at its
/// floor, in which case no result is written.
pub fn run_experiment<B: AutodiffBackend>(
    config: &Config,
    device: &B::Device,
) -> Result<RunSummary> {
    let out_dir = &config.run.output;
    let existing = match (config.run.resume, config.run.overwrite) {
        (true, true) => {
            return Err(InputError::new(
                "--overwrite and run.resume = true (or --resume) contradict each other: drop one of them",
            )
            .into());
        }
        (true, false) => Existing::Resume,
        (false, true) => Existing::Overwrite,
        (false, false) => Existing::Refuse,
    };
    let _run_dir = RunDir::claim(out_dir, existing)?;
    let outputs = Outputs::new(out_dir);
    // The resume policy is checked before the dataset is opened: a refused resume costs nothing.
    let resumed = if config.run.resume && outputs.last.exists() {
        let ckpt = Checkpoint::load(&outputs.last)?;
        let (takes_effect, must_match) = resume::compare(config, &ckpt.header.config);
        if !must_match.is_empty() {
            return Err(InputError::new(resume::refusal(&outputs.last, &must_match)).into());
        }
        for d in &takes_effect {
            tracing::info!("resume: `{}` changes from {} to {}", d.field, d.saved, d.now);
        }
        Some(ckpt)
    } else {
        if config.run.resume {
            tracing::warn!(
                "resume requested but {} does not exist: starting from scratch",
                outputs.last.display()
            );
        }
        None
    };
    let splits = open_splits(config).context("opening the dataset")?;
    tracing::info!(
        base = splits.base.num_classes(),
        val = splits.val.num_classes(),
        novel = splits.novel.num_classes(),
        image_size = config.image_size(),
        "dataset ready"
    );

    B::seed(device, config.run.seed);
    let mut model = build_model::<B>(config, device)?;
    let side = config.image_size();
    let e = &config.episodes;
    model.check_episode([e.n_way, e.k_shot + e.n_query, 3, side, side])?;
    tracing::info!(params = model.num_params(), method = config.model.method.name(), backbone = %config.model.backbone, "model built");

    let mut optim = new_optimizer::<B>(config);
    let mut state = new_trainer_state(config);

    if let Some(ckpt) = resumed {
        let source = format!("checkpoint `{}`", outputs.last.display());
        model = load_model_bytes(model, &ckpt.model, &source, device)?;
        let optimizer = ckpt.optimizer;
        let record = quietly(|| ModelRecorder::default().load(optimizer, device))
            .map_err(|why| {
                InputError::new(format!("{source}: its optimizer state cannot be read ({why})"))
            })?
            .map_err(|err| {
                InputError::new(format!("{source}: its optimizer state cannot be read ({err})"))
            })?;
        optim = quietly(move || optim.load_record(record)).map_err(|why| {
            InputError::new(format!("{source}: its optimizer state does not fit the model ({why})"))
        })?;
        state = ckpt.header.state;
        keep_metrics_before(&outputs.metrics, state.epochs_done)?;
        tracing::info!(
            epochs_done = state.epochs_done,
            best = state.best_val_acc,
            "resumed from {}",
            outputs.last.display()
        );
    }

    for epoch in state.epochs_done..config.optim.epochs {
        let (metrics, next_model, next_optim) =
            train_epoch(config, &splits, model, optim, &mut state, epoch, device)?;
        model = next_model;
        optim = next_optim;
        B::memory_cleanup(device);

        let (val_acc, val_ci) =
            evaluate(config, &model.valid(), &splits.val, Stream::Val, epoch, device)?;
        B::memory_cleanup(device);
        let improved = val_acc > state.best_val_acc;
        tracing::info!(
            epoch,
            train_loss = metrics.0,
            train_acc = metrics.1,
            val_acc,
            val_ci,
            improved,
            "epoch done"
        );
        state.epochs_done = epoch + 1;
        let model_data = model_bytes(&model)?;
        if improved {
            state.best_val_acc = val_acc;
            state.best_epoch = Some(epoch);
            let best = Checkpoint {
                header: Header { config: config.clone(), state: state.clone() },
                model: model_data.clone(),
                optimizer: Vec::new(),
            };
            best.save(&outputs.best)?;
        }
        let optimizer = ModelRecorder::default()
            .record(optim.to_record(), ())
            .context("serialising the optimizer")?;
        Checkpoint {
            header: Header { config: config.clone(), state: state.clone() },
            model: model_data,
            optimizer,
        }
        .save(&outputs.last)?;
        let vic = state.vic.as_ref();
        let line = EpochMetrics {
            epoch,
            train_loss: metrics.0,
            train_acc: metrics.1,
            val_acc,
            val_ci95: val_ci,
            vic_variance: vic.map(|v| v.ema_variance),
            vic_invariance: vic.map(|v| v.ema_invariance),
            vic_covariance: vic.map(|v| v.ema_covariance),
            vic_lambdas: vic.map(|v| v.lambdas()),
            step_seconds: metrics.2,
            loss_scale: state.scaler.as_ref().map(|s| s.scale),
            skipped_steps: state.scaler.as_ref().map_or(0, |s| s.skipped),
            peak_rss_mib: peak_rss_mib(),
        };
        append_line(&outputs.metrics, &serde_json::to_string(&line)?)?;
        println!(
            "epoch {:>3}/{}: train loss {:.4} acc {:.2}% | val acc {:.2}% ± {:.2}%{}",
            epoch + 1,
            config.optim.epochs,
            metrics.0,
            metrics.1 * 100.0,
            val_acc,
            val_ci,
            if improved { "  (best)" } else { "" }
        );
    }

    // Test the best model (the reference's default, `--save_iter -1`).
    let test_model = if outputs.best.exists() {
        let ckpt = Checkpoint::load(&outputs.best)?;
        let source = format!("checkpoint `{}`", outputs.best.display());
        load_model_bytes(
            build_model::<B::InnerBackend>(config, device)?,
            &ckpt.model,
            &source,
            device,
        )?
    } else {
        model.valid()
    };
    let (test_acc, test_ci) =
        evaluate(config, &test_model, &splits.novel, Stream::Test, 0, device)?;
    B::memory_cleanup(device);
    report_test(config, &outputs, test_acc, test_ci)?;
    Ok(RunSummary {
        best_val_acc: state.best_val_acc,
        test_acc,
        test_ci95: test_ci,
        test_episodes: config.episodes.test_episodes,
    })
}

/// On resume: drops the lines of `metrics.jsonl` for epochs the checkpoint has not completed
/// (written after the checkpoint a run resumes from), so no epoch appears twice. Atomic rewrite.
fn keep_metrics_before(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep = |line: &&str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64))
            .is_some_and(|epoch| (epoch as usize) < epochs_done)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("rewriting `{}`", path.display()))?;
    for line in kept {
        writeln!(tmp, "{line}")?;
    }
    tmp.persist(path).map_err(|e| {
        InputError::new(format!("cannot rewrite `{}`: {}", path.display(), e.error))
    })?;
    Ok(())
}

/// One epoch of training. Returns (mean loss, mean accuracy, mean step seconds), the model and
/// the optimizer.
fn train_epoch<B: AutodiffBackend>(
    config: &Config,
    splits: &Splits,
    mut model: AnyModel<B>,
    mut optim: Optim<B>,
    state: &mut TrainerState,
    epoch: usize,
    device: &B::Device,
) -> Result<((f64, f64, f64), AnyModel<B>, Optim<B>)> {
    let n = config.episodes.train_episodes as u64;
    let episodes =
        loader(config, &splits.base, Stream::Train, epoch as u64 * n..(epoch as u64 + 1) * n)?;
    let bar = progress_bar(n, &format!("epoch {}/{}", epoch + 1, config.optim.epochs));
    let (mut loss_sum, mut acc_sum, mut time_sum, mut count) = (0.0, 0.0, 0.0, 0usize);
    for episode in episodes {
        let episode = episode.context("loading a training episode")?;
        let started = Instant::now();
        let x = episode.to_tensor::<B>(device);
        let (next, outcome) = train_step(config, model, &mut optim, state, x, device)?;
        model = next;
        let loss_value = outcome.loss;
        let accuracy = outcome.accuracy;
        if !loss_value.is_finite() && state.scaler.is_none() {
            return Err(Diverged(format!(
                "the training diverged: the loss became {loss_value} at epoch {}, step {}; lower \
                 optim.learning_rate (no result was written)",
                epoch + 1,
                count + 1
            ))
            .into());
        }
        if let Some(scaler) = state.scaler.as_ref().filter(|s| s.diverged()) {
            return Err(Diverged(format!(
                "the training diverged: at epoch {}, step {}, the gradients have overflowed half precision {} steps \
                 in a row with the loss scale at its floor ({}), so no update can be made ({} steps skipped in all); \
                 lower optim.learning_rate, or use memory.precision = \"mixed-bf16\" or \"f32\" (no result was written)",
                epoch + 1,
                count + 1,
                scaler.skips_at_floor,
                scaler.scale,
                scaler.skipped
            ))
            .into());
        }
        time_sum += started.elapsed().as_secs_f64();
        loss_sum += loss_value;
        acc_sum += accuracy;
        count += 1;
        bar.set_message(format!(
            "loss {:.4} acc {:.1}%",
            loss_sum / count as f64,
            100.0 * acc_sum / count as f64
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let c = count.max(1) as f64;
    Ok(((loss_sum / c, acc_sum / c, time_sum / c), model, optim))
}

/// Mean accuracy (%) and 95% CI over the configured number of episodes of a stream, drawn from
/// `dataset` (the validation or the test split).
pub fn evaluate<B: Backend>(
    config: &Config,
    model: &AnyModel<B>,
    dataset: &Arc<Dataset>,
    stream: Stream,
    epoch: usize,
    device: &B::Device,
) -> Result<(f64, f64)> {
    let (n, label) = match stream {
        Stream::Val => (config.episodes.val_episodes() as u64, "validation"),
        _ => (config.episodes.test_episodes as u64, "test"),
    };
    let start = if stream == Stream::Val { epoch as u64 * n } else { 0 };
    let bar = progress_bar(n, label);
    let mut accuracies = Vec::with_capacity(n as usize);
    for episode in loader(config, dataset, stream, start..start + n)? {
        let episode = episode.with_context(|| format!("loading a {label} episode"))?;
        let scores = model.forward_episode(episode.to_tensor::<B>(device)).scores;
        accuracies.push(100.0 * episode_accuracy(scores, config.episodes.n_query));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(mean_ci95(&accuracies))
}

/// Prints the test result and appends it to the results file, as the reference does.
fn report_test(config: &Config, outputs: &Outputs, acc: f64, ci: f64) -> Result<()> {
    let n = config.episodes.test_episodes;
    println!("test: {n} episodes, accuracy {acc:.2}% ± {ci:.2}% (95% CI)");
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = format!(
        "Time: {time}   Setting: {:<50} Test Acc = {acc:.2}% +- {ci:.2}%",
        config.setting_name()
    );
    append_line(&outputs.results, &line)
}

/// Appends one line (a whole line per write, so readers never see half of one).
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
            InputError::new(format!(
                "cannot open `{}` for writing ({e}); check the folder's permissions",
                path.display()
            ))
        })?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| InputError::new(format!("cannot write `{}` ({e})", path.display())))?;
    Ok(())
}

fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}

/// The process's peak resident memory (Linux), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
