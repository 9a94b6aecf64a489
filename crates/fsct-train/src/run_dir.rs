//! The output folder of a training run, claimed before any work starts.
//!
//! [`RunDir::claim`] checks, before the dataset is opened or a step is taken, that `run.output`
//! is (or can be created as) a writable folder, takes an exclusive lock on it (a second
//! `fsct-train` writing into the same folder is refused; the OS drops the lock when a process
//! dies, so a killed run never leaves a stale lock), and refuses to start a new run where
//! another run's files are (`best.ckpt`, `last.ckpt`, `metrics.jsonl`) unless the run resumes
//! (`--resume`) or replaces them (`--overwrite`). Every refusal is an [`InputError`] (exit code
//! 2) naming the folder and the fix.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::InputError;

/// The lock file inside the output folder (kept; only its lock matters).
pub const LOCK_FILE: &str = ".fsct-train.lock";

/// The files that make a folder hold a run.
const RUN_FILES: [&str; 7] = [
    "last.ckpt",
    "best.ckpt",
    "metrics.jsonl",
    "config.toml",
    crate::run_log::FILE_NAME,
    crate::curves::SVG_NAME,
    crate::curves::PNG_NAME,
];

/// What to do with a folder that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the default: nothing is replaced silently).
    Refuse,
    /// Continue the run from its `last.ckpt` (`--resume`).
    Resume,
    /// Delete its checkpoints and metrics and start anew (`--overwrite`).
    Overwrite,
}

/// A claimed output folder; the lock is held until this is dropped.
#[derive(Debug)]
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Creates `path` if needed, checks it is writable, locks it and applies `existing`.
    ///
    /// # Errors
    /// An [`InputError`] when `path` is a file, cannot be created or written, is locked by
    /// another process, or holds a run and `existing` is [`Existing::Refuse`].
    pub fn claim(path: &Path, existing: Existing) -> Result<Self, InputError> {
        let shown = path.display();
        if path.exists() && !path.is_dir() {
            return Err(InputError::new(format!(
                "run.output `{shown}` is an existing file, not a folder; choose a folder path with --output"
            )));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            InputError::new(format!(
                "run.output `{shown}`: cannot create the folder ({e}); choose another --output"
            ))
        })?;
        // Writable? A real file, as the checkpoints will be (permissions, read-only mounts, quotas).
        tempfile::Builder::new().prefix(".fsct-write-test").tempfile_in(path).map_err(|e| {
            InputError::new(format!(
                "run.output `{shown}` is not writable ({e}); fix its permissions or choose another --output"
            ))
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                InputError::new(format!("run.output `{shown}`: cannot create `{LOCK_FILE}` ({e})"))
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(InputError::new(format!(
                    "run.output `{shown}` is in use by another fsct-train process; wait for it to finish or \
                     choose another --output"
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(InputError::new(format!(
                    "run.output `{shown}`: cannot lock `{LOCK_FILE}` ({e})"
                )));
            }
        }
        let present: Vec<&str> =
            RUN_FILES.iter().copied().filter(|f| path.join(f).exists()).collect();
        match existing {
            Existing::Refuse if !present.is_empty() => {
                return Err(InputError::new(format!(
                    "run.output `{shown}` already holds a run ({}); pass --resume to continue it, --overwrite to \
                     replace it, or choose another --output",
                    present.join(", ")
                )));
            }
            Existing::Resume if !present.is_empty() && !path.join("last.ckpt").exists() => {
                return Err(InputError::new(format!(
                    "--resume: run.output `{shown}` holds a run ({}) but no `last.ckpt` to resume from; \
                     pass --overwrite to start it anew, or choose another --output",
                    present.join(", ")
                )));
            }
            Existing::Overwrite => {
                for file in &present {
                    std::fs::remove_file(path.join(file)).map_err(|e| {
                        InputError::new(format!(
                            "--overwrite: cannot remove `{}` ({e})",
                            path.join(file).display()
                        ))
                    })?;
                }
                if !present.is_empty() {
                    tracing::warn!(folder = %shown, removed = present.join(", "), "--overwrite: the previous run's files were removed");
                }
            }
            _ => {}
        }
        Ok(Self { path: path.to_path_buf(), _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_not_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        std::fs::write(&file, "x").unwrap();
        let err = RunDir::claim(&file, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("is an existing file") && err.contains("out"), "{err}");
        let below = file.join("run");
        let err = RunDir::claim(&below, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("cannot create the folder"), "{err}");
    }

    #[test]
    fn an_existing_run_is_refused_resumed_or_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        drop(RunDir::claim(&run, Existing::Refuse).unwrap());
        std::fs::write(run.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(run.join("best.ckpt"), "x").unwrap();
        let err = RunDir::claim(&run, Existing::Refuse).unwrap_err().to_string();
        assert!(
            err.contains("already holds a run (best.ckpt, metrics.jsonl)")
                && err.contains("--overwrite"),
            "{err}"
        );
        let err = RunDir::claim(&run, Existing::Resume).unwrap_err().to_string();
        assert!(err.contains("no `last.ckpt`"), "{err}");
        std::fs::write(run.join("last.ckpt"), "x").unwrap();
        drop(RunDir::claim(&run, Existing::Resume).unwrap());
        assert!(run.join("last.ckpt").exists());
        drop(RunDir::claim(&run, Existing::Overwrite).unwrap());
        assert!(RUN_FILES.iter().all(|f| !run.join(f).exists()));
        drop(RunDir::claim(&run, Existing::Refuse).unwrap());
    }

    #[test]
    fn a_second_claim_on_a_locked_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDir::claim(dir.path(), Existing::Refuse).unwrap();
        let err = RunDir::claim(dir.path(), Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("in use by another fsct-train process"), "{err}");
        drop(first);
        RunDir::claim(dir.path(), Existing::Refuse).unwrap();
    }
}
