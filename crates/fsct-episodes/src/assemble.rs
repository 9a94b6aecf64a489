//! The last steps of opening a split of files, shared by the JSON and folder formats: repeated
//! files dropped ([`dedup_files`]), what was skipped logged once ([`Skipped`]), files checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::canonical::Canonical;
use crate::dataset::{Class, Dataset, Item};
use crate::error::EpisodeError;
use crate::image_file::{OpenOptions, IMAGE_EXTENSIONS};

/// What opening a split skipped, logged once per split: a warning with the counts and the first
/// few paths of each kind (hidden files, skipped by design, only at debug level).
#[derive(Default, Debug)]
pub(crate) struct Skipped {
    /// Symbolic links whose target does not exist.
    pub dangling: Examples,
    /// Files whose extension is not in [`IMAGE_EXTENSIONS`].
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
                IMAGE_EXTENSIONS.join(", ")
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
