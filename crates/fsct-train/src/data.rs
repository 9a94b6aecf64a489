//! Opens the configured dataset's three splits and validates them before training starts
//! (through fsct-episodes' [`SplitSource`]), and makes the episode loaders of a run.

use std::sync::Arc;

use fsct_episodes::{
    Dataset, EpisodeError, EpisodeLoader, EpisodeSpec, LoaderConfig, SplitSource, SyntheticConfig,
    TransformConfig, TransformMode,
};
/// The three splits of an experiment, and one split by its role (fsct-episodes' types).
pub use fsct_episodes::{Role, Splits};

use crate::config::{Config, DatasetKind};

/// Which split and purpose an episode stream serves; each gets its own seed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Training episodes (augmented if configured).
    Train,
    /// Validation episodes.
    Val,
    /// Test episodes.
    Test,
}

impl Stream {
    fn salt(self) -> u64 {
        match self {
            Self::Train => 0,
            Self::Val => 0x5eed_0000_0000_0001,
            Self::Test => 0x5eed_0000_0000_0002,
        }
    }
}

/// The episode shape of the config.
pub fn episode_spec(config: &Config) -> EpisodeSpec {
    let e = &config.episodes;
    EpisodeSpec { n_way: e.n_way, k_shot: e.k_shot, n_query: e.n_query }
}

/// Where the config's dataset comes from: the synthetic glyphs, `root/<file>` JSON splits or
/// `root/train`, `root/val`, `root/test` folders.
pub fn split_source(config: &Config) -> SplitSource {
    let d = &config.data;
    let root = d.root.clone().unwrap_or_default();
    match d.kind {
        DatasetKind::Synthetic => SplitSource::Synthetic(SyntheticConfig {
            seed: config.run.seed,
            classes: d.synthetic_classes,
            images_per_class: d.synthetic_images_per_class,
            native_size: d.synthetic_native_size,
        }),
        DatasetKind::Json => SplitSource::JsonFiles {
            base: root.join(&d.base_split),
            val: root.join(&d.val_split),
            novel: root.join(&d.test_split),
        },
        DatasetKind::Folder => SplitSource::Folders {
            base: root.join("train"),
            val: root.join("val"),
            novel: root.join("test"),
        },
    }
}

/// Opens and validates one split (missing files, damaged images, too-small classes, … are
/// reported here). `test` opens only [`Role::Novel`], so a dataset that has only its test split
/// (cross-domain evaluation) works.
pub fn open_split(config: &Config, role: Role) -> Result<Arc<Dataset>, EpisodeError> {
    split_source(config).open_validated(role, &episode_spec(config))
}

/// Opens and validates the three splits of a training run, and checks that no class (by name
/// or by image file) is in two of them.
pub fn open_splits(config: &Config) -> Result<Splits, EpisodeError> {
    split_source(config).open_all(&episode_spec(config))
}

/// Episodes `range` of one stream, decoded on worker threads.
pub fn loader(
    config: &Config,
    dataset: &Arc<Dataset>,
    stream: Stream,
    range: std::ops::Range<u64>,
) -> Result<EpisodeLoader, EpisodeError> {
    let mode = match stream {
        Stream::Train if config.data.train_aug => TransformMode::Train,
        _ if config.data.eval_reference_2022 => TransformMode::EvalReference2022,
        _ => TransformMode::Eval,
    };
    let transform =
        TransformConfig { image_size: config.image_size(), mode, single_channel: false };
    let loader_config = LoaderConfig {
        threads: config.data.threads,
        prefetch: config.data.prefetch,
        seed: config.run.seed ^ stream.salt(),
        cache: config.data.cache,
    };
    EpisodeLoader::new(dataset.clone(), episode_spec(config), transform, loader_config, range)
}
