//! [`Trainer`]: the model, its optimizer, the trainer state and the output files of one run, and
//! the epoch it repeats (spec §3.5): training episodes, validation, the best and last
//! checkpoints, one line of metrics.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fsct_episodes::Dataset;
use fsct_transformer::FewShotModel;

use crate::checkpoint::{Checkpoint, TrainerState};
use crate::config::Config;
use crate::data::{loader, Stream};
use crate::error::Diverged;
use crate::evaluate::{evaluate, progress_bar, Evaluation};
use crate::model::{build_model, build_new_model, AnyModel};
use crate::outputs::{
    append_metrics, drop_metrics_after, peak_rss_mib, utc_timestamp, EpochMetrics, MetricsLine,
    Outputs,
};
use crate::step::{new_optimizer, new_trainer_state, train_step, Optim, StepOutcome};
use crate::weights::{
    checkpoint_source, load_checkpoint_model, load_optimizer_bytes, model_bytes, optimizer_bytes,
};

/// The trainer of one peer of a data-parallel run (`crate::parallel`).
mod data_parallel;

/// The means over one epoch's training steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean loss.
    pub loss: f64,
    /// Mean query accuracy in [0, 1].
    pub accuracy: f64,
    /// Mean classification (cross-entropy) part of the loss.
    pub ce_loss: f64,
    /// Mean VIC part of the loss (λ-weighted), when VIC is on.
    pub vic_loss: Option<f64>,
    /// Mean seconds per step (loading the episode excluded).
    pub step_seconds: f64,
    /// Seconds spent waiting for episodes in all.
    pub data_wait_seconds: f64,
    /// The learning rate of the last step.
    pub learning_rate: f64,
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// Training.
    pub train: EpochStats,
    /// Validation.
    pub val: Evaluation,
    /// Whether validation beat the best so far (`best.ckpt` was written).
    pub improved: bool,
    /// Wall-clock seconds of the epoch (training, validation, checkpoints).
    pub seconds: f64,
}

/// Running sums over an epoch's steps.
#[derive(Default)]
struct EpochSums {
    loss: f64,
    vic: Option<f64>,
    accuracy: f64,
    step_seconds: f64,
    data_wait: f64,
    learning_rate: f64,
    count: usize,
}

impl EpochSums {
    fn add(&mut self, outcome: &StepOutcome, seconds: f64) {
        self.loss += outcome.loss;
        if let Some(vic) = outcome.vic {
            *self.vic.get_or_insert(0.0) += vic.total;
        }
        self.accuracy += outcome.accuracy;
        self.step_seconds += seconds;
        self.learning_rate = outcome.learning_rate;
        self.count += 1;
    }

    fn stats(&self) -> EpochStats {
        let c = self.count.max(1) as f64;
        EpochStats {
            loss: self.loss / c,
            ce_loss: (self.loss - self.vic.unwrap_or(0.0)) / c,
            vic_loss: self.vic.map(|v| v / c),
            accuracy: self.accuracy / c,
            step_seconds: self.step_seconds / c,
            data_wait_seconds: self.data_wait,
            learning_rate: self.learning_rate,
        }
    }
}

/// One run's model, optimizer, trainer state and output files. `B` is `Autodiff<…>`, with or
/// without checkpointing.
pub struct Trainer<B: AutodiffBackend> {
    config: Config,
    device: B::Device,
    /// Always present between steps: a step takes the model by value (Burn's optimizer does)
    /// and puts the updated one back; only a step that failed leaves it empty.
    model: Option<AnyModel<B>>,
    optim: Optim<B>,
    state: TrainerState,
    outputs: Outputs,
    /// When this process started training, and the epochs done then (for the whole-run ETA).
    clock: (Instant, usize),
    /// This trainer's peer in a data-parallel run (several peers or episodes per step); `None`:
    /// the single-device loop, one episode per step.
    peer: Option<crate::parallel::Peer>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A run that has not taken a step: seeds the backend with `run.seed`, builds the model
    /// (checked against the configured episode shape; its backbone from `model.pretrained` when
    /// set, see [`build_new_model`]), the optimizer and a fresh state.
    ///
    /// # Errors
    /// A model the config cannot build, a pretrained file that does not fit it, or an episode
    /// shape it cannot take.
    pub fn new(config: &Config, outputs: Outputs, device: &B::Device) -> Result<Self> {
        B::seed(device, config.run.seed);
        let model = build_new_model::<B>(config, device)?;
        Self::around(config, outputs, device, model)
    }

    /// A run continuing from `ckpt`, read from `path` (the resume policy already checked): the
    /// model is built with the reference initialisation — `model.pretrained` is not read, every
    /// weight comes from the checkpoint — then [`Self::resume_from`] loads it.
    ///
    /// # Errors
    /// As [`Self::new`] and [`Self::resume_from`].
    pub fn resumed(
        config: &Config,
        outputs: Outputs,
        device: &B::Device,
        ckpt: Checkpoint,
        path: &Path,
    ) -> Result<Self> {
        B::seed(device, config.run.seed);
        if let Some(file) = &config.model.pretrained {
            tracing::info!(file = %file.display(), "model.pretrained not read: a resumed run takes every weight from {}", path.display());
        }
        let model = build_model::<B>(config, device)?;
        let mut trainer = Self::around(config, outputs, device, model)?;
        trainer.resume_from(ckpt, path)?;
        Ok(trainer)
    }

    fn around(
        config: &Config,
        outputs: Outputs,
        device: &B::Device,
        model: AnyModel<B>,
    ) -> Result<Self> {
        let side = config.image_size();
        let e = &config.episodes;
        model.check_episode([e.n_way, e.k_shot + e.n_query, 3, side, side])?;
        tracing::info!(params = model.num_params(), method = config.model.method.name(), backbone = %config.model.backbone.reference_name(), "model built");
        Ok(Self {
            config: config.clone(),
            device: device.clone(),
            model: Some(model),
            optim: new_optimizer::<B>(config),
            state: new_trainer_state(config),
            outputs,
            clock: (Instant::now(), 0),
            peer: None,
        })
    }

    /// Continues from `ckpt`, read from `path` (the resume policy already checked): its weights,
    /// optimizer state and trainer state; `metrics.jsonl` loses the lines of epochs it had not
    /// completed.
    ///
    /// # Errors
    /// Weights or optimizer state that do not fit the model (exit code 2).
    pub fn resume_from(&mut self, ckpt: Checkpoint, path: &Path) -> Result<()> {
        let model = self.take_model();
        self.model = Some(load_checkpoint_model(model, &ckpt, path, &self.device)?);
        let optim = std::mem::replace(&mut self.optim, new_optimizer::<B>(&self.config));
        self.optim =
            load_optimizer_bytes(optim, ckpt.optimizer, &checkpoint_source(path), &self.device)?;
        self.state = ckpt.header.state;
        self.clock = (Instant::now(), self.state.epochs_done);
        if self.writes() {
            drop_metrics_after(&self.outputs.metrics, self.state.epochs_done)?;
        }
        tracing::info!(
            epochs_done = self.state.epochs_done,
            best = self.state.best_val_acc,
            "resumed from {}",
            path.display()
        );
        Ok(())
    }

    /// The trainer state (epochs done, best validation accuracy, steps, VIC, loss scaler).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The model being trained.
    pub fn model(&self) -> &AnyModel<B> {
        self.model.as_ref().expect("a failed step left the trainer without its model")
    }

    /// One epoch (0-based `epoch`): training on `base`, validation on `val`, then `best.ckpt`
    /// when validation improved, `last.ckpt`, a line of `metrics.jsonl` and one on stdout.
    ///
    /// # Errors
    /// [`Diverged`] (exit code 1) when the loss becomes non-finite or mixed precision's loss
    /// scale is stuck at its floor; an episode that cannot be loaded; a file that cannot be
    /// written.
    pub fn run_epoch(
        &mut self,
        base: &Arc<Dataset>,
        val: &Arc<Dataset>,
        epoch: usize,
    ) -> Result<EpochReport> {
        let started = Instant::now();
        let train = match self.peer.clone() {
            Some(peer) => self.train_epoch_parallel(base, epoch, &peer)?,
            None => self.train_epoch(base, epoch)?,
        };
        B::memory_cleanup(&self.device);
        let val = match &self.peer {
            Some(peer) => crate::parallel::evaluate_shared(
                &self.config,
                &self.model().valid(),
                val,
                Stream::Val,
                epoch,
                &self.device,
                Some(peer),
            )?,
            None => evaluate(
                &self.config,
                &self.model().valid(),
                val,
                Stream::Val,
                epoch,
                &self.device,
            )?,
        };
        B::memory_cleanup(&self.device);
        let improved = val.accuracy > self.state.best_val_acc;
        tracing::debug!(
            epoch,
            train_loss = train.loss,
            train_acc = train.accuracy,
            val_acc = val.accuracy,
            val_ci = val.ci95,
            improved,
            "epoch done"
        );
        self.state.epochs_done = epoch + 1;
        if improved {
            self.state.best_val_acc = val.accuracy;
            self.state.best_epoch = Some(epoch);
        }
        let report = EpochReport { train, val, improved, seconds: started.elapsed().as_secs_f64() };
        if self.writes() {
            self.save_checkpoints(improved)?;
            self.record(epoch, &report)?;
        }
        Ok(report)
    }

    /// The model to test: the best checkpoint's when one was written (the reference's default,
    /// `--save_iter -1`), else the current one.
    ///
    /// # Errors
    /// A best checkpoint that cannot be read or does not fit.
    pub fn model_to_test(&self) -> Result<AnyModel<B::InnerBackend>> {
        if !self.outputs.best.exists() {
            return Ok(self.model().valid());
        }
        let ckpt = Checkpoint::load(&self.outputs.best)?;
        let model = build_model::<B::InnerBackend>(&self.config, &self.device)?;
        load_checkpoint_model(model, &ckpt, &self.outputs.best, &self.device)
    }

    /// The training steps of one epoch, stopping with [`Diverged`] as described in
    /// [`Self::run_epoch`].
    fn train_epoch(&mut self, base: &Arc<Dataset>, epoch: usize) -> Result<EpochStats> {
        let n = self.config.episodes.train_episodes as u64;
        let range = epoch as u64 * n..(epoch as u64 + 1) * n;
        let episodes = loader(&self.config, base, Stream::Train, range)?;
        let mut bar = progress_bar(n, &format!("epoch {}/{}", epoch + 1, self.config.optim.epochs));
        let mut sums = EpochSums::default();
        let mut episodes = episodes.into_iter();
        loop {
            let waited = Instant::now();
            let Some(episode) = episodes.next() else { break };
            let episode = episode.context("loading a training episode")?;
            let x = episode.to_tensor::<B>(&self.device);
            sums.data_wait += waited.elapsed().as_secs_f64();
            let started = Instant::now();
            let outcome = self.step(x)?;
            self.check_divergence(&outcome, epoch, sums.count + 1)?;
            sums.add(&outcome, started.elapsed().as_secs_f64());
            bar.set_message(format!(
                "loss {:.4} acc {:.1}%",
                sums.loss / sums.count as f64,
                100.0 * sums.accuracy / sums.count as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(sums.stats())
    }

    /// One training step on episode `x`.
    fn step(&mut self, x: Tensor<B, 5>) -> Result<StepOutcome> {
        let model = self.take_model();
        let (model, outcome) =
            train_step(&self.config, model, &mut self.optim, &mut self.state, x, &self.device)?;
        self.model = Some(model);
        Ok(outcome)
    }

    fn take_model(&mut self) -> AnyModel<B> {
        self.model.take().expect("a failed step left the trainer without its model")
    }

    /// Stops the run when the loss is non-finite without a loss scaler (the scaler skips such
    /// steps itself), or when the scaler is stuck at its floor.
    fn check_divergence(&self, outcome: &StepOutcome, epoch: usize, step: usize) -> Result<()> {
        let loss = outcome.loss;
        if !loss.is_finite() && self.state.scaler.is_none() {
            return Err(Diverged(format!(
                "the training diverged: the loss became {loss} at epoch {}, step {step}; lower \
                 optim.learning_rate (no result was written)",
                epoch + 1,
            ))
            .into());
        }
        if let Some(scaler) = self.state.scaler.as_ref().filter(|s| s.diverged()) {
            return Err(Diverged(format!(
                "the training diverged: at epoch {}, step {step}, the gradients have overflowed half precision {} steps \
                 in a row with the loss scale at its floor ({}), so no update can be made ({} steps skipped in all); \
                 lower optim.learning_rate, or use memory.precision = \"mixed-bf16\" or \"f32\" (no result was written)",
                epoch + 1,
                scaler.skips_at_floor,
                scaler.scale,
                scaler.skipped
            ))
            .into());
        }
        Ok(())
    }

    /// The time left for the remaining epochs (and the test) at this process's mean epoch time,
    /// after `done` epochs, as `1h02m`, `3m05s` or `12s`.
    fn run_eta(&self, done: usize) -> String {
        let (started, first) = self.clock;
        let here = done.saturating_sub(first).max(1) as f64;
        let left = self.config.optim.epochs.saturating_sub(done) as f64;
        crate::evaluate::format_seconds(started.elapsed().as_secs_f64() / here * left)
    }

    /// `best.ckpt` (weights only) when validation improved, and `last.ckpt` (weights and
    /// optimizer state, the resume point).
    fn save_checkpoints(&self, improved: bool) -> Result<()> {
        let model = model_bytes(self.model())?;
        if improved {
            Checkpoint::new(&self.config, &self.state, model.clone(), Vec::new())
                .save(&self.outputs.best)?;
        }
        let optimizer = optimizer_bytes(&self.optim)?;
        Checkpoint::new(&self.config, &self.state, model, optimizer).save(&self.outputs.last)?;
        Ok(())
    }

    /// The epoch's line of `metrics.jsonl` and of stdout.
    fn record(&self, epoch: usize, report: &EpochReport) -> Result<()> {
        let EpochReport { train, val, improved, .. } = *report;
        let vic = self.state.vic.as_ref();
        let scaler = self.state.scaler.as_ref();
        let line = EpochMetrics {
            epoch: epoch + 1,
            time: utc_timestamp(),
            learning_rate: train.learning_rate,
            train_loss: train.loss,
            train_ce_loss: train.ce_loss,
            train_vic_loss: train.vic_loss,
            train_acc: 100.0 * train.accuracy,
            val_acc: val.accuracy,
            val_ci95: val.ci95,
            vic_variance: vic.map(|v| v.ema_variance),
            vic_invariance: vic.map(|v| v.ema_invariance),
            vic_covariance: vic.map(|v| v.ema_covariance),
            vic_lambdas: vic.map(|v| v.lambdas()),
            epoch_seconds: report.seconds,
            step_seconds: train.step_seconds,
            data_wait_seconds: train.data_wait_seconds,
            loss_scale: scaler.map(|s| s.scale),
            skipped_steps: scaler.map_or(0, |s| s.skipped),
            peak_rss_mib: peak_rss_mib(),
        };
        append_metrics(&self.outputs.metrics, &MetricsLine::Epoch(line))?;
        crate::curves::redraw_run(&self.config.run.output, &self.outputs.curves);
        // The one line per epoch (console and train.log).
        let epochs = self.config.optim.epochs;
        tracing::info!(
            "epoch {:>3}/{epochs}: train loss {:.4} acc {:.2}% | val acc {:.2}% ± {:.2}%{} | run ETA {}",
            epoch + 1,
            train.loss,
            train.accuracy * 100.0,
            val.accuracy,
            val.ci95,
            if improved { " (best)" } else { "" },
            self.run_eta(epoch + 1)
        );
        Ok(())
    }
}
