//! The three splits of a few-shot dataset ([`Splits`], by [`Role`]) and the check that they
//! share no class and no image ([`check_disjoint`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::canonical::Canonical;
use crate::dataset::{Dataset, Item};
use crate::error::{more, EpisodeError};

/// One split of a dataset, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Training classes (`base.json`, `train/`).
    Base,
    /// Validation classes (`val.json`, `val/`).
    Val,
    /// Test classes (`novel.json`, `test/`).
    Novel,
}

impl Role {
    /// The three roles in the order splits are opened and checked: base, val, novel.
    pub const ALL: [Role; 3] = [Role::Base, Role::Val, Role::Novel];
}

/// The three splits of a few-shot dataset. Each is shared ([`Arc`]): an
/// [`EpisodeLoader`](crate::EpisodeLoader) holds the dataset it draws from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// Training classes.
    pub base: Arc<Dataset>,
    /// Validation classes.
    pub val: Arc<Dataset>,
    /// Test classes.
    pub novel: Arc<Dataset>,
}

impl Splits {
    /// The three splits, each put behind an [`Arc`].
    pub fn new(base: Dataset, val: Dataset, novel: Dataset) -> Self {
        Self { base: Arc::new(base), val: Arc::new(val), novel: Arc::new(novel) }
    }

    /// The split of `role`.
    pub fn get(&self, role: Role) -> &Arc<Dataset> {
        match role {
            Role::Base => &self.base,
            Role::Val => &self.val,
            Role::Novel => &self.novel,
        }
    }

    /// [`check_disjoint`] over the three splits.
    pub fn check_disjoint(&self) -> Result<(), EpisodeError> {
        check_disjoint(&[&self.base, &self.val, &self.novel])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Class;
    use crate::test_util::{save, solid};

    #[test]
    fn datasets_and_loaders_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Dataset>();
        send_sync::<crate::Splits>();
        send::<crate::EpisodeLoader>();
        send::<crate::Episode>();
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
