//! Checkpoints: one self-describing file with the config, the trainer state, the model and the
//! optimizer state, written atomically (temp file, fsync, rename) so a kill never leaves a
//! half-written checkpoint behind.
//!
//! Layout: `FSCTCKPT` magic, u32 format version, then three length-prefixed (u64 LE) blocks:
//! JSON header (config + trainer state), model record, optimizer record (Burn's named
//! MessagePack, full precision).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::precision::LossScaler;

const MAGIC: &[u8; 8] = b"FSCTCKPT";
const VERSION: u32 = 1;

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
    /// Writes the checkpoint atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io { path: path.into(), source };
        let header = serde_json::to_vec(&self.header).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("ckpt.tmp");
        {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            file.write_all(MAGIC).map_err(io)?;
            file.write_all(&VERSION.to_le_bytes()).map_err(io)?;
            for block in [&header, &self.model, &self.optimizer] {
                file.write_all(&(block.len() as u64).to_le_bytes()).map_err(io)?;
                file.write_all(block).map_err(io)?;
            }
            let file = file.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
        let format = |why: &str| CheckpointError::Format { path: path.into(), why: why.into() };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(format("missing the FSCTCKPT header"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(format(&format!("format version {version}, this build reads {VERSION}")));
        }
        let mut rest = &bytes[12..];
        let mut blocks = Vec::with_capacity(3);
        for _ in 0..3 {
            if rest.len() < 8 {
                return Err(format("truncated"));
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().map_err(|_| format("truncated"))?) as usize;
            if tail.len() < len {
                return Err(format("truncated"));
            }
            let (block, tail) = tail.split_at(len);
            blocks.push(block.to_vec());
            rest = tail;
        }
        let optimizer = blocks.pop().unwrap_or_default();
        let model = blocks.pop().unwrap_or_default();
        let header_bytes = blocks.pop().unwrap_or_default();
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|e| format(&format!("bad header: {e}")))?;
        Ok(Self { header, model, optimizer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        let state = TrainerState { epochs_done: 3, best_val_acc: 61.5, best_epoch: Some(2), steps: 600, vic: None, scaler: None };
        let ckpt = Checkpoint {
            header: Header { config: Config::default(), state: state.clone() },
            model: vec![1, 2, 3],
            optimizer: vec![9; 10],
        };
        ckpt.save(&path).unwrap();
        assert!(!path.with_extension("ckpt.tmp").exists(), "the temp file is renamed away");
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.header.state, state);
        assert_eq!(back.header.config, Config::default());
        assert_eq!((back.model, back.optimizer), (vec![1, 2, 3], vec![9; 10]));

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = Checkpoint::load(&path).err().unwrap().to_string();
        assert!(err.contains("truncated") && err.contains("last.ckpt"), "{err}");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Checkpoint::load(&path).err().unwrap().to_string().contains("FSCTCKPT"));
    }
}
