//! What a run writes into its output folder besides checkpoints: the per-epoch metrics
//! (`metrics.jsonl`), the results line of each test (`results.txt`, as the reference writes it),
//! and the line-at-a-time appends both use.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::error::InputError;
use crate::evaluate::Evaluation;

/// Paths inside the output folder.
pub struct Outputs {
    /// Best model by validation accuracy.
    pub best: PathBuf,
    /// The last completed epoch (resume point).
    pub last: PathBuf,
    /// Per-epoch metrics, JSON lines.
    pub metrics: PathBuf,
    /// One line per finished run.
    pub results: PathBuf,
    /// The resolved config of the run (file and flags).
    pub config: PathBuf,
}

impl Outputs {
    /// The files of `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            best: dir.join("best.ckpt"),
            last: dir.join("last.ckpt"),
            metrics: dir.join("metrics.jsonl"),
            results: dir.join("results.txt"),
            config: dir.join("config.toml"),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochMetrics {
    /// The epoch, 0-based.
    pub epoch: usize,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Mean training query accuracy in [0, 1].
    pub train_acc: f64,
    /// Validation accuracy (%).
    pub val_acc: f64,
    /// Its 95% confidence half-width (%).
    pub val_ci95: f64,
    /// VIC's running variance term, when VIC is on.
    pub vic_variance: Option<f64>,
    /// VIC's running invariance term.
    pub vic_invariance: Option<f64>,
    /// VIC's running covariance term.
    pub vic_covariance: Option<f64>,
    /// VIC's current weights of the three terms.
    pub vic_lambdas: Option<[f64; 3]>,
    /// Mean seconds per training step.
    pub step_seconds: f64,
    /// Mixed precision's loss scale at the end of the epoch.
    pub loss_scale: Option<f64>,
    /// Steps the loss scaler skipped so far.
    pub skipped_steps: u64,
    /// The process's peak resident memory so far (Linux), in MiB.
    pub peak_rss_mib: Option<f64>,
}

/// The current time (UTC) as the reference writes it in `results.txt`: `%Y%m%d@%H%M%S`.
pub fn reference_datetime() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}@{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Prints a test result and appends it to `results`: the reference's line (`Time: … Setting: …
/// Test Acc = …% +- …%`, its date format in UTC) followed by the episodes and the tested
/// checkpoint, the same for a training run's final test and for `fsct-train test`.
pub fn report_test(
    config: &Config,
    results: &Path,
    checkpoint: &Path,
    test: Evaluation,
) -> Result<()> {
    let Evaluation { accuracy: acc, ci95: ci } = test;
    let n = config.episodes.test_episodes;
    println!("test: {n} episodes, accuracy {acc:.2}% ± {ci:.2}% (95% CI)");
    let line = format!(
        "Time: {}   Setting: {:<50} Test Acc = {acc:.2}% +- {ci:.2}%   Episodes: {n}   Checkpoint: {}",
        reference_datetime(),
        config.setting_name(),
        checkpoint.display()
    );
    append_line(results, &line)
}

/// Appends one line (a whole line per write, so readers never see half of one).
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
            InputError::new(format!(
                "cannot open `{}` for writing ({e}); check the folder's permissions",
                path.display()
            ))
        })?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| InputError::new(format!("cannot write `{}` ({e})", path.display())))?;
    Ok(())
}

/// On resume: drops the lines of `metrics.jsonl` for epochs the checkpoint has not completed
/// (written after the checkpoint a run resumes from), so no epoch appears twice. Atomic rewrite.
pub fn keep_metrics_before(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let keep = |line: &&str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64))
            .is_some_and(|epoch| (epoch as usize) < epochs_done)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("rewriting `{}`", path.display()))?;
    for line in kept {
        writeln!(tmp, "{line}")?;
    }
    tmp.persist(path).map_err(|e| {
        InputError::new(format!("cannot rewrite `{}`: {}", path.display(), e.error))
    })?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, renamed into place). A file
/// already at `path` is replaced only with `overwrite`; otherwise the [`InputError`] names the
/// path and `flag` (the option that chose it) and suggests `--overwrite`.
///
/// # Errors
/// An [`InputError`] (exit code 2): the file exists, or the folder cannot be written.
pub fn write_new_file(path: &Path, bytes: &[u8], overwrite: bool, flag: &str) -> Result<()> {
    if path.exists() && !overwrite {
        return Err(InputError::new(format!(
            "{flag} `{}` already exists; pass --overwrite to replace it, or choose another path",
            path.display()
        ))
        .into());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| {
        InputError::new(format!("cannot write `{}` ({e}); check the folder", path.display()))
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// The process's peak resident memory (Linux), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
