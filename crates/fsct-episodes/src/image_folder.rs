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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{save, solid};

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("dog", 3), ("cat", 2), ("emu", 4)] {
            for i in 0..n {
                let ext = if i % 2 == 0 { "png" } else { "JPG" };
                save(dir.path(), &format!("{class}/{i}.{ext}"), &solid(5, 7, [i as u8 * 9; 3]));
            }
        }
        std::fs::write(dir.path().join("cat/notes.txt"), "not an image").unwrap();
        std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        dir
    }

    #[test]
    fn all_subfolders_sorted_and_only_images() {
        let dir = folder();
        let data = Dataset::open_folder(dir.path(), None).unwrap();
        let names: Vec<&str> = data.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cat", "dog", "emu"]);
        assert_eq!(data.num_images(), 9);
        assert_eq!(data.classes[1].items[1], Item::File(dir.path().join("dog/1.JPG")));
        assert_eq!(data.load(2, 2).unwrap().get_pixel(0, 0).0, [18; 3]);
    }

    #[test]
    fn class_list_keeps_its_order() {
        let dir = folder();
        let list = ["emu".to_string(), "cat".to_string()];
        let data = Dataset::open_folder(dir.path(), Some(&list)).unwrap();
        assert_eq!(data.classes.len(), 2);
        assert_eq!(data.classes[0].name, "emu");
        assert_eq!(data.classes[1].items.len(), 2);
    }

    #[test]
    fn missing_or_repeated_class_folder_is_an_error() {
        let dir = folder();
        let list = ["cat".to_string(), "yak".to_string()];
        let err = Dataset::open_folder(dir.path(), Some(&list)).unwrap_err().to_string();
        assert!(err.contains("class folder `yak` does not exist"), "{err}");
        let list = ["cat".to_string(), "cat".to_string()];
        let err = Dataset::open_folder(dir.path(), Some(&list)).unwrap_err().to_string();
        assert!(err.contains("`cat` is listed twice"), "{err}");
        let err = Dataset::open_folder(&dir.path().join("cat"), None).unwrap_err().to_string();
        assert!(err.contains("no class folders found"), "{err}");
        let err = Dataset::open_folder(&dir.path().join("nowhere"), None).unwrap_err().to_string();
        assert!(err.contains("nowhere: cannot read the image directory"), "{err}");
    }

    #[test]
    fn split_by_class_lists_rejects_a_class_in_two_splits() {
        let dir = folder();
        let lists = ClassLists {
            base: vec!["cat".into(), "dog".into()],
            val: vec!["emu".into()],
            novel: vec!["dog".into()],
        };
        let err = open_image_folder_lists(dir.path(), &lists, &OpenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dog` is listed in more than one split (base and novel)"), "{err}");
        let lists = ClassLists { novel: vec![], ..lists };
        let splits = open_image_folder_lists(dir.path(), &lists, &OpenOptions::default()).unwrap();
        assert_eq!(splits.base.num_classes(), 2);
        assert_eq!(splits.val.classes[0].name, "emu");
    }
}
