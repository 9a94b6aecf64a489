//! The episodic sampler (spec §3.3): N distinct classes, K + M images of each, drawn without
//! replacement, from an RNG derived from (seed, episode index) alone.

use rand::seq::index;

use crate::dataset::Dataset;
use crate::error::EpisodeError;
use crate::seed::{stream, tag};
use crate::spec::EpisodeSpec;

/// Which images make up one episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpisodePlan {
    /// Indices into the dataset's classes, in episode order (position n is target n).
    pub classes: Vec<usize>,
    /// For each chosen class, K + M distinct item indices; the first K are the support set.
    pub items: Vec<Vec<usize>>,
}

/// Draws [`EpisodePlan`]s for a dataset; episode `i` depends only on (seed, i).
#[derive(Clone, Debug)]
pub struct EpisodeSampler {
    class_sizes: Vec<usize>,
    spec: EpisodeSpec,
    seed: u64,
}

impl EpisodeSampler {
    /// Checks the dataset against the spec (enough classes, enough images per class).
    pub fn new(dataset: &Dataset, spec: EpisodeSpec, seed: u64) -> Result<Self, EpisodeError> {
        dataset.check_spec(&spec)?;
        Ok(Self {
            class_sizes: dataset.classes.iter().map(|c| c.items.len()).collect(),
            spec,
            seed,
        })
    }

    pub fn spec(&self) -> EpisodeSpec {
        self.spec
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The classes are the first N of a uniform random permutation of the class indices; within
    /// each class, K + M images without replacement in random order.
    pub fn plan(&self, episode: u64) -> EpisodePlan {
        let mut rng = stream(self.seed, &[tag::EPISODE, episode]);
        let classes = index::sample(&mut rng, self.class_sizes.len(), self.spec.n_way).into_vec();
        let items = classes
            .iter()
            .map(|&c| {
                index::sample(&mut rng, self.class_sizes[c], self.spec.images_per_class())
                    .into_vec()
            })
            .collect();
        EpisodePlan { classes, items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Class, Item};
    use std::collections::HashSet;

    fn dataset(sizes: &[usize]) -> Dataset {
        Dataset {
            name: "toy".into(),
            source: "toy".into(),
            classes: sizes
                .iter()
                .enumerate()
                .map(|(c, &n)| Class {
                    name: format!("c{c}"),
                    items: (0..n).map(|i| Item::File(format!("{c}/{i}").into())).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn plans_have_distinct_classes_and_images_without_replacement() {
        let data = dataset(&[7, 8, 9, 7, 10, 7, 12]);
        let spec = EpisodeSpec { n_way: 5, k_shot: 2, n_query: 5 };
        let sampler = EpisodeSampler::new(&data, spec, 3).unwrap();
        let mut class_counts = [0usize; 7];
        for i in 0..400 {
            let plan = sampler.plan(i);
            assert_eq!(plan.classes.len(), 5);
            assert_eq!(plan.classes.iter().collect::<HashSet<_>>().len(), 5);
            for (&c, items) in plan.classes.iter().zip(&plan.items) {
                class_counts[c] += 1;
                assert_eq!(items.len(), 7);
                assert_eq!(items.iter().collect::<HashSet<_>>().len(), 7);
                assert!(items.iter().all(|&i| i < data.classes[c].items.len()));
            }
        }
        // Uniform class choice: each class is picked 400 · 5/7 ≈ 286 times.
        for (c, &n) in class_counts.iter().enumerate() {
            assert!((230..340).contains(&n), "class {c} drawn {n} times");
        }
    }

    #[test]
    fn plans_depend_only_on_seed_and_index() {
        let data = dataset(&[30; 20]);
        let spec = EpisodeSpec::default();
        let a = EpisodeSampler::new(&data, spec, 11).unwrap();
        let b = EpisodeSampler::new(&data, spec, 11).unwrap();
        let c = EpisodeSampler::new(&data, spec, 12).unwrap();
        assert_eq!(a.plan(5), b.plan(5));
        assert_ne!(a.plan(5), a.plan(6));
        assert_ne!(a.plan(5), c.plan(5));
        // Order of requests does not matter.
        let later = a.plan(1000);
        assert_eq!(b.plan(1000), later);
    }

    #[test]
    fn zero_way_or_shot_is_rejected() {
        let data = dataset(&[30; 20]);
        let err = EpisodeSampler::new(&data, EpisodeSpec { n_way: 0, k_shot: 1, n_query: 1 }, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_way") && err.contains("fix"), "{err}");
        let err = EpisodeSampler::new(&data, EpisodeSpec { n_way: 2, k_shot: 0, n_query: 1 }, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("k_shot"), "{err}");
    }
}
