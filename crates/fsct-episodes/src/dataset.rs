//! The common representation of every dataset format: a dataset (one split) is a list of
//! classes, each a list of items (an image file or a synthetic glyph). Opening one is the
//! formats' business ([`crate::open_json_split`], [`crate::open_image_folder_split`],
//! [`crate::synthetic_splits`]); checking and decoding its files is the `image_file` module's.

use std::path::PathBuf;

use crate::error::EpisodeError;
use crate::glyph::GlyphId;
use crate::spec::EpisodeSpec;

/// Where one image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An image file (JPEG, PNG, WebP, BMP, GIF or TIFF; the format is guessed from the content,
    /// not the extension).
    File(PathBuf),
    /// A glyph drawn in code by [`crate::SyntheticConfig`].
    Synthetic(GlyphId),
}

/// One class of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// The label as found in the source (a folder name, or the JSON label / `label_names` entry).
    pub name: String,
    pub items: Vec<Item>,
}

/// One split of a few-shot dataset (base, val or novel): the classes episodes are drawn from.
///
/// Open one with [`Dataset::open_json`], [`Dataset::open_folder`] or [`crate::synthetic_splits`].
/// Files are checked when the dataset is opened; [`Dataset::validate`] checks it against an
/// episode shape before training starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// `base`, `val`, `novel`, the file stem of a JSON split or the folder name.
    pub name: String,
    /// The file or folder the dataset was read from; named in error messages.
    pub source: PathBuf,
    pub classes: Vec<Class>,
}

impl Dataset {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    pub fn num_images(&self) -> usize {
        self.classes.iter().map(|c| c.items.len()).sum()
    }

    /// [`validate`](Self::validate) without touching the file system.
    pub(crate) fn check_spec(&self, spec: &EpisodeSpec) -> Result<(), EpisodeError> {
        spec.check()?;
        if spec.n_way > self.classes.len() {
            return Err(EpisodeError::TooFewClasses {
                split: self.name.clone(),
                source_path: self.source.clone(),
                have: self.classes.len(),
                n_way: spec.n_way,
            });
        }
        let need = spec.images_per_class();
        if let Some(class) = self.classes.iter().find(|c| c.items.len() < need) {
            return Err(EpisodeError::TooFewImages {
                split: self.name.clone(),
                source_path: self.source.clone(),
                class: class.name.clone(),
                have: class.items.len(),
                need,
            });
        }
        Ok(())
    }
}
