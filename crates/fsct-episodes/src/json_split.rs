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
