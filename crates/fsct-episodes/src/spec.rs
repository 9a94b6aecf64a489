//! The shape of an episode: N-way, K-shot, M-query ([`EpisodeSpec`]).

use crate::error::EpisodeError;

/// N-way, K-shot, M-query: the shape of one episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeSpec {
    /// N, the number of classes per episode.
    pub n_way: usize,
    /// K, support images per class.
    pub k_shot: usize,
    /// M, query images per class.
    pub n_query: usize,
}

impl Default for EpisodeSpec {
    /// 5-way 5-shot 16-query, the reference's default.
    fn default() -> Self {
        Self { n_way: 5, k_shot: 5, n_query: 16 }
    }
}

impl EpisodeSpec {
    /// K + M.
    pub fn images_per_class(&self) -> usize {
        self.k_shot + self.n_query
    }

    /// N · (K + M).
    pub fn images(&self) -> usize {
        self.n_way * self.images_per_class()
    }

    /// Rejects shapes no dataset can serve (N = 0 or K = 0).
    pub fn check(&self) -> Result<(), EpisodeError> {
        let zero =
            |field| EpisodeError::Config { field, problem: "is 0".into(), fix: "use at least 1" };
        if self.n_way == 0 {
            return Err(zero("n_way"));
        }
        if self.k_shot == 0 {
            return Err(zero("k_shot"));
        }
        Ok(())
    }
}
