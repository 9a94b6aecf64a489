//! Image files on disk: how thoroughly they are checked when a split is opened ([`Verify`],
//! [`OpenOptions`]), and how an item is decoded ([`Dataset::load`]). Both run the same
//! completeness check ([`check_complete`]), so a truncated file is the same
//! [`EpisodeError::Decode`] however it is reached.

use std::io::{BufReader, Cursor, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::RgbImage;

use crate::dataset::{Dataset, Item};
use crate::error::{more, EpisodeError};
use crate::integrity::check_complete;
use crate::spec::EpisodeSpec;

/// File extensions (case-insensitive) taken as images: every format the crate decodes (JPEG,
/// PNG, WebP, BMP, GIF (its first frame), TIFF). Other files are skipped, counted and logged.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// How thoroughly image files are checked when a dataset is opened.
///
/// Missing files are always an error at open time. Beyond that, the default reads each file's
/// header and checks that the file is complete (a JPEG must end with its end-of-image marker, a
/// PNG with `IEND`, …; see the crate docs), which catches files that are not images and files cut
/// short, for the price of reading the header and the last few KiB of each. A full decode also
/// catches corrupt pixel data but reads every byte of the dataset, so it is opt-in.
/// A file that fails later still gives [`EpisodeError::Decode`] (naming the file) from the
/// loader, which runs the same completeness check before decoding: never a panic, never an image
/// half filled in by the decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Only check that each listed file exists.
    Exists,
    /// Also read each file's header (format and dimensions) and check that it is complete.
    #[default]
    Header,
    /// Also decode every image completely.
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
    /// Checks that episodes of `spec` can be drawn: `n_way` at most the number of classes, at
    /// least `k_shot + n_query` images in every class, and every listed file still exists.
    pub fn validate(&self, spec: &EpisodeSpec) -> Result<(), EpisodeError> {
        self.check_spec(spec)?;
        self.verify_files(&OpenOptions { verify: Verify::Exists, threads: 1 })
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
            let more = more(missing.len(), "missing files");
            if let Ok(target) = std::fs::read_link(first) {
                return Err(EpisodeError::DanglingLink {
                    path: first.to_path_buf(),
                    target,
                    listed_in: self.source.clone(),
                    more,
                });
            }
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
                        paths.iter().find_map(|p| {
                            // A panicking decoder is a decode failure of its file, not a panic.
                            let checked = catch_unwind(AssertUnwindSafe(|| check_image(p, full)))
                                .unwrap_or_else(|_| Err("the decoder panicked".to_string()));
                            checked.err().map(|e| (p.to_path_buf(), e))
                        })
                    })
                })
                .collect();
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

/// Checks one file: complete ([`check_complete`]), then its header or a full decode.
fn check_image(path: &Path, full: bool) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    check_complete(&mut file, len)?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let reader = image::ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if full {
        reader.decode().map(|_| ()).map_err(|e| e.to_string())
    } else {
        reader.into_dimensions().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Decodes one item as 8-bit RGB. A file is read once, checked for completeness as at open time,
/// then decoded, so a truncated file is an [`EpisodeError::Decode`] however it is reached.
pub(crate) fn load_item(item: &Item, listed_in: &Path) -> Result<RgbImage, EpisodeError> {
    match item {
        Item::Synthetic(id) => Ok(id.render()),
        Item::File(path) => {
            let fail = |e: &dyn std::fmt::Display| {
                EpisodeError::decode(path.clone(), listed_in.to_path_buf(), e)
            };
            let bytes = std::fs::read(path).map_err(|e| fail(&e))?;
            check_complete(&mut Cursor::new(&bytes), bytes.len() as u64).map_err(|e| fail(&e))?;
            let decode = || {
                image::ImageReader::new(Cursor::new(&bytes))
                    .with_guessed_format()
                    .map_err(|e| fail(&e))?
                    .decode()
                    .map_err(|e| fail(&e))
            };
            // A panicking decoder is a decode failure of this file, not a lost worker.
            let image = catch_unwind(AssertUnwindSafe(decode))
                .unwrap_or_else(|_| Err(fail(&"the decoder panicked")))?;
            Ok(image.into_rgb8())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{cut_in_half, noisy, save, solid, ALL_EXTENSIONS};

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
    fn truncated_images_are_caught_by_every_check_and_by_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "a/0.png", &solid(64, 64, [9; 3]));
        cut_in_half(&path);
        let exists = OpenOptions { verify: Verify::Exists, threads: 1 };
        let data = crate::open_image_folder_split(dir.path(), "base", &exists).unwrap();
        for verify in [Verify::Header, Verify::Decode] {
            let err =
                data.verify_files(&OpenOptions { verify, threads: 2 }).unwrap_err().to_string();
            assert!(err.contains("0.png: cannot decode image: the file is truncated"), "{err}");
        }
        // Loading it later is the same typed error, not a panic.
        let err = data.load(0, 0).unwrap_err().to_string();
        assert!(err.contains("0.png: cannot decode image: the file is truncated"), "{err}");
    }

    /// Every format, cut in half: the default open fails naming the file, and so does loading a
    /// split opened without checks. A JPEG is the case decoders miss.
    #[test]
    fn every_format_cut_in_half_is_an_error_naming_the_file() {
        for ext in ALL_EXTENSIONS {
            let dir = tempfile::tempdir().unwrap();
            save(dir.path(), &format!("a/0.{ext}"), &noisy(40, 30));
            let path = save(dir.path(), &format!("a/1.{ext}"), &noisy(40, 30));
            Dataset::open_folder(dir.path(), None).unwrap_or_else(|e| panic!("{ext}: {e}"));
            cut_in_half(&path);
            let err = Dataset::open_folder(dir.path(), None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("1.{ext}: cannot decode image: the file is truncated")),
                "{ext}: {err}"
            );
            let exists = OpenOptions { verify: Verify::Exists, threads: 1 };
            let data = crate::open_image_folder_split(dir.path(), "base", &exists).unwrap();
            data.load(0, 0).unwrap();
            let err = data.load(0, 1).unwrap_err().to_string();
            assert!(
                err.contains(&format!("1.{ext}: cannot decode image: the file is truncated")),
                "{ext}: {err}"
            );
        }
    }

    #[test]
    fn a_jpeg_cut_in_half_is_refused_although_the_decoder_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "a/photo.jpg", &noisy(64, 64));
        cut_in_half(&path);
        assert!(image::open(&path).is_ok(), "the image crate fills in the missing half");
        let err = Dataset::open_folder(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("photo.jpg: cannot decode image: the file is truncated"), "{err}");
        assert!(err.contains("end-of-image marker"), "{err}");
        // A complete JPEG with bytes after its end (padding, a trailer) is fine.
        let path = save(dir.path(), "a/photo.jpg", &noisy(64, 64));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(&path, bytes).unwrap();
        Dataset::open_folder(dir.path(), None).unwrap().load(0, 0).unwrap();
    }
}
