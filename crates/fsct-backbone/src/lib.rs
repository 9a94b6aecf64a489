//! Feature extractors for few-shot classification.
//!
//! This crate offers the backbones of the reference FS-CT code, ported 1:1 (parameter names,
//! initialisation and output shapes), and the [`Backbone`] trait through which FS-CT and CTX
//! (in `fsct-transformer`) consume any feature extractor, built in or your own:
//!
//! - [`ConvNet`]: Conv4/Conv6 and their `S` (single input channel) and `NP` (no pooling after the
//!   second block) variants (spec §1.1–1.3).
//! - [`ResNet`]: ResNet12/18/34 in the "FETI" layout (5×5 stem, adaptive pool to 7×7, §1.4) and the
//!   torchvision layout (7×7 stem + max-pool, §1.5), optionally frozen with BatchNorm on batch
//!   statistics as the reference runs it.
//! - [`BackboneName`] / [`BuiltinBackbone`]: pick one of the above by its reference name.
//!
//! Everything is generic over `B: Backend`; feature shapes are computed from the input size.
//! On Flex (the CPU backend) the batch norm → ReLU → max-pool tail of each Conv block and the
//! batch norm → add → ReLU end of each ResNet block run as fused operations with their own
//! backward pass: less memory and fewer passes than the composed ops, which every other backend
//! runs and which compute the same function. They live in `fused/`: the entry points and the
//! composed ops in `fused/mod.rs`, routing to Flex in `route.rs`, the shared batch-norm pieces in
//! `batch_norm.rs`, the op skeleton in `op.rs`, one file per op (`relu_pool.rs`, `residual.rs`)
//! and the slice kernels in `kernels/`.
//! Segment checkpointing (keep each block's input, run the block again in the backward pass)
//! lives in `segments.rs`; each backbone says where it cuts through [`Backbone::segment_count`]
//! and [`Backbone::forward_segment`].
//! BatchNorm computes in f32 whatever the activations' dtype (`norm.rs`, which also names every
//! backbone's norm layers by type for mixed precision: `fsct_precision::NormLayers`).
//! Those kernels and the convolutions behind them need fsct's patched burn-flex
//! (`vendor/burn-flex`, applied by `[patch.crates-io]`): built against stock Flex, the build
//! script warns and `flex_kernels.rs` logs one warning on the first forward pass (README, "Using
//! fsct as a library").

mod backbone;
mod builtin;
mod conv_block;
mod convnet;
mod error;
mod flex_kernels;
mod fused;
mod init;
mod norm;
mod resnet;
pub mod segments;

pub use backbone::Backbone;
pub use builtin::{BackboneName, BuiltinBackbone};
pub use conv_block::{ConvBlock, ConvBlockConfig};
pub use convnet::{ConvNet, ConvNetConfig};
pub use error::BackboneError;
pub use fused::{with_block_ops, BlockOps};
pub use norm::BatchNormMode;
pub use resnet::{BasicBlock, Downsample, ResNet, ResNetConfig, ResNetStem};
pub use segments::{SegmentLevel, SegmentTape};
