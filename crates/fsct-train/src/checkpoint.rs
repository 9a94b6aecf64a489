//! Checkpoints: one self-describing file with the config, the trainer state, the model and the
//! optimizer state, written atomically (a uniquely named temp file in the same folder, fsync,
//! rename) so a kill never leaves a half-written checkpoint behind and two writers never share a
//! temp file.
//!
//! Layout (format version 2): `FSCTCKPT` magic, u32 format version, then three blocks — JSON
//! header (config + trainer state), model record, optimizer record (Burn's named MessagePack,
//! full precision) — each as a u64 LE length, the bytes, and the block's CRC-32 (u32 LE,
//! `crc32fast`). Every load verifies the lengths and checksums: a flipped byte or a partial copy
//! is an error naming the file and the block. Version 1 files (no checksums) still load, with a
//! warning.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::precision::LossScaler;

const MAGIC: &[u8; 8] = b"FSCTCKPT";
/// The format written.
const VERSION: u32 = 2;
/// The format before checksums, still read.
const VERSION_UNCHECKED: u32 = 1;
/// The blocks, in file order, as named in messages.
const BLOCKS: [&str; 3] = ["header", "model", "optimizer"];

/// Everything besides the weights that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Best validation accuracy so far (%).
    pub best_val_acc: f64,
    /// The epoch (0-based) of the best validation accuracy.
    pub best_epoch: Option<usize>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// VIC's running statistics and weights.
    pub vic: Option<fsct_vic::VicState>,
    /// Mixed precision's loss scaler.
    pub scaler: Option<LossScaler>,
}

impl TrainerState {
    /// Completed epochs since the best validation accuracy (all of them when validation never
    /// rose above 0): what early stopping compares with `optim.early_stopping_patience`.
    pub fn epochs_without_improvement(&self) -> usize {
        self.epochs_done.saturating_sub(self.best_epoch.map_or(0, |best| best + 1))
    }
}

/// The JSON header of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The configuration the model was built from.
    pub config: Config,
    /// Trainer state.
    pub state: TrainerState,
}

/// A checkpoint in memory.
pub struct Checkpoint {
    /// Config and trainer state.
    pub header: Header,
    /// The model record bytes.
    pub model: Vec<u8>,
    /// The optimizer record bytes (empty for an imported model).
    pub optimizer: Vec<u8>,
}

/// Checkpoint I/O errors, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O failure.
    #[error("checkpoint `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not an fsct checkpoint, or damaged.
    #[error("checkpoint `{path}` is not a valid fsct checkpoint ({why}); point to a `.ckpt` file written by fsct-train")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl Checkpoint {
    /// A checkpoint of a model built from `config`, at `state`, with the model's and the
    /// optimizer's record bytes (`optimizer` empty where no run continues from it: the best
    /// model, an imported one).
    pub fn new(config: &Config, state: &TrainerState, model: Vec<u8>, optimizer: Vec<u8>) -> Self {
        Self { header: Header { config: config.clone(), state: state.clone() }, model, optimizer }
    }

    /// Writes the checkpoint atomically to `path`: a uniquely named temp file beside it, fsync,
    /// rename. A concurrent writer of the same path never corrupts this one's file.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io { path: path.into(), source };
        let header = serde_json::to_vec(&self.header).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let prefix =
            format!(".{}.", path.file_name().map_or("checkpoint".into(), |n| n.to_string_lossy()));
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // A checkpoint is a shareable file like any other (the umask applies), not a private temp file.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let tmp = builder.tempfile_in(dir).map_err(io)?;
        {
            let mut file = std::io::BufWriter::new(tmp.as_file());
            file.write_all(MAGIC).map_err(io)?;
            file.write_all(&VERSION.to_le_bytes()).map_err(io)?;
            for block in [&header, &self.model, &self.optimizer] {
                file.write_all(&(block.len() as u64).to_le_bytes()).map_err(io)?;
                file.write_all(block).map_err(io)?;
                file.write_all(&crc32fast::hash(block).to_le_bytes()).map_err(io)?;
            }
            file.flush().map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Reads a checkpoint written by [`Checkpoint::save`], verifying every block's length and
    /// checksum.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when the file cannot be read; [`CheckpointError::Format`] naming
    /// the file and the damaged block when it is not an fsct checkpoint, is truncated, fails a
    /// checksum, or its header is not a valid config and trainer state.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path)
            .map_err(|source| CheckpointError::Io { path: path.into(), source })?;
        let format = |why: &str| CheckpointError::Format { path: path.into(), why: why.into() };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(format("missing the FSCTCKPT header"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let checked = match version {
            VERSION => true,
            VERSION_UNCHECKED => {
                tracing::warn!(
                    "checkpoint `{}` is format version 1, which has no checksums: damage cannot be detected; \
                     it is rewritten in version {VERSION} at the next save",
                    path.display()
                );
                false
            }
            _ => {
                return Err(format(&format!(
                    "format version {version}, this build reads {VERSION_UNCHECKED} and {VERSION}"
                )))
            }
        };
        let mut rest = &bytes[12..];
        let mut blocks = Vec::with_capacity(3);
        for name in BLOCKS {
            let truncated = || format(&format!("truncated in the {name} block"));
            let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
            let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| truncated())?;
            if tail.len() < len {
                return Err(truncated());
            }
            let (block, mut tail) = tail.split_at(len);
            if checked {
                let (crc, after) = tail.split_first_chunk::<4>().ok_or_else(truncated)?;
                if u32::from_le_bytes(*crc) != crc32fast::hash(block) {
                    return Err(format(&format!(
                        "the {name} block fails its checksum: the file is damaged (bit rot, an incomplete copy); \
                         use another copy of it"
                    )));
                }
                tail = after;
            }
            blocks.push(block.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(format(&format!("{} unexpected bytes after the last block", rest.len())));
        }
        let optimizer = blocks.pop().unwrap_or_default();
        let model = blocks.pop().unwrap_or_default();
        let header_bytes = blocks.pop().unwrap_or_default();
        let header: Header = serde_json::from_slice(&header_bytes)
            .map_err(|e| format(&format!("bad header: {e}")))?;
        Ok(Self { header, model, optimizer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let state = TrainerState {
            epochs_done: 3,
            best_val_acc: 61.5,
            best_epoch: Some(2),
            steps: 600,
            vic: None,
            scaler: None,
        };
        Checkpoint {
            header: Header { config: Config::default(), state },
            model: vec![1, 2, 3, 4, 5],
            optimizer: vec![9; 10],
        }
    }

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        let ckpt = sample();
        ckpt.save(&path).unwrap();
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("last.ckpt")],
            "the temp file is renamed away"
        );
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.header.state, ckpt.header.state);
        assert_eq!(back.header.config, Config::default());
        assert_eq!((back.model, back.optimizer), (ckpt.model.clone(), ckpt.optimizer.clone()));

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = Checkpoint::load(&path).err().unwrap().to_string();
        assert!(err.contains("truncated") && err.contains("last.ckpt"), "{err}");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Checkpoint::load(&path).err().unwrap().to_string().contains("FSCTCKPT"));
    }

    #[test]
    fn a_flipped_byte_in_any_block_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.ckpt");
        let ckpt = sample();
        ckpt.save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(good[12..20].try_into().unwrap()) as usize;
        let model_start = 20 + header_len + 4 + 8;
        let optimizer_start = model_start + ckpt.model.len() + 4 + 8;
        for (offset, block) in
            [(30, "header"), (model_start + 2, "model"), (optimizer_start + 7, "optimizer")]
        {
            let mut bad = good.clone();
            bad[offset] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let err = Checkpoint::load(&path).err().unwrap().to_string();
            assert!(
                err.contains("best.ckpt")
                    && err.contains(&format!("the {block} block fails its checksum")),
                "{err}"
            );
        }
    }

    #[test]
    fn version_1_files_without_checksums_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.ckpt");
        let ckpt = sample();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION_UNCHECKED.to_le_bytes());
        for block in
            [serde_json::to_vec(&ckpt.header).unwrap(), ckpt.model.clone(), ckpt.optimizer.clone()]
        {
            bytes.extend_from_slice(&(block.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&block);
        }
        std::fs::write(&path, &bytes).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!((back.model, back.optimizer), (ckpt.model, ckpt.optimizer));
        assert_eq!(back.header.state, ckpt.header.state);
        bytes[8] = 7;
        std::fs::write(&path, &bytes).unwrap();
        let err = Checkpoint::load(&path).err().unwrap().to_string();
        assert!(err.contains("format version 7"), "{err}");
    }

    #[test]
    fn concurrent_writers_of_one_path_leave_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        std::thread::scope(|scope| {
            for i in 0..4u8 {
                let path = &path;
                scope.spawn(move || {
                    let mut ckpt = sample();
                    ckpt.model = vec![i; 100_000];
                    for _ in 0..5 {
                        ckpt.save(path).unwrap();
                    }
                });
            }
        });
        let back = Checkpoint::load(&path).unwrap();
        assert!(back.model.iter().all(|&b| b == back.model[0]) && back.model.len() == 100_000);
    }
}
