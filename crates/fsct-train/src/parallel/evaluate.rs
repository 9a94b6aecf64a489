//! Validation and test split across peers: each peer evaluates its share of the episodes
//! ([`super::episodes::eval_share`]), then one all-reduce gathers every episode's correct and
//! total query counts, so every peer computes the same per-episode accuracies, in episode order,
//! as one device does, and the same mean ± 95% CI.

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::prelude::*;
use fsct_episodes::Dataset;
use fsct_transformer::FewShotModel;

use crate::config::Config;
use crate::data::{loader, Stream};
use crate::evaluate::{evaluate, progress_bar, EpisodeRecords, Evaluation};
use crate::model::AnyModel;
use crate::parallel::episodes::{eval_share, prefetch};
use crate::parallel::Peer;

/// As [`evaluate`], over every peer's share of the episodes when `peer` has others (every peer
/// must call it, and gets the same result).
///
/// # Errors
/// An episode that cannot be loaded; a failed all-reduce (another peer stopped).
pub fn evaluate_shared<B: Backend>(
    config: &Config,
    model: &AnyModel<B>,
    dataset: &Arc<Dataset>,
    stream: Stream,
    epoch: usize,
    device: &B::Device,
    peer: Option<&Peer>,
) -> Result<Evaluation> {
    let Some(peer) = peer.filter(|p| p.peers > 1) else {
        return evaluate(config, model, dataset, stream, epoch, device);
    };
    let (n, label) = match stream {
        Stream::Val => (config.episodes.val_episodes(), "validation"),
        _ => (config.episodes.test_episodes, "test"),
    };
    let start = if stream == Stream::Val { (epoch * n) as u64 } else { 0 };
    let mine = eval_share(start, n, peer.peers, peer.rank);
    let episodes = prefetch(
        loader(config, dataset, stream, start..start)?,
        mine.clone(),
        config.data.prefetch,
    );
    let mut bar = peer.first_local.then(|| progress_bar(mine.len() as u64, label));
    // [correct of episode 0, queries of episode 0, correct of episode 1, …]
    let mut counts = vec![0.0f32; 2 * n];
    for index in mine {
        let episode = episodes.recv().context("the episode loader stopped")?;
        let episode = episode.with_context(|| format!("loading a {label} episode"))?;
        let scores = model.forward_episode(episode.to_tensor::<B>(device)).scores;
        let predicted = scores.argmax(1).into_data().convert::<i64>();
        let predicted = predicted.as_slice::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let targets = episode.query_targets();
        let correct = predicted.iter().zip(&targets).filter(|(p, t)| p == t).count();
        let i = (index - start) as usize;
        counts[2 * i] = correct as f32;
        counts[2 * i + 1] = targets.len() as f32;
        if let Some(bar) = bar.as_mut() {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // Counts are integers far below 2^24: exact in f32, and their sum is exact.
    let counts = peer.sum(Tensor::<B, 1>::from_floats(counts.as_slice(), device))?;
    let counts = counts
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let accuracies = counts.chunks(2).map(|c| 100.0 * c[0] / c[1].max(1.0)).collect();
    Ok(EpisodeRecords { accuracies, predictions: Vec::new() }.evaluation())
}
