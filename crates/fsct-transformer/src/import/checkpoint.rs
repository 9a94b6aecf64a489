//! Reading a checkpoint's state dict: the file is scanned and checked (`scan.rs`), its state
//! dict located (`keys.rs`), and only then are its float tensors read through burn-store, every
//! call with its panics caught (`quiet.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::TensorData;
use burn_store::pytorch::PytorchReader;

use super::error::ImportError;
use super::scan::CheckpointFormat;
use super::{keys, quiet, scan};

/// The float tensors of a checkpoint's state dict, keyed by reference name, and what was found
/// around them.
pub(super) struct Checkpoint {
    pub tensors: BTreeMap<String, TensorData>,
    pub epoch: Option<i64>,
    pub format: CheckpointFormat,
    pub state_dict_key: Option<String>,
    pub stripped_prefix: Option<String>,
    /// The file's other float tensors, by full name.
    pub elsewhere: Vec<String>,
    /// The state dict's integer tensors (`num_batches_tracked`), skipped, by reference name.
    pub skipped: Vec<String>,
}

/// Checks the file (see the module docs), locates its state dict among `expected` keys and reads
/// every float tensor of it as f32 through burn-store.
pub(super) fn read_checkpoint(
    path: &Path,
    expected: &BTreeSet<String>,
) -> Result<Checkpoint, ImportError> {
    let read_error = |message: String| ImportError::Read { path: path.into(), message };
    if !path.is_file() {
        return Err(read_error("no such file".into()));
    }
    if is_safetensors(path) {
        return read_safetensors(path);
    }
    let scan = quietly_read(path, || scan::scan(path))?.map_err(read_error)?;
    let located = keys::locate(&scan.root, expected).ok_or_else(|| {
        read_error(
            "it holds no tensors, so no state dict: save one with torch.save(model.state_dict(), path) or as the \
             reference does, torch.save({'epoch': epoch, 'state': model.state_dict()}, path)"
                .into(),
        )
    })?;
    let reader = quietly_read(path, || PytorchReader::new(path))?
        .map_err(|e| read_error(format!("burn-store cannot read it: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    for entry in &located.entries {
        if !entry.tensor.storage.is_float() {
            // Integer buffers (num_batches_tracked) carry nothing fsct uses.
            skipped.push(entry.key.clone());
            continue;
        }
        let shape: Vec<usize> = entry.tensor.shape.iter().map(|&d| d as usize).collect();
        let data = if entry.tensor.numel() == Some(0) {
            TensorData::new(Vec::<f32>::new(), shape)
        } else {
            if !entry.tensor.is_contiguous() {
                return Err(read_error(format!(
                    "tensor `{}` is stored as a non-contiguous view (shape {:?}, stride {:?}), which the reader \
                     cannot lay out: in Python, save `{{k: v.contiguous() for k, v in state_dict.items()}}` instead",
                    entry.full, entry.tensor.shape, entry.tensor.stride
                )));
            }
            let snapshot = reader.get(&entry.full).ok_or_else(|| {
                read_error(format!(
                    "burn-store does not list tensor `{}` that the file describes",
                    entry.full
                ))
            })?;
            let data = quietly_read(path, || snapshot.to_data())?
                .map_err(|e| read_error(format!("cannot read tensor `{}`: {e}", entry.full)))?;
            if data.shape.as_slice() != shape.as_slice() {
                return Err(read_error(format!(
                    "tensor `{}` was read with shape {:?} instead of {shape:?}",
                    entry.full, data.shape
                )));
            }
            data.convert::<f32>()
        };
        tensors.insert(entry.key.clone(), data);
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Checkpoint {
        tensors,
        epoch: located.epoch,
        format: scan.format,
        state_dict_key: non_empty(located.container.join(".")),
        stripped_prefix: non_empty(located.prefix),
        elsewhere: located.elsewhere,
        skipped,
    })
}

/// Runs a dependency call with its panics caught and silenced, as a read error of `path`.
fn quietly_read<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, ImportError> {
    quiet::quietly(f).map_err(|panic| ImportError::Read {
        path: path.into(),
        message: format!(
            "the reader failed on it ({panic}): the file is damaged or not a PyTorch checkpoint"
        ),
    })
}

/// Whether `path` starts as a safetensors file does: an 8-byte little-endian header length, then
/// the JSON header's `{`. (Zip archives start with `PK`, legacy pickles with `0x80`.)
fn is_safetensors(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) > 1
}

/// Every float tensor of a safetensors file as f32 (the safetensors crate checks the header and
/// every tensor's extent against the file). No prefix is stripped and there is no epoch.
fn read_safetensors(path: &Path) -> Result<Checkpoint, ImportError> {
    use safetensors::Dtype;
    let read_error = |message: String| ImportError::Read { path: path.into(), message };
    let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| read_error(format!("not a valid safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            // Integer buffers (num_batches_tracked) carry nothing fsct uses.
            _ => {
                skipped.push(name);
                continue;
            }
        };
        tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    if tensors.is_empty() {
        return Err(read_error("it holds no float tensors".into()));
    }
    Ok(Checkpoint {
        tensors,
        epoch: None,
        format: CheckpointFormat::Safetensors,
        state_dict_key: None,
        stripped_prefix: None,
        elsewhere: Vec::new(),
        skipped,
    })
}
