//! The training side of fsct: everything behind the `fsct-train` binary, as a library so that
//! tests (and researchers) can drive it.
//!
//! - [`config`]: the TOML experiment file (serde, unknown keys rejected, reference defaults), its
//!   sections and its validation.
//! - [`cli`]: the subcommands' flags (the subcommands themselves are the binary's, in
//!   `src/commands/`).
//! - [`train`]: the experiment ([`train::run_experiment`]): output folder, resume check, dataset,
//!   the trainer's epochs, the final test.
//! - [`trainer`]: [`trainer::Trainer`], which owns the model, optimizer, trainer state and output
//!   files of a run, and its epoch (training, validation, best/last checkpoints, metrics).
//! - [`evaluate`]: accuracy ± 95% CI over validation or test episodes; the progress bars.
//! - [`outputs`]: the output folder's files besides checkpoints (`metrics.jsonl`,
//!   `results.txt`) and the results line both `train` and `test` write.
//! - [`curves`]: learning curves from `metrics.jsonl` (a run's `curves.svg`/`curves.png`,
//!   `fsct-train plot`), drawn with plotters.
//! - [`parallel`]: data-parallel training (`run.devices`, `run.nodes`, `episodes.per_step`) on
//!   Burn's collective engine, gradient accumulation, `fsct-train orchestrator`.
//! - [`step`]: one training step (what the trainer and the memory bench run).
//! - [`optim`]: the optimizer (AdamW, Adam, SGD), gradient clipping and the learning rate
//!   schedule (constant, cosine, step, linear warm-up): the training recipe of `[optim]`.
//! - [`precision`]: mixed precision (f32 master weights, half compute, dynamic loss scaling).
//! - [`checkpoint`]: atomic, self-describing, checksummed checkpoint files.
//! - [`weights`]: model weights (every parameter's shape checked) and optimizer state to and from
//!   checkpoint bytes.
//! - [`run_dir`]: claiming the output folder (writable, locked, no other run's files replaced).
//! - [`run_log`]: `train.log`, the console's tracing output kept in the run folder.
//! - [`resume`]: the resume policy (which config fields may change when a run resumes).
//! - [`error`]: exit codes (2 bad input, 1 a failed run) and one-cause error messages.
//! - [`infer`]: using a trained model on image files (`predict`, `embed`): support and query
//!   images, the eval transform, scores in chunks, backbone features.
//! - [`hugepages`]: the binary's global allocator (huge pages for large activation buffers).
//! - [`alloc_count`]: the counting wrapper around it, which the memory planner reads.
//! - [`plan`]: the memory planner (`fsct-train plan`, `memory.budget`): the predicted peak of a
//!   training step and of an evaluation episode, by component, and the settings that fit a budget.
//! - [`test_report`]: what `test` writes besides the results line (summary, per-class accuracy,
//!   confusion counts).
//! - [`model`], [`data`], [`stats`]: the model choice, the dataset splits, the CI formulas.
//!
//! Memory features are config switches: `memory.gradient_checkpoint` (`"blocks"`/`"stages"`:
//! segment checkpointing through `fsct_backbone::segments` in [`step`]; `"balanced"`: the binary
//! trains on `Autodiff<B, BalancedCheckpointing>`), `memory.precision`, `memory.cleanup_every`.

pub mod alloc_count;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod curves;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod hugepages;
pub mod infer;
pub mod model;
pub mod optim;
pub mod outputs;
pub mod parallel;
pub mod plan;
pub mod precision;
pub mod resume;
pub mod run_dir;
pub mod run_log;
pub mod stats;
pub mod step;
pub mod test_report;
pub mod train;
pub mod trainer;
pub mod weights;
