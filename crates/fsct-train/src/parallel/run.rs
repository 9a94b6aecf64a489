//! A data-parallel run on this node: one trainer per peer, each on its own thread with its own
//! rayon pool (its share of the cores), as burn-train's DDP strategy runs one worker thread per
//! device (`burn-train-0.21.0/src/learner/supervised/strategies/ddp/strategy.rs`); the epochs,
//! the test split across the peers, and rank 0's files.

use std::sync::Arc;

use anyhow::Result;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::data::{Splits, Stream};
use crate::model::AnyModel;
use crate::outputs::Outputs;
use crate::parallel::peer::PeerStopped;
use crate::parallel::{evaluate_shared, Layout, Peer};
use crate::train::RunSummary;
use crate::trainer::Trainer;

/// The epochs and the test of a data-parallel run, for every peer of this node (`layout.local`
/// on devices like `device` with those indices). Rank 0 (node 0's first peer) writes the
/// checkpoints, `metrics.jsonl` and `results.txt`; the others write nothing.
///
/// # Errors
/// The first peer's error that is not a consequence of another's ([`PeerStopped`]); when one
/// peer fails, the collective is reset so that the others stop instead of waiting for it.
pub fn train_and_test_parallel<B: AutodiffBackend>(
    config: &Config,
    outputs: &Outputs,
    device: &B::Device,
    splits: &Splits,
    resumed: Option<Checkpoint>,
    layout: &Layout,
) -> Result<RunSummary> {
    let devices: Vec<B::Device> = layout.local.iter().map(|&i| indexed::<B>(device, i)).collect();
    let local = devices.len();
    let threads = (rayon::current_num_threads() / local).max(1);
    tracing::info!(
        peers = layout.peers(),
        local,
        nodes = layout.nodes,
        per_step = layout.per_step,
        threads_per_peer = threads,
        "data-parallel training"
    );
    // This node's first trainer, built as on one device; the others are exact copies of it
    // (built here, one after the other: Flex's random generator is global).
    let placeholder = Peer::alone(layout.per_step);
    let last = outputs.last.clone();
    let first = Trainer::<B>::for_peer(
        config,
        Outputs::new(&config.run.output),
        &devices[0],
        resumed.map(|c| (c, last.as_path())),
        placeholder.clone(),
    )?;
    let mut trainers = vec![first];
    for device in &devices[1..] {
        let copy = trainers[0].replica(device, placeholder.clone())?;
        trainers.push(copy);
    }
    let mut handles = Vec::new();
    let mut trainers = trainers.into_iter().enumerate();
    let (_, first) = trainers.next().expect("one peer at least");
    for (k, trainer) in trainers {
        let (config, layout, splits) = (config.clone(), layout.clone(), share(splits));
        let device = devices[k].clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("fsct-peer-{k}"))
                .spawn(move || {
                    in_pool(threads, || {
                        run_peer::<B>(&config, trainer, &device, &splits, &layout, k)
                    })
                })
                .map_err(|e| anyhow::anyhow!("cannot start a peer thread: {e}"))?,
        );
    }
    let mine = in_pool(threads, || run_peer::<B>(config, first, &devices[0], splits, layout, 0));
    let mut results = vec![mine];
    for handle in handles {
        results
            .push(handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a peer thread panicked"))));
    }
    // The cause, not its consequences on the other peers.
    let cause = results
        .iter()
        .position(|r| matches!(r, Err(e) if e.downcast_ref::<PeerStopped>().is_none()))
        .or_else(|| results.iter().position(Result::is_err));
    if let Some(i) = cause {
        return results.swap_remove(i);
    }
    let summary = results.swap_remove(0)?;
    Ok(summary)
}

/// One peer's epochs and test. Returns the run's summary (the same on every peer).
fn run_peer<B: AutodiffBackend>(
    config: &Config,
    mut trainer: Trainer<B>,
    device: &B::Device,
    splits: &Splits,
    layout: &Layout,
    k: usize,
) -> Result<RunSummary> {
    let peer = Peer::join::<B::InnerBackend>(layout, k, device.clone())?;
    let result = epochs_and_test(config, &mut trainer, device, splits, &peer);
    match &result {
        Ok(_) => peer.finish::<B::InnerBackend>(),
        Err(err) => {
            tracing::debug!(rank = peer.rank, "peer stopped: {}", crate::error::render(err));
            peer.abort::<B::InnerBackend>();
        }
    }
    result
}

fn epochs_and_test<B: AutodiffBackend>(
    config: &Config,
    trainer: &mut Trainer<B>,
    device: &B::Device,
    splits: &Splits,
    peer: &Peer,
) -> Result<RunSummary> {
    trainer.set_peer(peer.clone());
    // The best model in memory: every peer decides "improved" on the same gathered accuracy,
    // and none has to read rank 0's best.ckpt (another node may not see that folder).
    let mut best: Option<AnyModel<B::InnerBackend>> = None;
    for epoch in trainer.state().epochs_done..config.optim.epochs {
        // Every peer has the same trainer state, so all stop at the same epoch.
        if crate::train::stops_early(config, trainer.state()) {
            break;
        }
        let report = trainer.run_epoch(&splits.base, &splits.val, epoch)?;
        if report.improved {
            best = Some(trainer.model().valid());
        }
    }
    let test_model = match best {
        Some(model) => model,
        // No better epoch in this session: best.ckpt, if any, is from before the resume.
        None => trainer.model_to_test()?,
    };
    let test =
        evaluate_shared(config, &test_model, &splits.novel, Stream::Test, 0, device, Some(peer))?;
    B::memory_cleanup(device);
    if peer.writes() {
        crate::train::record_test(config, &Outputs::new(&config.run.output), test)?;
    }
    Ok(RunSummary {
        best_val_acc: trainer.state().best_val_acc,
        test_acc: test.accuracy,
        test_ci95: test.ci95,
        test_episodes: config.episodes.test_episodes,
    })
}

/// Runs `f` with rayon's parallel loops (Flex's kernels) on a pool of `threads` threads.
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(err) => {
            tracing::warn!(%err, "no rayon pool of {threads} threads: the peer uses the global pool");
            f()
        }
    }
}

/// `device` with another index (`cuda:0` → `cuda:i`); the CPU device has none (Flex: always
/// the one CPU device).
fn indexed<B: Backend>(device: &B::Device, index: u16) -> B::Device {
    use burn::tensor::backend::Device as _;
    let mut id = device.to_id();
    id.index_id = index;
    B::Device::from_id(id)
}

/// The three splits for another thread (the datasets are shared, not copied).
fn share(splits: &Splits) -> Splits {
    Splits {
        base: Arc::clone(&splits.base),
        val: Arc::clone(&splits.val),
        novel: Arc::clone(&splits.novel),
    }
}
