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
//! On Flex (the CPU backend) the batch norm → ReLU → max-pool tail of each block runs as one
//! fused operation with its own backward pass (`fused`): less memory and fewer passes than the
//! composed ops, which every other backend runs and which compute the same function.

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

pub use backbone::Backbone;
pub use builtin::{BackboneName, BuiltinBackbone};
pub use conv_block::{ConvBlock, ConvBlockConfig};
pub use convnet::{ConvNet, ConvNetConfig};
pub use error::BackboneError;
pub use norm::BatchNormMode;
pub use resnet::{BasicBlock, Downsample, ResNet, ResNetConfig, ResNetStem};
