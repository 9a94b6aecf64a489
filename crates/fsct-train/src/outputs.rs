//! What a run writes into its output folder besides checkpoints: the per-epoch metrics
//! (`metrics.jsonl`), the results line of each test (`results.txt`, as the reference writes it),
//! and the line-at-a-time appends both use.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
    /// The learning curves, redrawn after every epoch.
    pub curves: crate::curves::CurveFiles,
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
            curves: crate::curves::CurveFiles::in_folder(dir),
        }
    }
}

/// One line of `metrics.jsonl`: `{"kind": "epoch", …}` after every epoch, `{"kind": "test", …}`
/// after the final test. Every accuracy is in percent; epochs count from 1; times are UTC
/// ([`utc_timestamp`]); durations are seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricsLine {
    /// One epoch's training and validation.
    Epoch(EpochMetrics),
    /// The test of the run's best (or last) model.
    Test(TestMetrics),
}

/// An epoch's line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch, from 1.
    pub epoch: usize,
    /// When it ended (UTC, RFC 3339).
    pub time: String,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Mean training loss of the epoch (classification plus VIC).
    pub train_loss: f64,
    /// Its classification (cross-entropy) part.
    pub train_ce_loss: f64,
    /// Its VIC part (λ-weighted), when VIC is on.
    pub train_vic_loss: Option<f64>,
    /// Mean training query accuracy (%).
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
    /// Wall-clock seconds of the epoch: training, validation and checkpoints.
    pub epoch_seconds: f64,
    /// Mean seconds per training step (waiting for the episode excluded).
    pub step_seconds: f64,
    /// Seconds the training steps waited for their episodes (the loader's share of the epoch;
    /// near 0 when loading keeps up).
    pub data_wait_seconds: f64,
    /// Mixed precision's loss scale at the end of the epoch.
    pub loss_scale: Option<f64>,
    /// Steps the loss scaler skipped so far.
    pub skipped_steps: u64,
    /// The process's peak resident memory so far (Linux), in MiB.
    pub peak_rss_mib: Option<f64>,
}

/// The test's line of `metrics.jsonl` (the same result as `results.txt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// When the test ended (UTC, RFC 3339).
    pub time: String,
    /// Mean test accuracy (%).
    pub test_acc: f64,
    /// Its 95% confidence half-width (%).
    pub test_ci95: f64,
    /// Test episodes.
    pub episodes: usize,
    /// The checkpoint tested.
    pub checkpoint: PathBuf,
}

/// Appends `line` to `metrics.jsonl`.
///
/// # Errors
/// The file cannot be written (exit code 2, naming it).
pub fn append_metrics(path: &Path, line: &MetricsLine) -> Result<()> {
    append_line(path, &serde_json::to_string(line)?)
}

/// The current time, UTC, RFC 3339 to the second: `2026-11-30T17:45:02Z`.
pub fn utc_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
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

/// On resume: drops the lines of `metrics.jsonl` written after the epoch the checkpoint
/// completed (`epochs_done`, counted from 1 as the lines count), so no epoch appears twice: the
/// first epoch line past it and every line after it. Lines of files written before epochs
/// counted from 1 (no `kind` field, `epoch` from 0) are read as such. Atomic rewrite.
pub fn drop_metrics_after(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let past = |line: &str| {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { return false };
        let Some(epoch) = value.get("epoch").and_then(serde_json::Value::as_u64) else {
            return false;
        };
        let from_one = if value.get("kind").is_some() { epoch } else { epoch + 1 };
        from_one as usize > epochs_done
    };
    let kept: Vec<&str> = text.lines().take_while(|line| !past(line)).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = temp_file_in(dir).with_context(|| format!("rewriting `{}`", path.display()))?;
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
    let mut tmp = temp_file_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// A temporary file in `dir` to rename over a result file: created with the permissions any new
/// file gets (0666 less the umask, as `File::create`), not tempfile's private 0600, so results
/// stay readable by whoever could read the folder.
pub fn temp_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fsct-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// The process's peak resident memory (Linux), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(text: &str, epochs_done: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        drop_metrics_after(&path, epochs_done).unwrap();
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn a_resume_drops_the_epochs_after_its_checkpoint_and_whatever_follows_them() {
        let e = |n: usize| format!("{{\"kind\":\"epoch\",\"epoch\":{n}}}\n");
        let test = "{\"kind\":\"test\",\"test_acc\":50.0}\n";
        // A finished 2-epoch run resumed for more epochs keeps everything, its test included.
        let finished = format!("{}{}{test}", e(1), e(2));
        assert_eq!(kept(&finished, 2), finished);
        // A run killed after epoch 3's line but resuming from epoch 2's checkpoint.
        let killed = format!("{}{}{test}{}{test}", e(1), e(2), e(3));
        assert_eq!(kept(&killed, 2), finished);
        assert_eq!(kept(&killed, 0), "");
        // Lines of the first format count epochs from 0.
        let legacy = "{\"epoch\":0}\n{\"epoch\":1}\n";
        assert_eq!(kept(legacy, 1), "{\"epoch\":0}\n");
        assert_eq!(kept(legacy, 2), legacy);
    }

    #[cfg(unix)]
    #[test]
    fn result_files_get_the_usual_permissions_not_private_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write_new_file(&path, b"x", false, "test").unwrap();
        let written = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let usual = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        assert_eq!(written, usual, "{written:o} vs {usual:o}");
    }

    #[test]
    fn metrics_lines_carry_their_kind_and_read_back() {
        let line = MetricsLine::Test(TestMetrics {
            time: utc_timestamp(),
            test_acc: 61.5,
            test_ci95: 0.75,
            episodes: 600,
            checkpoint: PathBuf::from("runs/a/best.ckpt"),
        });
        let json = serde_json::to_string(&line).unwrap();
        assert!(json.starts_with(r#"{"kind":"test","time":"#), "{json}");
        assert_eq!(serde_json::from_str::<MetricsLine>(&json).unwrap(), line);
        let time = utc_timestamp();
        let b = time.as_bytes();
        assert!(time.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z', "{time}");
    }
}
