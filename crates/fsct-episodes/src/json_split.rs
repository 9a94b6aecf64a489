//! The reference split format (spec §3.3): `{"label_names": [...], "image_names": [...],
//! "image_labels": [...]}`, one file per split (`base.json`, `val.json`, `novel.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::assemble::{assemble, Skipped};
use crate::dataset::{Class, Dataset, Item};
use crate::error::EpisodeError;
use crate::image_file::OpenOptions;
use crate::splits::Splits;

#[derive(Deserialize)]
#[serde(expecting = "a JSON object with `image_names` and `image_labels`")]
struct SplitFile {
    #[serde(default)]
    label_names: Vec<String>,
    image_names: Vec<String>,
    image_labels: Vec<i64>,
}

impl Dataset {
    /// Reads one reference split file (`base.json`, …), checking that every listed image exists,
    /// has a readable image header and is complete. See [`open_json_split`] for the format.
    /// Opening splits one by one does not compare them: call [`crate::check_disjoint`].
    pub fn open_json(path: &Path) -> Result<Dataset, EpisodeError> {
        open_json_split(path, &OpenOptions::default())
    }
}

/// Reads one split file.
///
/// The file is UTF-8 JSON (a leading byte-order mark is skipped; any other encoding is an
/// [`EpisodeError::SplitEncoding`]). Classes are the sorted unique labels, as the reference does;
/// a class is named `label_names[label]` when that entry exists (the reference numbers labels
/// across all splits and lists every name in each file), else after the label number. Image paths
/// are absolute or relative to the JSON file's folder.
///
/// Checked here: the file lists at least one image, one label per image, no empty path; a file
/// listed more than once in its class is kept once (the repeats are skipped and their count
/// logged as a warning: sampling one image twice in an episode would put it in the support and
/// the query set at once); a file listed in two classes is an error
/// ([`EpisodeError::FileInTwoClasses`]). Files are compared by their canonical paths, so
/// `a.png`, `./a.png` and a symbolic link to it are one file. The files are then checked as
/// `options.verify` asks.
pub fn open_json_split(
    path: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    let path = path.as_ref();
    let _span = tracing::info_span!("open_json_split", path = %path.display()).entered();
    let bytes = std::fs::read(path)
        .map_err(|error| EpisodeError::SplitRead { path: path.to_path_buf(), error })?;
    let text = utf8_text(path, &bytes)?;
    let file: SplitFile = serde_json::from_str(text).map_err(|e| parse_error(path, &e))?;
    if file.image_names.len() != file.image_labels.len() {
        return Err(EpisodeError::LengthMismatch {
            path: path.to_path_buf(),
            names: file.image_names.len(),
            labels: file.image_labels.len(),
        });
    }
    if file.image_names.is_empty() {
        return Err(EpisodeError::EmptySplit { path: path.to_path_buf() });
    }
    if let Some(index) = file.image_names.iter().position(|n| n.is_empty() || n.contains('\0')) {
        return Err(EpisodeError::BadImageName {
            path: path.to_path_buf(),
            index,
            name: file.image_names[index].clone(),
        });
    }

    let folder = path.parent().unwrap_or(Path::new("."));
    let mut by_label: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
    for (name, &label) in file.image_names.iter().zip(&file.image_labels) {
        by_label.entry(label).or_default().push(Item::File(folder.join(name)));
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

    let name =
        path.file_stem().map_or_else(|| "split".to_string(), |s| s.to_string_lossy().into_owned());
    let split = assemble(&name, path, classes, Skipped::default(), options)?;
    tracing::info!(classes = split.num_classes(), images = split.num_images(), "split opened");
    Ok(split)
}

/// The file's text: UTF-8, with a leading byte-order mark skipped. Anything else is an encoding
/// error here, so it is not reported later as a JSON syntax or structure problem.
fn utf8_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, EpisodeError> {
    let encoding =
        |problem: String| EpisodeError::SplitEncoding { path: path.to_path_buf(), problem };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(encoding("it is UTF-16: it starts with a UTF-16 byte-order mark".into()));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // JSON text never holds a NUL byte; UTF-16 without a byte-order mark is full of them.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(encoding(format!(
            "it holds a NUL byte at offset {at}: UTF-16 without a byte-order mark, or not text"
        )));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        encoding(format!("byte 0x{:02X} at offset {at}, line {line}, is not UTF-8", bytes[at]))
    })
}

/// A syntax error (or an early end) is reported as such; only a well-formed JSON value of the
/// wrong shape is blamed on the split structure.
fn parse_error(path: &Path, e: &serde_json::Error) -> EpisodeError {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let problem = message.strip_suffix(&suffix).unwrap_or(&message).to_string();
    let (path, line, column) = (path.to_path_buf(), e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => {
            EpisodeError::SplitParse { path, problem, line, column }
        }
        _ => EpisodeError::SplitSyntax { path, problem, line, column },
    }
}

/// Opens `dir/base.json`, `dir/val.json` and `dir/novel.json`, and checks that no class or image
/// is in two of them ([`crate::check_disjoint`]).
pub fn open_json_splits(
    dir: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    let dir = dir.as_ref();
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let splits = Splits::new(
        open_json_split(file("base.json"), options)?,
        open_json_split(file("val.json"), options)?,
        open_json_split(file("novel.json"), options)?,
    );
    splits.check_disjoint()?;
    Ok(splits)
}

#[cfg(test)]
mod tests;

/// Mutated split files: every case opens or is one [`EpisodeError`] naming the split file;
/// none panics.
#[cfg(test)]
mod fuzz;
