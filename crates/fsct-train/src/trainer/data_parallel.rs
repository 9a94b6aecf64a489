//! [`Trainer`]'s side of data-parallel training (`crate::parallel`): its construction for one
//! peer, copies of it for the node's other peers, and the training epoch of a peer, where every
//! step is `episodes.per_step` episodes over all peers
//! ([`parallel_step`](crate::parallel::parallel_step)). Validation and the files go through the
//! same [`Trainer::run_epoch`] as on one device: validation split across the peers, files written
//! by rank 0 only.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use fsct_episodes::Dataset;

use super::{EpochStats, EpochSums, Trainer};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::data::{loader, Stream};
use crate::evaluate::progress_bar;
use crate::model::{build_model, build_new_model};
use crate::outputs::Outputs;
use crate::parallel::episodes::{prefetch, train_share};
use crate::parallel::{parallel_step, Peer};
use crate::step::new_optimizer;
use crate::weights::{
    checkpoint_source, load_checkpoint_model, load_optimizer_bytes, model_bytes, optimizer_bytes,
};

impl<B: AutodiffBackend> Trainer<B> {
    /// The trainer of a peer: as [`Trainer::new`] (a new run) or [`Trainer::resumed`] (from
    /// `resumed`, the checkpoint and its path), with `peer` set before anything is written, so
    /// that only rank 0 touches the output folder.
    ///
    /// # Errors
    /// As [`Trainer::new`] and [`Trainer::resumed`].
    pub(crate) fn for_peer(
        config: &Config,
        outputs: Outputs,
        device: &B::Device,
        resumed: Option<(Checkpoint, &Path)>,
        peer: Peer,
    ) -> Result<Self> {
        B::seed(device, config.run.seed);
        let model = match resumed {
            Some(_) => build_model::<B>(config, device)?,
            None => build_new_model::<B>(config, device)?,
        };
        let mut trainer = Self::around(config, outputs, device, model)?;
        trainer.peer = Some(peer);
        if let Some((ckpt, path)) = resumed {
            trainer.resume_from(ckpt, path)?;
        }
        Ok(trainer)
    }

    /// A copy of this trainer (weights, optimizer state, trainer state) for another peer of the
    /// node, on `device`, as burn-train's DDP forks its learner onto each worker's device. The
    /// copy goes through the checkpoint records (full precision), so it is exact on any device.
    ///
    /// # Errors
    /// Records that cannot be written or read back (an internal error).
    pub(crate) fn replica(&self, device: &B::Device, peer: Peer) -> Result<Self> {
        let ckpt = Checkpoint::new(
            &self.config,
            &self.state,
            model_bytes(self.model())?,
            optimizer_bytes(&self.optim)?,
        );
        let source = Path::new("<peer 0's weights>");
        let model = build_model::<B>(&self.config, device)?;
        let model = load_checkpoint_model(model, &ckpt, source, device)?;
        let optim = load_optimizer_bytes(
            new_optimizer::<B>(&self.config),
            ckpt.optimizer,
            &checkpoint_source(source),
            device,
        )?;
        Ok(Self {
            config: self.config.clone(),
            device: device.clone(),
            model: Some(model),
            optim,
            state: ckpt.header.state,
            outputs: Outputs::new(&self.config.run.output),
            clock: self.clock,
            peer: Some(peer),
        })
    }

    /// Sets this trainer's peer (once it has joined the collective).
    pub(crate) fn set_peer(&mut self, peer: Peer) {
        self.peer = Some(peer);
    }

    /// Whether this trainer writes the run's files: on one device, or as rank 0.
    pub(crate) fn writes(&self) -> bool {
        self.peer.as_ref().is_none_or(Peer::writes)
    }

    /// The training steps of one epoch on this peer: `train_episodes / per_step` steps, each on
    /// this peer's share of the step's episodes; the epoch's statistics are over every peer's
    /// episodes. Stops with [`Diverged`](crate::error::Diverged) as [`Trainer::run_epoch`] says
    /// (on every peer at the same step: they all see the same reduced loss).
    pub(crate) fn train_epoch_parallel(
        &mut self,
        base: &Arc<Dataset>,
        epoch: usize,
        peer: &Peer,
    ) -> Result<EpochStats> {
        let n = self.config.episodes.train_episodes;
        let steps = n / peer.per_step;
        let share = peer.per_step / peer.peers;
        let first = (epoch * n) as u64;
        let mine = train_share(first, steps, peer.per_step, peer.peers, peer.rank);
        let episodes = prefetch(
            loader(&self.config, base, Stream::Train, first..first)?,
            mine,
            self.config.data.prefetch.max(share),
        );
        let label = format!("epoch {}/{}", epoch + 1, self.config.optim.epochs);
        let mut bar = peer.first_local.then(|| progress_bar(steps as u64, &label));
        let mut sums = EpochSums::default();
        for step in 0..steps {
            let waited = Instant::now();
            let mut xs = Vec::with_capacity(share);
            for _ in 0..share {
                let episode = episodes.recv().context("the episode loader stopped")?;
                let episode = episode.context("loading a training episode")?;
                xs.push(episode.to_tensor::<B>(&self.device));
            }
            sums.data_wait += waited.elapsed().as_secs_f64();
            let started = Instant::now();
            let model = self.take_model();
            let (model, outcome) = parallel_step(
                &self.config,
                model,
                &mut self.optim,
                &mut self.state,
                peer,
                xs,
                &self.device,
            )?;
            self.model = Some(model);
            self.check_divergence(&outcome, epoch, step + 1)?;
            sums.add(&outcome, started.elapsed().as_secs_f64());
            if let Some(bar) = bar.as_mut() {
                bar.set_message(format!(
                    "loss {:.4} acc {:.1}%",
                    sums.loss / sums.count as f64,
                    100.0 * sums.accuracy / sums.count as f64
                ));
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        // Means over the epoch's steps (each the mean of its episodes over all peers); the data
        // wait is this peer's.
        Ok(sums.stats())
    }
}
