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

use crate::error::EpisodeError;
use crate::split::{assemble, check_disjoint, Class, Dataset, Item, OpenOptions, Skipped, Splits};

/// File extensions (case-insensitive) taken as images: every format the crate decodes (JPEG,
/// PNG, WebP, BMP, GIF (its first frame), TIFF). Other files are skipped, counted and logged.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

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
    let splits = Splits {
        base: open_image_folder_split(base, "base", options)?,
        val: open_image_folder_split(val, "val", options)?,
        novel: open_image_folder_split(novel, "novel", options)?,
    };
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
    let splits = Splits {
        base: open_image_folder_classes(root, "base", &lists.base, options)?,
        val: open_image_folder_classes(root, "val", &lists.val, options)?,
        novel: open_image_folder_classes(root, "novel", &lists.novel, options)?,
    };
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
mod tests {
    use super::*;
    use crate::test_util::{capture_logs, noisy, save, solid, ALL_EXTENSIONS};

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

    #[test]
    fn every_image_format_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for (i, ext) in ALL_EXTENSIONS.iter().enumerate() {
            save(dir.path(), &format!("c/{i}.{ext}"), &solid(6, 5, [200, 100, 50]));
            save(dir.path(), &format!("d/{i}.{}", ext.to_uppercase()), &noisy(9, 7));
        }
        let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
        assert!(!logs.contains("skipped"), "{logs}");
        assert_eq!(data.classes[0].items.len(), ALL_EXTENSIONS.len());
        assert_eq!(data.classes[1].items.len(), ALL_EXTENSIONS.len());
        for (i, ext) in ALL_EXTENSIONS.iter().enumerate() {
            let image = data.load(0, i).unwrap();
            assert_eq!(image.dimensions(), (6, 5), "{ext}");
            let [r, g, b] = image.get_pixel(3, 2).0;
            assert!(r > 180 && (80..120).contains(&g) && b < 80, "{ext}: {r} {g} {b}");
            assert_eq!(data.load(1, i).unwrap().dimensions(), (9, 7));
        }
        data.verify_files(&OpenOptions { verify: crate::Verify::Decode, threads: 2 }).unwrap();
    }

    #[test]
    fn skipped_files_are_counted_and_named_in_one_warning_per_split() {
        let dir = folder(); // cat/notes.txt, .hidden/
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("dog/readme{i}.md")), "text").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("emu/nested")).unwrap();
        std::fs::write(dir.path().join("emu/.DS_Store"), "hidden").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                dir.path().join("gone.png"),
                dir.path().join("cat/link.png"),
            )
            .unwrap();
            std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("ghost"))
                .unwrap();
        }
        std::fs::write(dir.path().join("README.txt"), "about").unwrap();
        let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
        assert_eq!(data.num_images(), 9);
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        let (warning, debug): (Vec<&str>, Vec<&str>) =
            logs.lines().partition(|l| l.contains("WARN"));
        let hidden = debug.iter().find(|l| l.contains("hidden")).unwrap();
        assert!(hidden.contains("skipped 2 hidden files or folders (e.g. "), "{logs}");
        let logs = warning[0];
        assert!(logs.contains(&format!("{}: split `", dir.path().display())), "{logs}");
        assert!(logs.contains("1 files outside the class folders (e.g. "), "{logs}");
        assert!(logs.contains("README.txt"), "{logs}");
        assert!(logs.contains("split `"), "{logs}");
        assert!(logs.contains("6 files whose extension is not an image's (jpg, jpeg, png, webp, bmp, gif, tif, tiff)"), "{logs}");
        assert!(logs.contains("notes.txt") || logs.contains("readme0.md"), "{logs}");
        assert!(logs.contains(", …)"), "more than the examples shown: {logs}");
        assert!(logs.contains("1 folders inside class folders (e.g. "), "{logs}");
        assert!(logs.contains("emu/nested"), "{logs}");
        assert!(!logs.contains("DS_Store"), "hidden files are not reported: {logs}");
        #[cfg(unix)]
        {
            assert!(logs.contains("2 dangling symbolic links"), "{logs}");
            assert!(logs.contains("cat/link.png"), "{logs}");
            assert!(logs.contains("dangling=2"), "{logs}");
        }
        // Nothing skipped, nothing logged.
        let clean = tempfile::tempdir().unwrap();
        save(clean.path(), "a/0.png", &solid(4, 4, [0; 3]));
        let (_, logs) = capture_logs(|| Dataset::open_folder(clean.path(), None).unwrap());
        assert!(!logs.contains("WARN"), "{logs}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_reached_from_two_classes_is_an_error_and_twice_in_one_is_kept_once() {
        let dir = folder();
        std::os::unix::fs::symlink(dir.path().join("dog/0.png"), dir.path().join("dog/again.png"))
            .unwrap();
        let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
        assert_eq!(data.classes[1].items.len(), 3);
        assert!(
            logs.contains("1 repeated entries of a file already in its class (e.g. "),
            "{logs}"
        );
        assert!(logs.contains("dog/again.png"), "{logs}");
        std::os::unix::fs::symlink(
            dir.path().join("dog/1.JPG"),
            dir.path().join("emu/borrowed.jpg"),
        )
        .unwrap();
        let err = Dataset::open_folder(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains(
                "emu/borrowed.jpg: the same image is listed in two classes, `dog` and `emu`"
            ),
            "{err}"
        );
    }

    #[test]
    fn three_folders_must_not_share_a_class_or_an_image() {
        let dir = tempfile::tempdir().unwrap();
        for (split, class) in [("train", "dog"), ("val", "cat"), ("test", "emu")] {
            for i in 0..2 {
                save(dir.path(), &format!("{split}/{class}/{i}.png"), &solid(4, 4, [i; 3]));
            }
        }
        let open = || {
            let p = |s: &str| dir.path().join(s);
            open_image_folders(p("train"), p("val"), p("test"), &OpenOptions::default())
        };
        let splits = open().unwrap();
        assert_eq!(splits.novel.classes[0].name, "emu");
        // A class folder of the same name in train and test.
        save(dir.path(), "test/dog/9.png", &solid(4, 4, [1; 3]));
        let err = open().unwrap_err().to_string();
        assert!(err.contains("class `dog` is in two splits: `base` ("), "{err}");
        assert!(err.contains("train) and `novel` ("), "{err}");
        std::fs::remove_dir_all(dir.path().join("test/dog")).unwrap();
        // The same image under two class names, through a symbolic link.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                dir.path().join("train/dog/0.png"),
                dir.path().join("val/cat/7.png"),
            )
            .unwrap();
            let err = open().unwrap_err().to_string();
            assert!(
                err.contains("val/cat/7.png: the same image is in split `val` (class `cat`"),
                "{err}"
            );
            assert!(err.contains("split `base` (class `dog`"), "{err}");
        }
    }
}
