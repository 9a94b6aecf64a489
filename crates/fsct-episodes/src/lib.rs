//! Everything between images and an episode tensor `[N, K + M, C, H, W]` for few-shot training.
//!
//! - Datasets: a [`Dataset`] is one split (base, val or novel), a list of classes of images,
//!   validated when opened and against an [`EpisodeSpec`] ([`Dataset::validate`]) before
//!   training starts:
//!   - the reference JSON split files ([`Dataset::open_json`], [`open_json_splits`]);
//!   - image folders `root/<class>/<image>` ([`Dataset::open_folder`], [`open_image_folders`],
//!     [`open_image_folder_lists`]);
//!   - a synthetic glyph dataset drawn in code from a seed, no files needed
//!     ([`synthetic_splits`]): the quickstart's default data and the end-to-end tests' data.
//!
//!   The three splits of a dataset are one [`Splits`] (each split by its [`Role`], shared as an
//!   `Arc` with the loaders); a [`SplitSource`] says where they come from and opens them by
//!   role, validated, and checked to be disjoint, as a training run needs.
//!
//!   Opening validates fully, so that no dataset is silently wrong: every image must exist,
//!   have a readable header and be complete (a JPEG cut in half, which the decoder would fill in
//!   with grey, is an [`EpisodeError::Decode`] naming the file, at open time and in the loader;
//!   see [`Verify`]); images are JPEG, PNG, WebP, BMP, GIF or TIFF ([`IMAGE_EXTENSIONS`]). What
//!   is skipped (other files, dangling symbolic links, a file listed twice in its class) is
//!   counted and logged as one warning per split; a file in two classes is an error. Splits must
//!   not share a class or an image: [`open_json_splits`], [`open_image_folders`],
//!   [`open_image_folder_lists`] and [`SplitSource::open_all`] check it, and [`check_disjoint`]
//!   does for splits opened one by one. Split files may start with a UTF-8 byte-order mark; any
//!   other encoding, a JSON syntax error and a wrong structure are three different errors.
//! - Transforms of the reference (spec §3.4): eval resize + centre crop (optionally the
//!   published 2022 variant) and train augmentation (random resized crop, colour jitter, flip),
//!   then ImageNet normalisation ([`TransformConfig`], [`default_image_size`]).
//! - The episodic sampler ([`EpisodeSampler`]) and a multi-threaded, prefetching, optionally
//!   caching loader ([`EpisodeLoader`]) whose episodes depend only on (seed, episode index):
//!   bit-identical for any number of threads.
//!
//! # Where each concept lives
//!
//! | module | what |
//! |---|---|
//! | `dataset` | [`Dataset`], [`Class`], [`Item`]: the representation every format opens into |
//! | `splits` | [`Splits`], [`Role`], [`check_disjoint`] |
//! | `source` | [`SplitSource`]: a dataset's three splits opened by role, validated, disjoint |
//! | `image_file` | [`Verify`], [`OpenOptions`], [`IMAGE_EXTENSIONS`], [`Dataset::validate`], [`Dataset::verify_files`], [`Dataset::load`] |
//! | `integrity` | is an image file complete? one submodule per format (`jpeg`, `png`, `gif`, `webp`, `bmp`, `tiff`), their shared reading in `read` |
//! | `json_split` | the reference JSON split files ([`open_json_split`], [`open_json_splits`], [`Dataset::open_json`]) |
//! | `image_folder` | `root/<class>/<image>` folders ([`open_image_folder_split`], [`open_image_folders`], [`open_image_folder_lists`], [`Dataset::open_folder`]) |
//! | `assemble` | the last steps both file formats share: repeats dropped, skipped files logged, files checked |
//! | `canonical` | canonical paths, for comparing files |
//! | `synthetic` | [`SyntheticConfig`], [`synthetic_splits`] |
//! | `glyph` | [`GlyphId`]: one synthetic image, drawn in code |
//! | `spec` | [`EpisodeSpec`]: N-way, K-shot, M-query |
//! | `sampler` | [`EpisodeSampler`], [`EpisodePlan`]: which images make up episode `i` |
//! | `transform` | [`TransformConfig`], [`Transform`], [`TransformMode`] and the torchvision-equivalent pieces |
//! | `loader` | [`EpisodeLoader`], [`LoaderConfig`]: worker threads, reordering, prefetch |
//! | `cache` | decoded images shared by the loaders of one dataset |
//! | `episode` | [`Episode`] and its tensor ([`Episode::to_tensor`]) |
//! | `seed` | [`stream`]: the seeded RNG streams everything random is drawn from |
//! | `error` | [`EpisodeError`]: every failure, naming the file or class and the fix |
//!
//! Modules depend one way: formats (`json_split`, `image_folder`, `synthetic`) and `source`
//! build on `splits`, `dataset` and `image_file`; `sampler` and `loader` read a [`Dataset`]
//! and nothing reads them back; `dataset` depends only on `spec`, `glyph` and `error`.
//!
//! The crate knows nothing of models; it uses Burn only to turn an [`Episode`] into a tensor on
//! any backend ([`Episode::to_tensor`]).
//!
//! ```no_run
//! use fsct_episodes::*;
//! # fn main() -> Result<(), EpisodeError> {
//! let splits = synthetic_splits(&SyntheticConfig::default()); // 64 / 16 / 20 classes
//! let spec = EpisodeSpec { n_way: 5, k_shot: 5, n_query: 10 };
//! splits.base.validate(&spec)?;
//! let transform = TransformConfig::new(32, TransformMode::Train);
//! let config = LoaderConfig { seed: 42, ..LoaderConfig::default() };
//! let epoch = 0;
//! let loader = EpisodeLoader::new(splits.base, spec, transform, config, epoch * 100..(epoch + 1) * 100)?;
//! for episode in loader {
//!     let episode = episode?;
//!     assert_eq!(episode.shape, [5, 15, 3, 32, 32]);
//!     // let x = episode.to_tensor::<B>(&device);
//! }
//! # Ok(()) }
//! ```

mod assemble;
mod cache;
mod canonical;
mod dataset;
mod episode;
mod error;
mod glyph;
mod image_file;
mod image_folder;
mod integrity;
mod json_split;
mod loader;
mod sampler;
mod seed;
mod source;
mod spec;
mod splits;
mod synthetic;
#[cfg(test)]
mod test_util;
mod transform;

pub use dataset::{Class, Dataset, Item};
pub use episode::Episode;
pub use error::EpisodeError;
pub use glyph::GlyphId;
pub use image_file::{OpenOptions, Verify, IMAGE_EXTENSIONS};
pub use image_folder::{
    open_image_folder_classes, open_image_folder_lists, open_image_folder_split,
    open_image_folders, ClassLists,
};
pub use json_split::{open_json_split, open_json_splits};
pub use loader::{EpisodeLoader, LoaderConfig};
pub use sampler::{EpisodePlan, EpisodeSampler};
pub use seed::{stream, StreamRng};
pub use source::SplitSource;
pub use spec::EpisodeSpec;
pub use splits::{check_disjoint, Role, Splits};
pub use synthetic::{synthetic_splits, SyntheticConfig};
pub use transform::{
    default_image_size, random_resized_crop_params, ColorJitterConfig, EvalResize, Transform,
    TransformConfig, TransformMode,
};
