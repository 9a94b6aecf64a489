//! Opens the configured dataset's three splits and validates them before training starts.

use std::sync::Arc;

use fsct_episodes::{
    synthetic_splits, Dataset, EpisodeError, EpisodeLoader, EpisodeSpec, LoaderConfig,
    SyntheticConfig, TransformConfig, TransformMode,
};

use crate::config::{Config, DatasetKind};

/// The three splits of an experiment.
pub struct Splits {
    /// Training classes.
    pub base: Arc<Dataset>,
    /// Validation classes.
    pub val: Arc<Dataset>,
    /// Test classes.
    pub novel: Arc<Dataset>,
}

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

/// One split of the dataset, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Training classes (`base.json`, `train/`).
    Base,
    /// Validation classes (`val.json`, `val/`).
    Val,
    /// Test classes (`novel.json`, `test/`).
    Novel,
}

/// Opens and validates one split (missing files, damaged images, too-small classes, … are
/// reported here). `test` opens only [`Role::Novel`], so a dataset that has only its test split
/// (cross-domain evaluation) works.
pub fn open_split(config: &Config, role: Role) -> Result<Arc<Dataset>, EpisodeError> {
    let d = &config.data;
    let split = match d.kind {
        DatasetKind::Synthetic => {
            let s = synthetic_splits(&SyntheticConfig {
                seed: config.run.seed,
                classes: d.synthetic_classes,
                images_per_class: d.synthetic_images_per_class,
                native_size: d.synthetic_native_size,
            });
            match role {
                Role::Base => s.base,
                Role::Val => s.val,
                Role::Novel => s.novel,
            }
        }
        DatasetKind::Json => {
            let root = d.root.clone().unwrap_or_default();
            let file = match role {
                Role::Base => &d.base_split,
                Role::Val => &d.val_split,
                Role::Novel => &d.test_split,
            };
            Dataset::open_json(&root.join(file))?
        }
        DatasetKind::Folder => {
            let root = d.root.clone().unwrap_or_default();
            let folder = match role {
                Role::Base => "train",
                Role::Val => "val",
                Role::Novel => "test",
            };
            Dataset::open_folder(&root.join(folder), None)?
        }
    };
    split.validate(&episode_spec(config))?;
    Ok(Arc::new(split))
}

/// Opens and validates the three splits of a training run, and checks that no class (by name
/// or by image file) is in two of them.
pub fn open_splits(config: &Config) -> Result<Splits, EpisodeError> {
    let base = open_split(config, Role::Base)?;
    let val = open_split(config, Role::Val)?;
    let novel = open_split(config, Role::Novel)?;
    fsct_episodes::check_disjoint(&[&*base, &*val, &*novel])?;
    Ok(Splits { base, val, novel })
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
