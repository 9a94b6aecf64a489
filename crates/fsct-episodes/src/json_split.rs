//! The reference split format (spec §3.3): `{"label_names": [...], "image_names": [...],
//! "image_labels": [...]}`, one file per split (`base.json`, `val.json`, `novel.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::EpisodeError;
use crate::split::{Class, Dataset, Item, OpenOptions, Splits};

#[derive(Deserialize)]
struct SplitFile {
    #[serde(default)]
    label_names: Vec<String>,
    image_names: Vec<String>,
    image_labels: Vec<i64>,
}

impl Dataset {
    /// Reads one reference split file (`base.json`, …), checking that every listed image exists
    /// and has a readable image header. See [`open_json_split`] for the format.
    pub fn open_json(path: &Path) -> Result<Dataset, EpisodeError> {
        open_json_split(path, &OpenOptions::default())
    }
}

/// Reads one split file.
///
/// Classes are the sorted unique labels, as the reference does; a class is named
/// `label_names[label]` when that entry exists (the reference numbers labels across all splits and
/// lists every name in each file), else after the label number. Image paths are absolute or
/// relative to the JSON file's folder. The files are checked as `options.verify` asks.
pub fn open_json_split(
    path: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    let path = path.as_ref();
    let _span = tracing::info_span!("open_json_split", path = %path.display()).entered();
    let text = std::fs::read_to_string(path).map_err(|source| EpisodeError::SplitRead {
        path: path.to_path_buf(),
        source,
    })?;
    let file: SplitFile = serde_json::from_str(&text).map_err(|source| EpisodeError::SplitParse {
        path: path.to_path_buf(),
        source,
    })?;
    if file.image_names.len() != file.image_labels.len() {
        return Err(EpisodeError::LengthMismatch {
            path: path.to_path_buf(),
            names: file.image_names.len(),
            labels: file.image_labels.len(),
        });
    }

    let folder = path.parent().unwrap_or(Path::new("."));
    let mut by_label: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
    for (name, &label) in file.image_names.iter().zip(&file.image_labels) {
        by_label
            .entry(label)
            .or_default()
            .push(Item::File(folder.join(name)));
    }
    let classes = by_label
        .into_iter()
        .map(|(label, items)| Class {
            name: usize::try_from(label)
                .ok()
                .and_then(|i| file.label_names.get(i).cloned())
                .unwrap_or_else(|| label.to_string()),
            items,
        })
        .collect();

    let split = Dataset {
        name: path
            .file_stem()
            .map_or_else(|| "split".to_string(), |s| s.to_string_lossy().into_owned()),
        source: path.to_path_buf(),
        classes,
    };
    split.verify_files(options)?;
    tracing::info!(classes = split.num_classes(), images = split.num_images(), "split opened");
    Ok(split)
}

/// Opens `dir/base.json`, `dir/val.json` and `dir/novel.json`.
pub fn open_json_splits(dir: impl AsRef<Path>, options: &OpenOptions) -> Result<Splits, EpisodeError> {
    let dir = dir.as_ref();
    let file = |name: &str| -> PathBuf { dir.join(name) };
    Ok(Splits {
        base: open_json_split(file("base.json"), options)?,
        val: open_json_split(file("val.json"), options)?,
        novel: open_json_split(file("novel.json"), options)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{save, save_gray, solid};
    use crate::EpisodeSpec;
    use serde_json::json;

    fn write_json(dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    #[test]
    fn reads_relative_and_absolute_paths_png_and_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let abs = save(dir.path(), "imgs/b0.jpg", &solid(12, 10, [200, 10, 10]));
        save(dir.path(), "imgs/a0.png", &solid(6, 6, [1, 2, 3]));
        save(dir.path(), "imgs/a1.png", &solid(6, 6, [4, 5, 6]));
        save_gray(dir.path(), "imgs/b1.png", 5, 5, 77);
        let path = write_json(
            dir.path(),
            "base.json",
            json!({
                "label_names": ["zero", "one", "two", "three", "four", "five", "six", "seven"],
                // Labels out of order: classes come out sorted (5 before 7).
                "image_names": ["imgs/b1.png", "imgs/a0.png", abs.to_str().unwrap(), "imgs/a1.png"],
                "image_labels": [7, 5, 7, 5],
            }),
        );
        let data = Dataset::open_json(&path).unwrap();
        assert_eq!(data.name(), "base");
        assert_eq!(data.num_classes(), 2);
        assert_eq!(data.num_images(), 4);
        assert_eq!(data.classes[0].name, "five");
        assert_eq!(data.classes[1].name, "seven");
        assert_eq!(data.classes[0].items[0], Item::File(dir.path().join("imgs/a0.png")));
        assert_eq!(data.classes[1].items[1], Item::File(abs));
        assert_eq!(data.load(0, 1).unwrap().get_pixel(0, 0).0, [4, 5, 6]);
        // Grayscale is replicated to three channels.
        assert_eq!(data.load(1, 0).unwrap().get_pixel(2, 2).0, [77, 77, 77]);
        let jpeg = data.load(1, 1).unwrap();
        assert_eq!(jpeg.dimensions(), (12, 10));
        assert!(jpeg.get_pixel(6, 5).0[0] > 180, "JPEG decoded red");
        data.validate(&EpisodeSpec { n_way: 2, k_shot: 1, n_query: 1 }).unwrap();
    }

    #[test]
    fn labels_without_names_are_named_by_number() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x.png", &solid(4, 4, [0; 3]));
        let path = write_json(
            dir.path(),
            "novel.json",
            json!({"image_names": ["x.png"], "image_labels": [80]}),
        );
        let data = Dataset::open_json(&path).unwrap();
        assert_eq!(data.classes[0].name, "80");
    }

    #[test]
    fn lists_of_different_length_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_json(
            dir.path(),
            "val.json",
            json!({"label_names": [], "image_names": ["a.png", "b.png"], "image_labels": [0]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("val.json"), "{err}");
        assert!(err.contains("`image_names` has 2 entries but `image_labels` has 1"), "{err}");
        assert!(err.contains("fix:"), "{err}");
    }

    #[test]
    fn missing_files_are_named_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "ok.png", &solid(4, 4, [0; 3]));
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["ok.png", "gone1.png", "gone2.png"], "image_labels": [0, 0, 1]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("gone1.png: image does not exist"), "{err}");
        assert!(err.contains("base.json"), "{err}");
        assert!(err.contains("and 1 more missing files"), "{err}");
    }

    #[test]
    fn bad_json_and_unreadable_file_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        std::fs::write(&path, r#"{"image_names": ["a.png"]}"#).unwrap();
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("base.json: not a valid split file"), "{err}");
        assert!(err.contains("image_labels"), "{err}");
        let err = Dataset::open_json(&dir.path().join("nope.json")).unwrap_err().to_string();
        assert!(err.contains("nope.json: cannot read the split file"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_an_image_is_caught_at_open_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.png"), b"definitely not a png").unwrap();
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["broken.png"], "image_labels": [0]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("broken.png: cannot decode image"), "{err}");
        assert!(err.contains("re-encode"), "{err}");
    }

    #[test]
    fn three_split_files_open_together() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x.png", &solid(4, 4, [0; 3]));
        for name in ["base.json", "val.json", "novel.json"] {
            write_json(dir.path(), name, json!({"image_names": ["x.png"], "image_labels": [0]}));
        }
        let splits = open_json_splits(dir.path(), &OpenOptions::default()).unwrap();
        assert_eq!(
            [splits.base.name(), splits.val.name(), splits.novel.name()],
            ["base", "val", "novel"]
        );
    }
}
