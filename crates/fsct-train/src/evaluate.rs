//! Evaluation: accuracy over a stream of validation or test episodes, reported as the reference
//! does (mean and 95% confidence half-width, spec §3.6), and the progress bars of every loop.

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::prelude::*;
use fsct_episodes::Dataset;
use fsct_transformer::FewShotModel;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::data::{loader, Stream};
use crate::model::AnyModel;
use crate::stats::mean_ci95;

/// The accuracy of a model over a set of episodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean episode accuracy (%).
    pub accuracy: f64,
    /// Its 95% confidence half-width (%).
    pub ci95: f64,
}

/// What a pass over a stream of episodes found, episode by episode and query by query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeRecords {
    /// Each episode's query accuracy (%).
    pub accuracies: Vec<f64>,
    /// Each query's `(target, predicted)` dataset class indices (indices into the split's
    /// `classes`), in episode order.
    pub predictions: Vec<(usize, usize)>,
}

impl EpisodeRecords {
    /// Mean accuracy and the reference's 95% half-width.
    pub fn evaluation(&self) -> Evaluation {
        let (accuracy, ci95) = mean_ci95(&self.accuracies);
        Evaluation { accuracy, ci95 }
    }
}

/// The accuracy over the configured number of episodes of a stream, drawn from `dataset` (the
/// validation or the test split). Validation draws epoch `epoch`'s episodes; test always the same.
pub fn evaluate<B: Backend>(
    config: &Config,
    model: &AnyModel<B>,
    dataset: &Arc<Dataset>,
    stream: Stream,
    epoch: usize,
    device: &B::Device,
) -> Result<Evaluation> {
    Ok(evaluate_episodes(config, model, dataset, stream, epoch, device)?.evaluation())
}

/// As [`evaluate`], keeping every episode's accuracy and every query's target and predicted
/// class (for per-class accuracy and confusion counts).
pub fn evaluate_episodes<B: Backend>(
    config: &Config,
    model: &AnyModel<B>,
    dataset: &Arc<Dataset>,
    stream: Stream,
    epoch: usize,
    device: &B::Device,
) -> Result<EpisodeRecords> {
    let (n, label) = match stream {
        Stream::Val => (config.episodes.val_episodes() as u64, "validation"),
        _ => (config.episodes.test_episodes as u64, "test"),
    };
    let start = if stream == Stream::Val { epoch as u64 * n } else { 0 };
    let mut bar = progress_bar(n, label);
    let mut records = EpisodeRecords::default();
    for episode in loader(config, dataset, stream, start..start + n)? {
        let episode = episode.with_context(|| format!("loading a {label} episode"))?;
        let scores = model.forward_episode(episode.to_tensor::<B>(device)).scores;
        let predicted = scores.argmax(1).into_data().convert::<i64>();
        let predicted = predicted.as_slice::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let targets = episode.query_targets();
        let correct = predicted.iter().zip(&targets).filter(|(p, t)| p == t).count();
        records.accuracies.push(100.0 * correct as f64 / targets.len().max(1) as f64);
        records.predictions.extend(
            targets
                .iter()
                .zip(predicted)
                .map(|(&t, &p)| (episode.classes[t as usize], episode.classes[p as usize])),
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(records)
}

/// The progress of a loop over `len` episodes: an indicatif bar on a terminal; elsewhere (SLURM,
/// `nohup`, CI logs: stderr is not a terminal and indicatif draws nothing) a plain `tracing` line
/// at a steady pace — every tenth of the loop or every 30 s, whichever comes first — with the ETA.
pub struct Progress {
    bar: ProgressBar,
    plain: Option<PlainProgress>,
}

/// The state of the plain lines.
struct PlainProgress {
    label: String,
    len: u64,
    pos: u64,
    started: std::time::Instant,
    last_line: std::time::Instant,
    last_tenth: u64,
    message: String,
}

/// Seconds between two plain progress lines at most.
const PLAIN_EVERY_SECONDS: f64 = 30.0;

impl Progress {
    /// One more episode done.
    pub fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        let Some(plain) = self.plain.as_mut() else { return };
        plain.pos += n;
        let tenth = plain.pos * 10 / plain.len.max(1);
        let due = plain.last_line.elapsed().as_secs_f64() >= PLAIN_EVERY_SECONDS;
        if (tenth > plain.last_tenth || due) && plain.pos < plain.len {
            plain.last_tenth = tenth;
            plain.last_line = std::time::Instant::now();
            let elapsed = plain.started.elapsed().as_secs_f64();
            let eta = elapsed / plain.pos as f64 * (plain.len - plain.pos) as f64;
            tracing::info!(
                "{}: {}/{} {}ETA {}",
                plain.label,
                plain.pos,
                plain.len,
                if plain.message.is_empty() {
                    String::new()
                } else {
                    format!("{} ", plain.message)
                },
                format_seconds(eta)
            );
        }
    }

    /// The bar's message (and the plain lines').
    pub fn set_message(&mut self, message: String) {
        if let Some(plain) = self.plain.as_mut() {
            plain.message.clone_from(&message);
        }
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1h02m`, `3m05s` or `12s`.
pub fn format_seconds(seconds: f64) -> String {
    match seconds.max(0.0).round() as u64 {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The progress of `len` episodes, labelled (see [`Progress`]).
pub fn progress_bar(len: u64, label: &str) -> Progress {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let now = std::time::Instant::now();
    let plain = (!terminal).then(|| PlainProgress {
        label: label.to_string(),
        len,
        pos: 0,
        started: now,
        last_line: now,
        last_tenth: 0,
        message: String::new(),
    });
    Progress { bar, plain }
}
