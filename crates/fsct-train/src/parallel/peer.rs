//! One peer of a data-parallel run and its link to the others: registration with Burn's
//! collective engine (`burn_collective::register`, local and, with an orchestrator, global), the
//! sum of a vector over all peers (`burn_collective::all_reduce`), and the end of the session.
//!
//! burn-train's DDP strategy (`burn-train-0.21.0/src/learner/supervised/strategies/ddp/`) starts
//! one worker thread per device, each with a fork of the model, and syncs the gradients through
//! the collective before every optimizer step; fsct does the same with its own episodic step. It
//! calls burn-collective directly on the inner (non-autodiff) backend, as the collective's docs
//! ask ("with auto-diff backends, make sure to use the inner backend").

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::InputError;
use crate::parallel::Layout;

/// How long registration waits for every peer (and, multi-node, the orchestrator and the other
/// nodes) before giving up with an error instead of hanging. `FSCT_COLLECTIVE_TIMEOUT` (seconds)
/// overrides it.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(300);

/// The error of a collective call after another peer stopped (and reset the session): a
/// consequence, which the run reports only when no peer has another error.
#[derive(Debug, thiserror::Error)]
#[error("peer {rank}: the all-reduce failed ({why}); another peer stopped first")]
pub struct PeerStopped {
    /// The peer that saw it.
    pub rank: usize,
    /// The collective's error.
    pub why: String,
}

/// One peer: its rank among all peers, and its link to the others when there are others.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Global rank: node-major (node 0's peers first). Rank 0 writes the run's files.
    pub rank: usize,
    /// Peers over all nodes.
    pub peers: usize,
    /// Training episodes per step over all peers (`episodes.per_step`).
    pub per_step: usize,
    /// Whether this peer is the first of its node (it shows the progress bars).
    pub first_local: bool,
    link: Option<PeerId>,
}

impl Peer {
    /// The only peer: gradient accumulation over `per_step` episodes, nothing to reduce.
    pub fn alone(per_step: usize) -> Self {
        Self { rank: 0, peers: 1, per_step, first_local: true, link: None }
    }

    /// This node's `k`-th peer, registered with the collective on `device` (blocks until every
    /// peer of the node, and with `layout.global` every node, has registered).
    ///
    /// # Errors
    /// An [`InputError`] (exit code 2) naming `run.orchestrator` when the registration did not
    /// complete within [`REGISTER_TIMEOUT`] (orchestrator unreachable, a node missing), or the
    /// collective's refusal.
    pub fn join<B: Backend>(layout: &Layout, k: usize, device: B::Device) -> Result<Self> {
        let rank = layout.rank(k);
        let peer = Self {
            rank,
            peers: layout.peers(),
            per_step: layout.per_step,
            first_local: k == 0,
            link: None,
        };
        if layout.peers() == 1 {
            return Ok(peer);
        }
        let id = PeerId::from(rank);
        let mut config = CollectiveConfig::default().with_num_devices(layout.local.len());
        if let Some((node, orchestrator)) = &layout.global {
            let port = super::layout::ws_address("run.node_address", node)
                .map_err(|(_, why)| InputError::new(format!("run.node_address {why}")))?
                .1;
            let parse = |field: &str, text: &str| {
                text.parse().map_err(|e| InputError::new(format!("{field} `{text}`: {e}")))
            };
            // Between nodes: burn-collective's default global strategy (Ring). Its sync after
            // every all-reduce hung from the second one on in 0.21.0: fixed in
            // vendor/burn-collective (see its FSCT.md).
            config = config
                .with_num_nodes(layout.nodes as u32)
                .with_node_address(parse("run.node_address", node)?)
                .with_global_address(parse("run.orchestrator", orchestrator)?)
                .with_data_service_port(port);
        }
        let timeout = std::env::var("FSCT_COLLECTIVE_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(REGISTER_TIMEOUT, Duration::from_secs);
        let (tx, rx) = mpsc::channel();
        // burn-collective's register blocks until every peer has registered and has no timeout
        // of its own: wait for it on a helper thread.
        std::thread::spawn(move || {
            let _ = tx.send(burn_collective::register::<B>(id, device, config));
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => {
                tracing::debug!(rank, peers = layout.peers(), "peer registered");
                Ok(Self { link: Some(id), ..peer })
            }
            Ok(Err(err)) => Err(anyhow::anyhow!("peer {rank}: the collective refused its registration: {err:?}")),
            Err(_) => Err(match &layout.global {
                Some((_, orchestrator)) => InputError::new(format!(
                    "run.orchestrator: node {} could not join the run within {} s (orchestrator at {orchestrator} \
                     unreachable, or not all run.nodes = {} nodes started): start `fsct-train orchestrator --port P` \
                     there first, then the same command on every node with its own run.node_rank",
                    layout.node_rank,
                    timeout.as_secs(),
                    layout.nodes
                ))
                .into(),
                None => anyhow::anyhow!(
                    "peer {rank}: the other peers of run.devices did not register within {} s",
                    timeout.as_secs()
                ),
            }),
        }
    }

    /// Whether this peer writes the run's files (checkpoints, metrics, results): rank 0.
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// The element-wise sum of `values` over all peers (every peer gets it). `values` must have
    /// the same shape on every peer and every peer must call this the same number of times.
    ///
    /// # Shapes
    /// `[n]` in, `[n]` out.
    ///
    /// # Errors
    /// [`PeerStopped`]: another peer failed and reset the session (or, a bug, the shapes differ).
    pub fn sum<B: Backend>(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let Some(id) = self.link else { return Ok(values) };
        let primitive = values.into_primitive().tensor();
        let summed = burn_collective::all_reduce::<B>(id, primitive, ReduceOperation::Sum)
            .map_err(|err| PeerStopped { rank: self.rank, why: format!("{err:?}") })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Leaves the collective session (after the last collective call of the run).
    pub fn finish<B: Backend>(&self) {
        if let Some(id) = self.link {
            if let Err(err) = burn_collective::finish_collective::<B>(id) {
                tracing::debug!(rank = self.rank, ?err, "leaving the collective");
            }
        }
    }

    /// Ends the session for every local peer after this one failed: their pending and next
    /// collective calls return an error instead of waiting for it forever.
    pub fn abort<B: Backend>(&self) {
        if self.link.is_some() {
            burn_collective::reset_collective::<B>();
        }
    }
}
