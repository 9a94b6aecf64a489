//! Canonical paths, so that symbolic links, `..` and different spellings of one path are the
//! same file when files are compared (repeats within a split, images shared between splits).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

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
