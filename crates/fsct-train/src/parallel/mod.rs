//! Data-parallel episodic training on Burn's collective engine (issue 19).
//!
//! Each step, every peer (a device on this node, `run.devices`, or on another node,
//! `run.nodes`) runs its share of the step's `episodes.per_step` episodes (forward and backward
//! passes), the gradients are summed over all peers by one `burn_collective::all_reduce` and
//! divided by the step's episodes (their mean), and every peer applies the same optimizer update,
//! so the peers' models stay identical. One device with `episodes.per_step > 1` is gradient
//! accumulation, through the same code.
//!
//! What follows burn-train's DDP strategy (`burn-train-0.21.0/src/learner/supervised/strategies/ddp/`):
//! one worker thread per device, each with a copy of the model (`strategy.rs`, `worker.rs`),
//! gradients synced through burn-collective before each optimizer step, rank 0 (the main device)
//! writing checkpoints and metrics. What differs, and why:
//!
//! - Burn's `distributed` feature (burn-core / burn-autodiff / burn-optim) is not enabled: with
//!   it, `Autodiff<B>` implements `AutodiffBackend` only for `B: DistributedBackend`
//!   (`burn-autodiff-0.21.0/src/backend.rs:155-156`, against `:95-96` without it), which Flex —
//!   fsct's CPU backend — does not implement (only cubecl's and fusion's backends and the dispatch
//!   backend do: `burn-cubecl-0.21.0/src/ops/distributed.rs:12`); the feature would remove
//!   training on the CPU from the whole workspace. Its all-reduce on CUDA goes through cubecl's
//!   own collective, not burn-collective, anyway. So fsct takes the route the feature leaves
//!   open to every backend: burn-collective's `all_reduce` on the gradients between
//!   [`step_gradients`](crate::step::step_gradients) and the optimizer step (see [`step`] for why
//!   one flat vector rather than burn-optim's per-parameter `GradientsParams::all_reduce`).
//! - Episodes are dealt by index from the run's one seeded stream ([`episodes`]), not split by a
//!   data loader per device, so a run's episodes do not depend on the number of peers.
//! - Validation and test are split across the peers and gathered ([`evaluate`]), not run on
//!   the main device alone.
//!
//! Files: [`layout`] (the config's peers), [`peer`] (registration and the all-reduce),
//! [`step`] (the step), [`episodes`] (dealing), [`evaluate`] (split evaluation), [`run`] (the
//! peer threads), [`orchestrator`] (`fsct-train orchestrator`). The trainer's side is
//! `trainer/data_parallel.rs`.

pub mod buffers;
pub mod episodes;
pub mod evaluate;
pub mod layout;
pub mod orchestrator;
pub mod peer;
pub mod run;
pub mod step;

pub use evaluate::evaluate_shared;
pub use layout::Layout;
pub use peer::Peer;
pub use run::train_and_test_parallel;
pub use step::parallel_step;
