//! Image folders: `root/<class>/<image>`, with the split given either as three roots or as
//! three lists of class names under one root.
//!
//! Images are the files with an extension in [`IMAGE_EXTENSIONS`] (sorted by name); hidden
//! files and folders (starting with `.`) are skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::EpisodeError;
use crate::split::{Class, Dataset, Item, OpenOptions, Splits};

/// File extensions (case-insensitive) taken as images; other files are ignored.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

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
    let mut class_dirs: Vec<PathBuf> = read_dir(root)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    class_dirs.sort();
    let classes = class_dirs
        .iter()
        .map(|dir| class_from_dir(dir))
        .collect::<Result<Vec<_>, _>>()?;
    if classes.is_empty() {
        return Err(EpisodeError::NoClasses {
            path: root.to_path_buf(),
        });
    }
    let split = Dataset {
        name: name.to_string(),
        source: root.to_path_buf(),
        classes,
    };
    split.verify_files(options)?;
    Ok(split)
}

/// Opens a dataset whose splits are three folders of class folders.
pub fn open_image_folders(
    base: impl AsRef<Path>,
    val: impl AsRef<Path>,
    novel: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    Ok(Splits {
        base: open_image_folder_split(base, "base", options)?,
        val: open_image_folder_split(val, "val", options)?,
        novel: open_image_folder_split(novel, "novel", options)?,
    })
}

/// Opens a dataset whose classes all live under `root`, split by the given class lists. Each split
/// keeps the order of its list; a class may belong to one split only.
pub fn open_image_folder_lists(
    root: impl AsRef<Path>,
    lists: &ClassLists,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    let root = root.as_ref();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (split, names) in [("base", &lists.base), ("val", &lists.val), ("novel", &lists.novel)] {
        for class in names {
            if let Some(first) = seen.insert(class.as_str(), split) {
                return Err(EpisodeError::ClassInTwoSplits {
                    path: root.to_path_buf(),
                    class: class.clone(),
                    first: first.to_string(),
                    second: split.to_string(),
                });
            }
        }
    }
    Ok(Splits {
        base: open_image_folder_classes(root, "base", &lists.base, options)?,
        val: open_image_folder_classes(root, "val", &lists.val, options)?,
        novel: open_image_folder_classes(root, "novel", &lists.novel, options)?,
    })
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
    let mut seen = std::collections::HashSet::new();
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
                return Err(EpisodeError::MissingClassFolder {
                    path: dir,
                    class: class.clone(),
                });
            }
            class_from_dir(&dir)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let split = Dataset {
        name: name.to_string(),
        source: root.to_path_buf(),
        classes,
    };
    split.verify_files(options)?;
    Ok(split)
}

impl Dataset {
    /// Reads `root/<class>/<image>`: with `classes = None` every sub-folder of `root` is a class
    /// (sorted by name); otherwise the listed class folders, in list order. Every image must
    /// exist and have a readable header. The dataset is named after `root`'s last component.
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

fn class_from_dir(dir: &Path) -> Result<Class, EpisodeError> {
    let mut files: Vec<PathBuf> = read_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file() && !is_hidden(p) && has_image_extension(p))
        .collect();
    files.sort();
    Ok(Class {
        name: dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        items: files.into_iter().map(Item::File).collect(),
    })
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, EpisodeError> {
    let err = |source| EpisodeError::DirRead {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(err)?
        .map(|entry| entry.map(|e| e.path()).map_err(err))
        .collect()
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().is_some_and(|e| {
        let e = e.to_string_lossy();
        IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x))
    })
}
