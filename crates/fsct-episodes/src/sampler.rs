//! The episodic sampler (spec §3.3): N distinct classes, K + M images of each, drawn without
//! replacement, from an RNG derived from (seed, episode index) alone.

use burn::config::Config;
use rand::seq::index;

use crate::error::EpisodeError;
use crate::seed::{stream, tag};
use crate::split::Split;

/// N-way, K-shot, M-query.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub struct EpisodeShape {
    #[config(default = 5)]
    pub n_way: usize,
    #[config(default = 5)]
    pub k_shot: usize,
    #[config(default = 16)]
    pub n_query: usize,
}

impl EpisodeShape {
    /// K + M.
    pub fn images_per_class(&self) -> usize {
        self.k_shot + self.n_query
    }

    /// N · (K + M).
    pub fn images(&self) -> usize {
        self.n_way * self.images_per_class()
    }

    pub fn validate(&self) -> Result<(), EpisodeError> {
        let zero = |field| EpisodeError::Config {
            field,
            problem: "is 0".into(),
            fix: "use at least 1",
        };
        if self.n_way == 0 {
            return Err(zero("n_way"));
        }
        if self.k_shot == 0 {
            return Err(zero("k_shot"));
        }
        Ok(())
    }
}

/// Which images make up one episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpisodePlan {
    /// Indices into the split's classes, in episode order (position n is target n).
    pub classes: Vec<usize>,
    /// For each chosen class, K + M distinct item indices; the first K are the support set.
    pub items: Vec<Vec<usize>>,
}

/// Draws [`EpisodePlan`]s for a split; episode `i` depends only on (seed, i).
#[derive(Clone, Debug)]
pub struct EpisodeSampler {
    class_sizes: Vec<usize>,
    shape: EpisodeShape,
    seed: u64,
}

impl EpisodeSampler {
    /// Checks the split against the shape (enough classes, enough images per class).
    pub fn new(split: &Split, shape: EpisodeShape, seed: u64) -> Result<Self, EpisodeError> {
        split.check_episode_shape(&shape)?;
        Ok(Self {
            class_sizes: split.classes.iter().map(|c| c.items.len()).collect(),
            shape,
            seed,
        })
    }

    pub fn shape(&self) -> EpisodeShape {
        self.shape
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The classes are the first N of a uniform random permutation; within each class, K + M
    /// images without replacement in random order.
    pub fn plan(&self, episode: u64) -> EpisodePlan {
        let mut rng = stream(self.seed, &[tag::EPISODE, episode]);
        let classes = index::sample(&mut rng, self.class_sizes.len(), self.shape.n_way).into_vec();
        let items = classes
            .iter()
            .map(|&c| {
                index::sample(&mut rng, self.class_sizes[c], self.shape.images_per_class())
                    .into_vec()
            })
            .collect();
        EpisodePlan { classes, items }
    }
}
