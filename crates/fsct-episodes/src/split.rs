//! The common representation of every dataset format: a dataset (one split) is a list of
//! classes, each a list of items (an image file or a synthetic glyph).

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::EpisodeError;
use crate::sampler::EpisodeSpec;
use crate::synthetic::GlyphId;

/// Where one image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An image file (JPEG or PNG; the format is guessed from the content, not the extension).
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

/// The three splits of a few-shot dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// Training classes.
    pub base: Dataset,
    /// Validation classes.
    pub val: Dataset,
    /// Test classes.
    pub novel: Dataset,
}

/// How thoroughly image files are checked when a dataset is opened.
///
/// Missing files are always an error at open time. Beyond that, checking headers catches files
/// that are not images at all for the price of reading a few bytes each; a full decode also
/// catches truncated or corrupt pixel data but reads every byte of the dataset, so it is opt-in.
/// A file that fails to decode later still gives [`EpisodeError::Decode`] (naming the file) from
/// the loader, never a panic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Only check that each listed file exists.
    Exists,
    /// Also read each file's header (format and dimensions).
    #[default]
    Header,
    /// Decode every image completely.
    Decode,
}

/// Options for opening file-based datasets.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    pub verify: Verify,
    /// Threads for the verification pass; 0 = all available cores.
    pub threads: usize,
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

    /// Checks that episodes of `spec` can be drawn: `n_way` at most the number of classes, at
    /// least `k_shot + n_query` images in every class, and every listed file still exists.
    pub fn validate(&self, spec: &EpisodeSpec) -> Result<(), EpisodeError> {
        self.check_spec(spec)?;
        self.verify_files(&OpenOptions {
            verify: Verify::Exists,
            threads: 1,
        })
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

    /// Decodes one image as 8-bit RGB (grayscale and alpha images are converted).
    pub fn load(&self, class: usize, item: usize) -> Result<RgbImage, EpisodeError> {
        load_item(&self.classes[class].items[item], &self.source)
    }

    /// Checks the files of this split as `options.verify` asks (see [`Verify`]).
    pub fn verify_files(&self, options: &OpenOptions) -> Result<(), EpisodeError> {
        let _span = tracing::debug_span!("verify_files", split = %self.name).entered();
        let files: Vec<&Path> = self
            .classes
            .iter()
            .flat_map(|c| c.items.iter())
            .filter_map(|item| match item {
                Item::File(p) => Some(p.as_path()),
                Item::Synthetic(_) => None,
            })
            .collect();

        let missing: Vec<&Path> = files.iter().copied().filter(|p| !p.is_file()).collect();
        if let Some(first) = missing.first() {
            let more = match missing.len() {
                1 => String::new(),
                n => format!(", and {} more missing files", n - 1),
            };
            return Err(EpisodeError::MissingFile {
                path: first.to_path_buf(),
                listed_in: self.source.clone(),
                more,
            });
        }
        if options.verify == Verify::Exists || files.is_empty() {
            return Ok(());
        }

        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let chunk = files.len().div_ceil(threads);
        let full = options.verify == Verify::Decode;
        let first_error = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|paths| {
                    scope.spawn(move || {
                        paths
                            .iter()
                            .find_map(|p| check_image(p, full).err().map(|e| (p.to_path_buf(), e)))
                    })
                })
                .collect();
            // A panicking decoder is reported as a decode failure of its chunk rather than
            // propagated, to keep the no-panic promise.
            handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(r) => r,
                    Err(_) => Some((self.source.clone(), "decoder panicked".to_string())),
                })
                .next()
        });
        match first_error {
            Some((path, reason)) => Err(EpisodeError::decode(path, self.source.clone(), reason)),
            None => Ok(()),
        }
    }
}

fn check_image(path: &Path, full: bool) -> Result<(), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if full {
        reader.decode().map(|_| ()).map_err(|e| e.to_string())
    } else {
        reader.into_dimensions().map(|_| ()).map_err(|e| e.to_string())
    }
}

pub(crate) fn load_item(item: &Item, listed_in: &Path) -> Result<RgbImage, EpisodeError> {
    match item {
        Item::Synthetic(id) => Ok(id.render()),
        Item::File(path) => {
            let fail = |e: &dyn std::fmt::Display| {
                EpisodeError::decode(path.clone(), listed_in.to_path_buf(), e)
            };
            let image = image::ImageReader::open(path)
                .map_err(|e| fail(&e))?
                .with_guessed_format()
                .map_err(|e| fail(&e))?
                .decode()
                .map_err(|e| fail(&e))?;
            Ok(image.into_rgb8())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{save, solid};

    fn two_class_folder() -> (tempfile::TempDir, Dataset) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6 {
            save(dir.path(), &format!("a/{i}.png"), &solid(4, 4, [0; 3]));
        }
        for i in 0..3 {
            save(dir.path(), &format!("b/{i}.png"), &solid(4, 4, [0; 3]));
        }
        let data = Dataset::open_folder(dir.path(), None).unwrap();
        (dir, data)
    }

    #[test]
    fn datasets_and_loaders_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Dataset>();
        send_sync::<crate::Splits>();
        send::<crate::EpisodeLoader>();
        send::<crate::Episode>();
    }

    #[test]
    fn validate_checks_way_and_images_per_class() {
        let (_dir, data) = two_class_folder();
        data.validate(&EpisodeSpec { n_way: 2, k_shot: 1, n_query: 2 }).unwrap();
        let err = data
            .validate(&EpisodeSpec { n_way: 3, k_shot: 1, n_query: 1 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 2 classes but n_way = 3"), "{err}");
        assert!(err.contains("lower n_way to at most 2"), "{err}");
        let err = data
            .validate(&EpisodeSpec { n_way: 2, k_shot: 1, n_query: 3 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("class `b`"), "{err}");
        assert!(err.contains("has 3 images but an episode needs k_shot + n_query = 4"), "{err}");
        assert!(err.contains("lower k_shot or n_query"), "{err}");
    }

    #[test]
    fn validate_notices_files_deleted_after_opening() {
        let (dir, data) = two_class_folder();
        std::fs::remove_file(dir.path().join("a/3.png")).unwrap();
        let err = data
            .validate(&EpisodeSpec { n_way: 2, k_shot: 1, n_query: 1 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("3.png: image does not exist"), "{err}");
    }

    #[test]
    fn full_decode_catches_truncated_images_that_headers_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "a/0.png", &solid(64, 64, [9; 3]));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let data = Dataset::open_folder(dir.path(), None).unwrap();
        let decode = OpenOptions { verify: Verify::Decode, threads: 2 };
        let err = data.verify_files(&decode).unwrap_err().to_string();
        assert!(err.contains("0.png: cannot decode image"), "{err}");
        // Loading it later is the same typed error, not a panic.
        let err = data.load(0, 0).unwrap_err().to_string();
        assert!(err.contains("0.png: cannot decode image"), "{err}");
    }
}
