//! The few-shot heads of the reference code, generic over any [`Backbone`]:
//!
//! - [`FewShotTransformer`] (FS-CT, spec §2): learnable weighted prototypes, one pre-LN
//!   cross-attention block (cosine or the reference's degenerate softmax attention) with a GELU
//!   FFN, and the reference output head — quirks included, because they decide the published
//!   numbers and checkpoint compatibility.
//! - [`Ctx`] (the reference's "CrossTransformer" baseline, §2.8), cosine and softmax.
//! - [`FewShotModel`]: what a training loop needs from either (scores plus the live support and
//!   query embeddings for VIC), with [`episode_loss`] and [`episode_accuracy`] (§2.6).
//! - [`import`]: loading reference PyTorch checkpoints (`.tar` and plain state dicts, zip or legacy
//!   format, with wrapper prefixes or nested in trainers' checkpoints), damaged files refused cleanly.
//!   `import.rs` holds the entry points and `import/error.rs` the error. `import/checkpoint.rs`
//!   reads a file: `scan.rs` checks it without its data (the layouts in `zip_layout.rs` and
//!   `legacy_layout.rs`, the restricted pickle machine in `pickle.rs` and `input.rs` with its
//!   allow-list in `rebuild.rs`, storage and tensor extents in `storage.rs`, the object tree in
//!   `value.rs`), `keys.rs` finds where the state dict sits, `quiet.rs` keeps burn-store's panics
//!   off the screen; `key_map.rs` (reference ↔ fsct names) and `convert.rs` (one tensor into
//!   fsct's layout) map it onto the model. Safetensors files with the reference's keys are read
//!   too.
//! - [`export`]: the inverse, a model's weights under the reference's key names and layouts as
//!   safetensors (aliases and `num_batches_tracked` included, so PyTorch loads it strictly).
//!
//! Build one around a backbone from `fsct-backbone` or your own type implementing [`Backbone`].
//!
//! Under half precision, LayerNorm, the attention's softmax and cosine normalisations, the
//! output head's cosine and the loss compute in f32 (`fsct_precision`'s casts; LayerNorm in
//! `precision.rs`), and every model type here names its norm layers by type
//! (`fsct_precision::NormLayers`, needed by mixed precision's compute copy; a backbone of your
//! own implements it too to train in mixed precision).

mod attention;
mod config;
mod ctx;
mod episode;
mod error;
pub mod export;
mod feed_forward;
mod fsct;
mod head;
pub mod import;
mod precision;
mod rows;

pub use attention::{Attention, PreNormLinear};
pub use config::{AttentionVariant, CtxConfig, FsctConfig};
pub use ctx::Ctx;
pub use episode::{episode_accuracy, episode_loss, episode_targets, EpisodeForward, FewShotModel};
pub use error::ModelError;
pub use feed_forward::FeedForward;
pub use fsct::{FewShotTransformer, FsctIntermediates};
pub use fsct_backbone::Backbone;
pub use head::{CosineDistLinear, HeadLast, OutputHead};
