//! Image folders: `root/<class>/<image>`, with the split given either as three roots or as
//! three lists of class names under one root.
//!
//! Images are the files with an extension in [`IMAGE_EXTENSIONS`] (sorted by name). Everything
//! else is skipped, counted and logged once per split, as a `tracing` warning naming the first
//! few paths of each kind: files with another extension, symbolic links whose target does not
//! exist, folders inside a class folder, files next to the class folders, and a file reached
//! twice in one class through symbolic links. Hidden files and folders (starting with `.`, such
//! as `.DS_Store`) are skipped too, counted at debug level only. A file reached from two classes
//! is an error ([`EpisodeError::FileInTwoClasses`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::assemble::{assemble, Skipped};
use crate::dataset::{Class, Dataset, Item};
use crate::error::EpisodeError;
use crate::image_file::{OpenOptions, IMAGE_EXTENSIONS};
use crate::splits::{check_disjoint, Splits};

/// Class names of each split, for [`open_image_folder_lists`].
#[derive(Clone, Debug, Default)]
pub struct ClassLists {
    pub base: Vec<String>,
    pub val: Vec<String>,
    pub novel: Vec<String>,
}

/// Reads one split from `root`: every sub-folder is a class (sorted by name), its image files
/// (sorted by name, see [`IMAGE_EXTENSIONS`]) are the items.
pub fn open_image_folder_split(
    root: impl AsRef<Path>,
    name: &str,
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    let root = root.as_ref();
    let _span = tracing::info_span!("open_image_folder", root = %root.display()).entered();
    let mut skipped = Skipped::default();
    let mut class_dirs: Vec<PathBuf> = Vec::new();
    for (path, kind) in read_dir(root)? {
        match kind {
            _ if is_hidden(&path) => skipped.hidden.add(&path),
            Kind::Dir => class_dirs.push(path),
            Kind::Dangling => skipped.dangling.add(&path),
            Kind::File | Kind::Other => skipped.outside.add(&path),
        }
    }
    class_dirs.sort();
    let classes = class_dirs
        .iter()
        .map(|dir| class_from_dir(dir, &mut skipped))
        .collect::<Result<Vec<_>, _>>()?;
    if classes.is_empty() {
        return Err(EpisodeError::NoClasses { path: root.to_path_buf() });
    }
    assemble(name, root, classes, skipped, options)
}

/// Opens a dataset whose splits are three folders of class folders, and checks that no class
/// or image is in two of them ([`check_disjoint`]).
pub fn open_image_folders(
    base: impl AsRef<Path>,
    val: impl AsRef<Path>,
    novel: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    let splits = Splits::new(
        open_image_folder_split(base, "base", options)?,
        open_image_folder_split(val, "val", options)?,
        open_image_folder_split(novel, "novel", options)?,
    );
    splits.check_disjoint()?;
    Ok(splits)
}

/// Opens a dataset whose classes all live under `root`, split by the given class lists. Each split
/// keeps the order of its list; a class may belong to one split only, and an image too
/// ([`check_disjoint`]: class folders may share files through symbolic links).
pub fn open_image_folder_lists(
    root: impl AsRef<Path>,
    lists: &ClassLists,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    let root = root.as_ref();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (split, names) in [("base", &lists.base), ("val", &lists.val), ("novel", &lists.novel)] {
        for class in names {
            if let Some(first) = seen.get(class.as_str()).filter(|&&first| first != split) {
                return Err(EpisodeError::ClassInTwoSplits {
                    path: root.to_path_buf(),
                    class: class.clone(),
                    first: first.to_string(),
                    second: split.to_string(),
                });
            }
            seen.insert(class.as_str(), split);
        }
    }
    let splits = Splits::new(
        open_image_folder_classes(root, "base", &lists.base, options)?,
        open_image_folder_classes(root, "val", &lists.val, options)?,
        open_image_folder_classes(root, "novel", &lists.novel, options)?,
    );
    check_disjoint(&[&splits.base, &splits.val, &splits.novel])?;
    Ok(splits)
}

/// One split made of the class folders `root/<class>` for each listed class, in list order.
pub fn open_image_folder_classes(
    root: impl AsRef<Path>,
    name: &str,
    classes: &[String],
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    let root = root.as_ref();
    let _span = tracing::info_span!("open_image_folder", root = %root.display()).entered();
    let mut seen = HashSet::new();
    let mut skipped = Skipped::default();
    let classes = classes
        .iter()
        .map(|class| {
            if !seen.insert(class.as_str()) {
                return Err(EpisodeError::DuplicateClass {
                    path: root.to_path_buf(),
                    class: class.clone(),
                });
            }
            let dir = root.join(class);
            if !dir.is_dir() {
                return Err(EpisodeError::MissingClassFolder { path: dir, class: class.clone() });
            }
            class_from_dir(&dir, &mut skipped)
        })
        .collect::<Result<Vec<_>, _>>()?;
    assemble(name, root, classes, skipped, options)
}

impl Dataset {
    /// Reads `root/<class>/<image>`: with `classes = None` every sub-folder of `root` is a class
    /// (sorted by name); otherwise the listed class folders, in list order. Every image must
    /// exist, have a readable header and be complete. The dataset is named after `root`'s last
    /// component. Opening splits one by one does not compare them: call [`check_disjoint`].
    pub fn open_folder(root: &Path, classes: Option<&[String]>) -> Result<Dataset, EpisodeError> {
        let name = root
            .file_name()
            .map_or_else(|| "images".to_string(), |n| n.to_string_lossy().into_owned());
        let options = OpenOptions::default();
        match classes {
            None => open_image_folder_split(root, &name, &options),
            Some(list) => open_image_folder_classes(root, &name, list, &options),
        }
    }
}

fn class_from_dir(dir: &Path, skipped: &mut Skipped) -> Result<Class, EpisodeError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (path, kind) in read_dir(dir)? {
        match kind {
            _ if is_hidden(&path) => skipped.hidden.add(&path),
            Kind::File if has_image_extension(&path) => files.push(path),
            Kind::File | Kind::Other => skipped.extension.add(&path),
            Kind::Dangling => skipped.dangling.add(&path),
            Kind::Dir => skipped.folders.add(&path),
        }
    }
    files.sort();
    Ok(Class {
        name: dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        items: files.into_iter().map(Item::File).collect(),
    })
}

/// What a directory entry is, symbolic links followed.
enum Kind {
    File,
    Dir,
    /// A symbolic link whose target does not exist (or cannot be reached).
    Dangling,
    /// A socket, a device, …
    Other,
}

fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, Kind)>, EpisodeError> {
    let err = |error| EpisodeError::DirRead { path: dir.to_path_buf(), error };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(err)?;
        let kind = if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(target) if target.is_dir() => Kind::Dir,
                Ok(target) if target.is_file() => Kind::File,
                Ok(_) => Kind::Other,
                Err(_) => Kind::Dangling,
            }
        } else if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        out.push((path, kind));
    }
    Ok(out)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().is_some_and(|e| {
        let e = e.to_string_lossy();
        IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x))
    })
}

#[cfg(test)]
mod tests;
