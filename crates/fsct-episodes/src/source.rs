//! Where a dataset's three splits come from ([`SplitSource`]), and opening them by [`Role`]:
//! each split validated against the episode shape, the three checked to be disjoint. This is
//! what a training run opens; the format openers it calls live with their formats.

use std::path::PathBuf;
use std::sync::Arc;

use crate::dataset::Dataset;
use crate::error::EpisodeError;
use crate::spec::EpisodeSpec;
use crate::splits::{Role, Splits};
use crate::synthetic::{synthetic_splits, SyntheticConfig};

/// Where the base, val and novel splits of a dataset come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitSource {
    /// The synthetic glyph dataset ([`synthetic_splits`]): no files.
    Synthetic(SyntheticConfig),
    /// One reference JSON split file per role, each opened with [`Dataset::open_json`].
    JsonFiles { base: PathBuf, val: PathBuf, novel: PathBuf },
    /// One folder of class folders per role, each opened with [`Dataset::open_folder`] (so each
    /// split is named after its folder).
    Folders { base: PathBuf, val: PathBuf, novel: PathBuf },
}

impl SplitSource {
    /// Opens the split of `role`, with the files checked as the format's opener does by default
    /// (see [`crate::Verify`]). Opening one split does not compare it with the others: see
    /// [`open_all`](Self::open_all).
    pub fn open(&self, role: Role) -> Result<Arc<Dataset>, EpisodeError> {
        let split = match self {
            // The three splits are numbered together, so one role is cut out of all three.
            Self::Synthetic(config) => return Ok(synthetic_splits(config).get(role).clone()),
            Self::JsonFiles { base, val, novel } => {
                Dataset::open_json(by_role(role, [base, val, novel]))?
            }
            Self::Folders { base, val, novel } => {
                Dataset::open_folder(by_role(role, [base, val, novel]), None)?
            }
        };
        Ok(Arc::new(split))
    }

    /// [`open`](Self::open), then [`Dataset::validate`] against `spec` (too few classes or
    /// images, files gone since, … are reported here).
    pub fn open_validated(
        &self,
        role: Role,
        spec: &EpisodeSpec,
    ) -> Result<Arc<Dataset>, EpisodeError> {
        let split = self.open(role)?;
        split.validate(spec)?;
        Ok(split)
    }

    /// Opens and validates the three splits, in the order of [`Role::ALL`], then checks that no
    /// class (by name) or image (by file) is in two of them ([`crate::check_disjoint`]).
    pub fn open_all(&self, spec: &EpisodeSpec) -> Result<Splits, EpisodeError> {
        let splits = Splits {
            base: self.open_validated(Role::Base, spec)?,
            val: self.open_validated(Role::Val, spec)?,
            novel: self.open_validated(Role::Novel, spec)?,
        };
        splits.check_disjoint()?;
        Ok(splits)
    }
}

/// The one of `[base, val, novel]` that `role` names.
fn by_role<T>(role: Role, [base, val, novel]: [T; 3]) -> T {
    match role {
        Role::Base => base,
        Role::Val => val,
        Role::Novel => novel,
    }
}
