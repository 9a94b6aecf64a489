//! What `fsct-train test` writes beside the accuracy line: `summary.json` (accuracy, interval,
//! protocol, checkpoint), `per_class.csv` (each test class's query accuracy) and `confusion.csv`
//! (how often a class's queries were taken for another), by class name; and the few lines it
//! prints about the worst classes and the most frequent confusions.
//!
//! The files go to one folder per protocol (see [`default_folder`]); a folder that already holds a
//! `summary.json` is not written over without `--overwrite`, and every file is written atomically
//! (a temporary file renamed into place).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use fsct_episodes::Dataset;
use serde::Serialize;

use crate::config::Config;
use crate::error::InputError;
use crate::evaluate::EpisodeRecords;
use crate::outputs::write_new_file;
use crate::stats::CiKind;

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The tested checkpoint.
    pub checkpoint: PathBuf,
    /// The reference's setting name (dataset, backbone, method, way, shot).
    pub setting: String,
    /// The test split's source (file or folder).
    pub test_split: PathBuf,
    /// Classes per episode.
    pub n_way: usize,
    /// Support images per class.
    pub k_shot: usize,
    /// Query images per class.
    pub n_query: usize,
    /// Test episodes.
    pub episodes: usize,
    /// The seed of the test episodes.
    pub seed: u64,
    /// Image side (px).
    pub image_size: usize,
    /// Mean episode accuracy (%).
    pub accuracy: f64,
    /// 95% confidence half-width (%).
    pub ci95: f64,
    /// How `ci95` was computed (`reference`: 1.96·σ/√n; `student-t`: t·s/√n).
    pub ci: CiKind,
}

/// One test class's line of `per_class.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAccuracy {
    /// The class's name in the split.
    pub class: String,
    /// Its queries over all test episodes.
    pub queries: u64,
    /// How many of them were classified correctly.
    pub correct: u64,
}

impl ClassAccuracy {
    /// Accuracy (%).
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.queries.max(1) as f64
    }
}

/// Per-class accuracy (classes that appeared in a test episode, by name) and confusion counts
/// (`(target, predicted) → queries`, both by name, misclassifications only).
pub fn per_class(
    records: &EpisodeRecords,
    dataset: &Dataset,
) -> (Vec<ClassAccuracy>, BTreeMap<(String, String), u64>) {
    let name = |c: usize| dataset.classes[c].name.clone();
    let mut classes: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut confusion: BTreeMap<(String, String), u64> = BTreeMap::new();
    for &(target, predicted) in &records.predictions {
        let entry = classes.entry(target).or_default();
        entry.0 += 1;
        if target == predicted {
            entry.1 += 1;
        } else {
            *confusion.entry((name(target), name(predicted))).or_default() += 1;
        }
    }
    let rows = classes
        .into_iter()
        .map(|(c, (queries, correct))| ClassAccuracy { class: name(c), queries, correct })
        .collect();
    (rows, confusion)
}

/// The folder a test's files go to by default: `tests/<checkpoint stem>-<dataset>-<N>w<K>s<M>q-
/// <episodes>ep-seed<seed>` beside the checkpoint, so that each protocol keeps its own files.
pub fn default_folder(checkpoint: &Path, config: &Config) -> PathBuf {
    let dir = checkpoint.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = checkpoint.file_stem().map_or("model".into(), |s| s.to_string_lossy());
    let e = &config.episodes;
    let name = format!(
        "{stem}-{}-{}w{}s{}q-{}ep-seed{}",
        config.data.name, e.n_way, e.k_shot, e.n_query, e.test_episodes, config.run.seed
    );
    dir.join("tests").join(sanitize(&name))
}

/// Keeps a folder name portable: letters, digits, `-`, `_`, `.`; anything else becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}

/// Writes `summary.json`, `per_class.csv` and `confusion.csv` into `folder` (created if needed).
///
/// # Errors
/// An [`InputError`] (exit code 2) when `folder` already holds a `summary.json` and `overwrite` is
/// off, or cannot be created or written.
pub fn write(
    folder: &Path,
    overwrite: bool,
    summary: &Summary,
    classes: &[ClassAccuracy],
    confusion: &BTreeMap<(String, String), u64>,
) -> Result<()> {
    let summary_path = folder.join("summary.json");
    if summary_path.exists() && !overwrite {
        return Err(InputError::new(format!(
            "`{}` already holds the results of a test with this protocol; pass --overwrite to \
             replace them, or --output another folder",
            folder.display()
        ))
        .into());
    }
    std::fs::create_dir_all(folder).map_err(|e| {
        InputError::new(format!(
            "cannot create `{}` ({e}); check the permissions or pass --output",
            folder.display()
        ))
    })?;
    let mut per_class = String::from("class,queries,correct,accuracy\n");
    for row in classes {
        per_class.push_str(&format!(
            "{},{},{},{:.4}\n",
            csv_field(&row.class),
            row.queries,
            row.correct,
            row.accuracy()
        ));
    }
    let mut confusions = String::from("target,predicted,queries\n");
    for ((target, predicted), count) in confusion {
        confusions.push_str(&format!("{},{},{count}\n", csv_field(target), csv_field(predicted)));
    }
    write_atomic(&folder.join("per_class.csv"), per_class.as_bytes())?;
    write_atomic(&folder.join("confusion.csv"), confusions.as_bytes())?;
    // Last: its presence says the folder holds a complete result.
    write_atomic(&summary_path, serde_json::to_string_pretty(summary)?.as_bytes())?;
    Ok(())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // The folder-level check above decided about replacing.
    write_new_file(path, bytes, true, "")
}

/// The few lines printed after the accuracy: the `count` worst classes and the `count` most
/// frequent confusions.
pub fn highlights(
    classes: &[ClassAccuracy],
    confusion: &BTreeMap<(String, String), u64>,
    count: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut worst: Vec<&ClassAccuracy> = classes.iter().collect();
    worst.sort_by(|a, b| a.accuracy().total_cmp(&b.accuracy()).then(a.class.cmp(&b.class)));
    if !worst.is_empty() {
        let list: Vec<String> = worst
            .iter()
            .take(count)
            .map(|c| format!("{} {:.1}% ({} queries)", c.class, c.accuracy(), c.queries))
            .collect();
        lines.push(format!("worst classes: {}", list.join(", ")));
    }
    let mut frequent: Vec<(&(String, String), &u64)> = confusion.iter().collect();
    frequent.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !frequent.is_empty() {
        let list: Vec<String> =
            frequent.iter().take(count).map(|((t, p), n)| format!("{t} → {p} ({n})")).collect();
        lines.push(format!("most frequent confusions: {}", list.join(", ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsct_episodes::{Class, Item};

    fn dataset(names: &[&str]) -> Dataset {
        Dataset {
            name: "toy".into(),
            source: "toy".into(),
            classes: names
                .iter()
                .map(|n| Class { name: n.to_string(), items: vec![Item::File("x".into())] })
                .collect(),
        }
    }

    #[test]
    fn per_class_counts_by_name_and_confusions_leave_out_correct_queries() {
        let data = dataset(&["cat", "dog", "eel"]);
        let records = EpisodeRecords {
            accuracies: vec![50.0, 100.0],
            predictions: vec![(0, 0), (0, 1), (1, 1), (2, 1), (0, 0), (2, 2)],
        };
        let (classes, confusion) = per_class(&records, &data);
        let line = |c: &str| classes.iter().find(|r| r.class == c).unwrap().clone();
        assert_eq!((line("cat").queries, line("cat").correct), (3, 2));
        assert_eq!((line("dog").queries, line("dog").correct), (1, 1));
        assert_eq!((line("eel").queries, line("eel").correct), (2, 1));
        assert!((line("cat").accuracy() - 200.0 / 3.0).abs() < 1e-12);
        assert_eq!(confusion.len(), 2);
        assert_eq!(confusion[&("cat".to_string(), "dog".to_string())], 1);
        assert_eq!(confusion[&("eel".to_string(), "dog".to_string())], 1);
        let lines = highlights(&classes, &confusion, 1);
        assert_eq!(lines[0], "worst classes: eel 50.0% (2 queries)");
        assert_eq!(lines[1], "most frequent confusions: cat → dog (1)");
    }

    #[test]
    fn files_are_written_once_and_replaced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("tests/run");
        let summary = Summary {
            checkpoint: "best.ckpt".into(),
            setting: "toy".into(),
            test_split: "novel.json".into(),
            n_way: 5,
            k_shot: 1,
            n_query: 15,
            episodes: 2,
            seed: 7,
            image_size: 84,
            accuracy: 75.0,
            ci95: 24.5,
            ci: CiKind::StudentT,
        };
        let classes = vec![ClassAccuracy { class: "a,\"b\"".into(), queries: 4, correct: 3 }];
        let confusion = BTreeMap::from([(("a,\"b\"".to_string(), "c".to_string()), 1)]);
        write(&folder, false, &summary, &classes, &confusion).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["ci"], "student-t");
        assert_eq!(json["n_query"], 15);
        let csv = std::fs::read_to_string(folder.join("per_class.csv")).unwrap();
        assert_eq!(csv, "class,queries,correct,accuracy\n\"a,\"\"b\"\"\",4,3,75.0000\n");
        let csv = std::fs::read_to_string(folder.join("confusion.csv")).unwrap();
        assert_eq!(csv, "target,predicted,queries\n\"a,\"\"b\"\"\",c,1\n");
        let err = write(&folder, false, &summary, &classes, &confusion).unwrap_err().to_string();
        assert!(err.contains("--overwrite") && err.contains("tests/run"), "{err}");
        write(&folder, true, &summary, &classes, &confusion).unwrap();
    }
}
