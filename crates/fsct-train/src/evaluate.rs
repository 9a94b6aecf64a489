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
    let bar = progress_bar(n, label);
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

/// A progress bar of `len` episodes, labelled.
pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    bar
}
