//! Everything between images and an episode tensor `[N, K + M, C, H, W]` for few-shot training.
//!
//! - Datasets, all read into one representation ([`Dataset`] of three [`Split`]s, each a list of
//!   [`Class`]es of [`Item`]s) and validated when opened:
//!   - the reference JSON split files ([`open_json_split`], [`open_json_dataset`]);
//!   - image folders `root/<class>/<image>` ([`open_image_folders`], [`open_image_folder_lists`]);
//!   - a synthetic glyph dataset drawn in code from a seed, no files needed
//!     ([`SyntheticConfig`]); the quickstart's default data and the end-to-end tests' data.
//! - Transforms of the reference (spec §3.4): eval resize + centre crop (optionally the
//!   published 2022 variant) and train augmentation (random resized crop, colour jitter, flip),
//!   then ImageNet normalisation ([`TransformConfig`], [`default_image_size`]).
//! - The episodic sampler ([`EpisodeSampler`]) and a multi-threaded, prefetching, optionally
//!   caching loader ([`EpisodeLoader`]) whose episodes depend only on (seed, episode index):
//!   bit-identical for any number of threads.
//!
//! The crate knows nothing of models; it uses Burn only to turn an [`Episode`] into a tensor on
//! any backend ([`Episode::to_tensor`]).
//!
//! ```no_run
//! use fsct_episodes::*;
//! # fn main() -> Result<(), EpisodeError> {
//! let data = SyntheticConfig::new().with_image_size(32).build()?;
//! let loader = EpisodeLoader::new(
//!     data.base,
//!     EpisodeShape::new(),                          // 5-way 5-shot 16-query
//!     TransformConfig::new(32).with_augment(true),
//!     &LoaderConfig::new().with_threads(2),
//!     42,                                           // seed
//! )?;
//! for episode in loader.iter(0..200) {
//!     let episode = episode?;
//!     // let x = episode.to_tensor::<B>(&device); // [5, 21, 3, 32, 32]
//! }
//! # Ok(()) }
//! ```

mod cache;
mod episode;
mod error;
mod image_folder;
mod json_split;
mod loader;
mod sampler;
mod seed;
mod split;
mod synthetic;
mod transform;

pub use episode::Episode;
pub use error::EpisodeError;
pub use image_folder::{
    open_image_folder_lists, open_image_folder_split, open_image_folders, ClassLists,
    IMAGE_EXTENSIONS,
};
pub use json_split::{open_json_dataset, open_json_split};
pub use loader::{EpisodeIter, EpisodeLoader, LoaderConfig};
pub use sampler::{EpisodePlan, EpisodeSampler, EpisodeShape};
pub use seed::{stream, StreamRng};
pub use split::{Class, Dataset, Item, OpenOptions, Split, SplitKind, Verify};
pub use synthetic::{GlyphId, SyntheticConfig};
pub use transform::{
    default_image_size, random_resized_crop_params, ColorJitterConfig, EvalResize,
    TransformConfig,
};
