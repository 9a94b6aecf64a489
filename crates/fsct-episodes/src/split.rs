//! The common representation of every dataset format: a dataset (one split) is a list of
//! classes, each a list of items (an image file or a synthetic glyph).

use std::collections::HashMap;
use std::io::{BufReader, Cursor, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use image::RgbImage;

use crate::error::EpisodeError;
use crate::integrity::check_complete;
use crate::sampler::EpisodeSpec;
use crate::synthetic::GlyphId;

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

impl Splits {
    /// [`check_disjoint`] over the three splits.
    pub fn check_disjoint(&self) -> Result<(), EpisodeError> {
        check_disjoint(&[&self.base, &self.val, &self.novel])
    }
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
        self.verify_files(&OpenOptions { verify: Verify::Exists, threads: 1 })
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

/// Fails when two of `splits` share a class name, a split file, or an image: training
/// and testing on the same class or image would measure nothing. Files are compared by their
/// canonical paths (symbolic links, `..` and different spellings of one path are the same file;
/// a file that does not exist is compared by its absolute, lexically cleaned path). Synthetic
/// glyphs are compared by (seed, class, instance). The error names the class or file, both
/// splits and their sources, and how many more are shared.
///
/// [`open_json_splits`](crate::open_json_splits), [`open_image_folders`](crate::open_image_folders)
/// and [`open_image_folder_lists`](crate::open_image_folder_lists) call it; call it yourself on
/// splits opened one by one ([`Dataset::open_json`], [`Dataset::open_folder`]).
pub fn check_disjoint(splits: &[&Dataset]) -> Result<(), EpisodeError> {
    let mut canonical = Canonical::default();
    // The same split file read twice.
    let mut sources: HashMap<PathBuf, usize> = HashMap::new();
    for (s, split) in splits.iter().enumerate() {
        // Split files only: splits chosen by class lists share their root folder.
        if !split.source.is_file() {
            continue;
        }
        let key = canonical.of(&split.source);
        if let Some(&first) = sources.get(&key) {
            return Err(EpisodeError::SplitsShareFile {
                path: split.source.clone(),
                first: splits[first].name.clone(),
                second: split.name.clone(),
            });
        }
        sources.insert(key, s);
    }

    // Class names.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut shared: Vec<(&str, usize, usize)> = Vec::new();
    for (s, split) in splits.iter().enumerate() {
        for class in &split.classes {
            match names.get(class.name.as_str()) {
                Some(&first) if first != s => shared.push((&class.name, first, s)),
                Some(_) => {}
                None => {
                    names.insert(&class.name, s);
                }
            }
        }
    }
    if let Some(&(class, first, second)) = shared.first() {
        let describe = |split: &Dataset| format!("`{}` ({})", split.name, split.source.display());
        return Err(EpisodeError::SplitsShareClass {
            class: class.to_string(),
            first: describe(splits[first]),
            second: describe(splits[second]),
            more: more(shared.len(), "shared classes"),
        });
    }

    // Images.
    #[derive(PartialEq, Eq, Hash)]
    enum Key {
        File(PathBuf),
        Glyph(u64, u32, u32),
    }
    let mut seen: HashMap<Key, (usize, usize, usize)> = HashMap::new();
    let mut first_shared = None;
    let mut count = 0;
    for (s, split) in splits.iter().enumerate() {
        for (c, class) in split.classes.iter().enumerate() {
            for (i, item) in class.items.iter().enumerate() {
                let key = match item {
                    Item::File(path) => Key::File(canonical.of(path)),
                    Item::Synthetic(g) => Key::Glyph(g.seed, g.class, g.instance),
                };
                match seen.get(&key) {
                    Some(&(s0, c0, i0)) if s0 != s => {
                        count += 1;
                        first_shared.get_or_insert(((s0, c0, i0), (s, c, i)));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(key, (s, c, i));
                    }
                }
            }
        }
    }
    if let Some(((s0, c0, i0), (s, c, i))) = first_shared {
        let describe = |item: &Item| match item {
            Item::File(path) => path.clone(),
            Item::Synthetic(g) => format!("glyph {}/{}", g.class, g.instance).into(),
        };
        let split = |split: &Dataset, class: usize| {
            let class = &split.classes[class].name;
            format!("`{}` (class `{class}`, {})", split.name, split.source.display())
        };
        let (a, b) = (splits[s0], splits[s]);
        return Err(EpisodeError::SplitsShareImage {
            path: describe(&b.classes[c].items[i]),
            second: split(b, c),
            first_path: describe(&a.classes[c0].items[i0]),
            first: split(a, c0),
            more: more(count, "shared images"),
        });
    }
    Ok(())
}

/// ", and N more <what>" for a count of problems of which the first is named.
pub(crate) fn more(count: usize, what: &str) -> String {
    match count {
        0 | 1 => String::new(),
        n => format!(", and {} more {what}", n - 1),
    }
}

/// Canonical paths, with the canonical form of each folder cached: one `lstat` per file that is
/// not a symbolic link.
#[derive(Default)]
pub(crate) struct Canonical {
    dirs: HashMap<PathBuf, PathBuf>,
}

impl Canonical {
    /// The canonical path of `path`, or its absolute, lexically cleaned form when it (or its
    /// folder) does not exist.
    pub(crate) fn of(&mut self, path: &Path) -> PathBuf {
        let plain = std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink());
        if let (true, Some(name)) = (plain, path.file_name()) {
            let parent =
                path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Some(dir) = self.dirs.get(parent) {
                return dir.join(name);
            }
            if let Ok(dir) = std::fs::canonicalize(parent) {
                self.dirs.insert(parent.to_path_buf(), dir.clone());
                return dir.join(name);
            }
        }
        std::fs::canonicalize(path).unwrap_or_else(|_| lexical(path))
    }
}

/// `path` made absolute, with `.` and `..` resolved lexically.
fn lexical(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What opening a split skipped, logged once per split: a warning with the counts and the first
/// few paths of each kind (hidden files, skipped by design, only at debug level).
#[derive(Default, Debug)]
pub(crate) struct Skipped {
    /// Symbolic links whose target does not exist.
    pub dangling: Examples,
    /// Files whose extension is not in [`crate::IMAGE_EXTENSIONS`].
    pub extension: Examples,
    /// Folders inside a class folder.
    pub folders: Examples,
    /// Files next to the class folders, in the split's root.
    pub outside: Examples,
    /// Repeated entries of the same file in one class.
    pub duplicates: Examples,
    /// Names starting with `.`.
    pub hidden: Examples,
}

/// A count and the first few paths.
#[derive(Default, Debug)]
pub(crate) struct Examples {
    pub count: usize,
    pub first: Vec<PathBuf>,
}

impl Examples {
    const KEEP: usize = 3;

    pub(crate) fn add(&mut self, path: &Path) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(path.to_path_buf());
        }
    }

    fn describe(&self, what: &str) -> Option<String> {
        (self.count > 0).then(|| {
            let names: Vec<String> = self.first.iter().map(|p| p.display().to_string()).collect();
            let etc = if self.count > self.first.len() { ", …" } else { "" };
            format!("{} {what} (e.g. {}{etc})", self.count, names.join(", "))
        })
    }
}

impl Skipped {
    /// One warning for the split if anything was skipped (a debug line for hidden files).
    pub(crate) fn log(&self, split: &str, source: &Path) {
        if let Some(hidden) = self.hidden.describe("hidden files or folders") {
            tracing::debug!(split, source = %source.display(), "split `{split}` skipped {hidden}");
        }
        let parts: Vec<String> = [
            self.dangling.describe("dangling symbolic links"),
            self.extension.describe(&format!(
                "files whose extension is not an image's ({})",
                crate::IMAGE_EXTENSIONS.join(", ")
            )),
            self.folders.describe("folders inside class folders"),
            self.outside.describe("files outside the class folders"),
            self.duplicates.describe("repeated entries of a file already in its class"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !parts.is_empty() {
            tracing::warn!(
                split,
                source = %source.display(),
                dangling = self.dangling.count,
                other_extension = self.extension.count,
                folders = self.folders.count,
                outside = self.outside.count,
                duplicates = self.duplicates.count,
                "{}: split `{split}` skipped {}",
                source.display(),
                parts.join("; ")
            );
        }
    }
}

/// The last steps of opening a split of files, whatever the format: drops repeated files
/// ([`dedup_files`]), logs what was skipped, and checks the files as `options.verify` asks.
pub(crate) fn assemble(
    name: &str,
    source: &Path,
    mut classes: Vec<Class>,
    mut skipped: Skipped,
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    dedup_files(&mut classes, source, &mut Canonical::default(), &mut skipped)?;
    skipped.log(name, source);
    let split = Dataset { name: name.to_string(), source: source.to_path_buf(), classes };
    split.verify_files(options)?;
    Ok(split)
}

/// Drops repeated entries of a file within a class (counted in `skipped`) and fails when a file
/// is in two classes. Files are compared by their canonical paths.
pub(crate) fn dedup_files(
    classes: &mut [Class],
    listed_in: &Path,
    canonical: &mut Canonical,
    skipped: &mut Skipped,
) -> Result<(), EpisodeError> {
    let mut owner: HashMap<PathBuf, usize> = HashMap::new();
    for c in 0..classes.len() {
        let items = std::mem::take(&mut classes[c].items);
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            if let Item::File(path) = &item {
                let key = canonical.of(path);
                match owner.get(&key) {
                    Some(&first) if first == c => {
                        skipped.duplicates.add(path);
                        continue;
                    }
                    Some(&first) => {
                        return Err(EpisodeError::FileInTwoClasses {
                            path: path.clone(),
                            listed_in: listed_in.to_path_buf(),
                            first: classes[first].name.clone(),
                            second: classes[c].name.clone(),
                        });
                    }
                    None => {
                        owner.insert(key, c);
                    }
                }
            }
            kept.push(item);
        }
        classes[c].items = kept;
    }
    Ok(())
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

    fn file_split(name: &str, classes: &[(&str, Vec<PathBuf>)]) -> Dataset {
        Dataset {
            name: name.into(),
            source: format!("/data/{name}").into(),
            classes: classes
                .iter()
                .map(|(class, files)| Class {
                    name: class.to_string(),
                    items: files.iter().cloned().map(Item::File).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn synthetic_splits_are_disjoint() {
        let splits = crate::synthetic_splits(&crate::SyntheticConfig::default());
        splits.check_disjoint().unwrap();
        check_disjoint(&[&splits.base, &splits.val, &splits.novel]).unwrap();
        // The same synthetic split twice shares everything.
        let err = check_disjoint(&[&splits.base, &splits.base]).unwrap_err().to_string();
        assert!(err.contains("class `glyph_000` is in two splits"), "{err}");
        assert!(err.contains("and 63 more shared classes"), "{err}");
    }

    #[test]
    fn splits_sharing_a_class_name_are_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let a = save(dir.path(), "a.png", &solid(4, 4, [0; 3]));
        let b = save(dir.path(), "b.png", &solid(4, 4, [0; 3]));
        let base = file_split(
            "base",
            &[("dog", vec![a.clone()]), ("cat", vec![a.with_file_name("x.png")])],
        );
        let novel = file_split(
            "novel",
            &[("emu", vec![b.clone()]), ("dog", vec![b.with_file_name("y.png")])],
        );
        let err = check_disjoint(&[&base, &novel]).unwrap_err().to_string();
        assert!(
            err.contains(
                "class `dog` is in two splits: `base` (/data/base) and `novel` (/data/novel)"
            ),
            "{err}"
        );
        assert!(err.contains("fix: each class must belong to one split"), "{err}");
        assert!(!err.contains("more shared"), "{err}");
    }

    #[test]
    fn splits_sharing_an_image_file_are_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = save(dir.path(), "imgs/a.png", &solid(4, 4, [0; 3]));
        save(dir.path(), "imgs/b.png", &solid(4, 4, [0; 3]));
        // Another spelling of the same path, and a symbolic link to it.
        let dotted = dir.path().join("imgs/../imgs/./a.png");
        let base = file_split("base", &[("dog", vec![a.clone()])]);
        let val = file_split("val", &[("cat", vec![dir.path().join("imgs/b.png")])]);
        let novel = file_split("novel", &[("emu", vec![dotted.clone()])]);
        check_disjoint(&[&base, &val]).unwrap();
        let err = check_disjoint(&[&base, &val, &novel]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: the same image is in split `novel` (class `emu`",
                dotted.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("split `base` (class `dog`, /data/base), as {}", a.display())),
            "{err}"
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("link.png");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            let novel = file_split("novel", &[("emu", vec![link])]);
            let err = check_disjoint(&[&base, &novel]).unwrap_err().to_string();
            assert!(err.contains("link.png: the same image is in split `novel`"), "{err}");
        }
        // A missing file is compared by its cleaned path.
        let gone = file_split("val", &[("cat", vec![dir.path().join("gone/../gone.png")])]);
        let gone2 = file_split("novel", &[("emu", vec![dir.path().join("gone.png")])]);
        let err = check_disjoint(&[&gone, &gone2]).unwrap_err().to_string();
        assert!(err.contains("gone.png: the same image is in split `novel`"), "{err}");
    }
}
