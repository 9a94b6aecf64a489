//! Import of reference PyTorch checkpoints into fsct models.
//!
//! Reads the original code's files — training checkpoints `{'epoch': int, 'state': state_dict}`
//! (`.tar`) and plain state dicts (`.pt`, `.pth`) — and the common variants of them, then maps
//! every key by name:
//!
//! | reference | fsct |
//! |---|---|
//! | `*.weight` / `*.bias` of LayerNorm and BatchNorm | `*.gamma` / `*.beta` |
//! | `ATTN.input_linear.{0,1}` | `ATTN.input_linear.{norm,proj}` |
//! | `FFN.{0,1,3}` | `FFN.{norm,fc1,fc2}` |
//! | `linear.{0,1,2}` | `linear.{norm,fc,last}` |
//! | `linear.2.L.weight_g`, `linear.2.L.weight_v` | `linear.last.weight` = g·v/‖v‖ (folded) |
//! | `layer{L}.{j}.downsample.{0,1}` | `layer{L}.{j}.downsample.{conv,bn}` |
//! | Linear weights `[out, in]` | `[in, out]` (transposed) |
//!
//! Conv blocks store each conv/BN twice (`trunk.{i}.C` and `trunk.{i}.trunk.0`, `trunk.{i}.BN`
//! and `trunk.{i}.trunk.1`): one alias is read and the other must be equal. `FCN.*` (an unused
//! autoencoder in 2022 checkpoints), `num_batches_tracked` and the fork's `vic_regularization.*`
//! are ignored. Every other key must match a parameter of the model, shape included; anything
//! else is an [`ImportError`] naming the key (a missing key's error lists the file's keys that
//! resemble it). Checkpoints of frozen torchvision-ResNet models hold no `feature.*` keys
//! (spec §1.5): allow that with [`ImportOptions::allow_missing_backbone`].
//!
//! # Variants
//!
//! - **Formats**: the zip format (PyTorch ≥ 1.6) and the legacy one (older PyTorch, or
//!   `torch.save(..., _use_new_zipfile_serialization=False)`), `epoch` included in both
//!   ([`ImportReport::format`]). Pickle protocol 2 (`torch.save`'s default) is read.
//! - **Where the state dict sits**: at the top level, or in a nested dict — the reference's
//!   `state`, `state_dict` (Lightning), `model`, … — beside other entries (optimizer state, hyper
//!   parameters): the dict whose keys name the most of the model's parameters is taken
//!   ([`ImportReport::state_dict_key`]); `epoch` is read from the dict around it.
//! - **Wrapper prefixes**: a prefix of whole segments on *every* key of that dict is stripped
//!   when that makes the keys name more of the model's parameters: `module.` (`nn.DataParallel`,
//!   DDP), `_orig_mod.` (`torch.compile`), combinations such as `module._orig_mod.`, or a trainer's
//!   attribute such as `model.` ([`ImportReport::stripped_prefix`]).
//!
//! # Damaged and hostile files
//!
//! The tensor data is read by Burn's PyTorch reader (burn-store), which trusts what a file claims
//! about its sizes. So the file is first read here without its data: the zip members or legacy
//! data section are walked, every pickle is parsed, and each storage and tensor is checked
//! against the bytes really stored (zip members are read through once, CRC-checked). A file that
//! claims more than it holds, truncated or inflated, is an [`ImportError::Read`] naming the file
//! and the storage or tensor, never zeros, an abort or a panic. The pickles may call only what a
//! weights file needs (`torch._utils._rebuild_tensor{,_v2}`, `_rebuild_parameter`,
//! `collections.OrderedDict`): anything else — `os.system`, `builtins.eval`, a pickled class —
//! is refused before burn-store sees the file (nothing from a checkpoint is ever run). As a last
//! resort, every call into burn-store runs with its panics caught and kept off the screen (see
//! `quiet.rs`), turned into an [`ImportError::Read`].

mod keys;
mod quiet;
mod scan;

pub use quiet::quietly;
pub use scan::CheckpointFormat;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, TensorSnapshot};

/// What can go wrong when importing a reference checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read as a PyTorch checkpoint: missing, not a `torch.save` file,
    /// damaged (truncated, sizes that claim more than is stored), or refused (a pickle that would
    /// run code).
    #[error("cannot read `{path}` as a PyTorch checkpoint: {message}")]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong, naming the storage, tensor or pickle entry, and how to fix it.
        message: String,
    },
    /// The model has a parameter the checkpoint lacks.
    #[error("`{path}` has no key `{key}` (needed for fsct parameter `{param}`){}", missing_hint(.similar))]
    MissingKey {
        /// The checkpoint file.
        path: PathBuf,
        /// The reference key looked for.
        key: String,
        /// The fsct parameter path.
        param: String,
        /// The file's keys that resemble `key` (shared suffix or small edit distance), best first.
        similar: Vec<String>,
    },
    /// A tensor whose shape differs from the model's.
    #[error(
        "`{path}`: key `{key}` has shape {found:?} but the model expects {expected:?} (PyTorch layout): \
         build the model with the checkpoint's settings (backbone, image size, n_way, k_shot, heads, dims)"
    )]
    Shape {
        /// The checkpoint file.
        path: PathBuf,
        /// The reference key.
        key: String,
        /// The shape the model expects, in PyTorch layout.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// Two aliases of one conv/BN tensor that differ.
    #[error("`{path}`: aliased keys `{key}` and `{alias}` should hold the same tensor but differ; the file is corrupt")]
    AliasMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The key read.
        key: String,
        /// Its alias.
        alias: String,
    },
    /// A checkpoint key that no parameter of the model takes.
    #[error(
        "`{path}` has key `{key}` that this model has no parameter for: the checkpoint was saved from a \
         different model (e.g. a deeper backbone, or the older two-projection CTX with `to_qk`/`to_v`)"
    )]
    UnexpectedKey {
        /// The checkpoint file.
        path: PathBuf,
        /// The unexpected key.
        key: String,
    },
    /// A tensor that could not be decoded or applied.
    #[error("`{path}`: cannot load `{key}`: {message}")]
    Tensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

/// Options of [`import_reference`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Accept a checkpoint without any `feature.*` key and keep the model's backbone weights:
    /// the reference never saves its frozen torchvision ResNets (spec §1.5).
    pub allow_missing_backbone: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The `epoch` of a training checkpoint, if the file has one.
    pub epoch: Option<i64>,
    /// fsct parameters that were loaded.
    pub loaded: Vec<String>,
    /// Checkpoint keys ignored on purpose (aliases, `FCN.*`, `num_batches_tracked`, …).
    pub ignored: Vec<String>,
    /// Whether the backbone was left as it was (no `feature.*` keys in the file).
    pub backbone_kept: bool,
    /// How the file is laid out (zip or legacy).
    pub format: CheckpointFormat,
    /// The dict the state dict was found in, as a `.`-joined path (`state`, `state_dict`,
    /// `model`, …); `None` for a plain state dict.
    pub state_dict_key: Option<String>,
    /// The prefix stripped from every key (`module.`, `_orig_mod.`, `module._orig_mod.`,
    /// `model.`, …), if any.
    pub stripped_prefix: Option<String>,
}

fn missing_hint(similar: &[String]) -> String {
    const DIFFERENT: &str =
        "the checkpoint was saved from a different model; check backbone, method and n_way/k_shot";
    let quoted =
        |keys: &[String]| keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    match similar {
        [] => format!(": {DIFFERENT}"),
        [one] => format!(
            "; did you mean `{one}`? If that is the same weight under another name, rename the file's keys to the \
             reference's in Python and save it again; otherwise {DIFFERENT}"
        ),
        many => format!(
            "; did you mean one of {}? If one is the same weight under another name, rename the file's keys to the \
             reference's in Python and save it again; otherwise {DIFFERENT}",
            quoted(many)
        ),
    }
}

/// Loads a reference checkpoint into `model`, checking every key and shape.
pub fn import_reference<B: Backend, M: Module<B>>(
    mut model: M,
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<(M, ImportReport), ImportError> {
    let path = path.as_ref();
    let _span = tracing::info_span!("import_reference", path = %path.display()).entered();
    let params = ModuleSnapshot::<B>::collect(&model, None, None, true);
    let checkpoint = read_checkpoint(path, &expected_keys(&params))?;
    let mut tensors = checkpoint.tensors;
    let mut report = ImportReport {
        epoch: checkpoint.epoch,
        format: checkpoint.format,
        state_dict_key: checkpoint.state_dict_key,
        stripped_prefix: checkpoint.stripped_prefix,
        ..Default::default()
    };
    // Every key of the state dict, for suggestions when one is missing (plus the file's others).
    let mut known: Vec<String> = tensors.keys().cloned().collect();
    known.extend(checkpoint.elsewhere);

    // Drop what is ignored on purpose, checking aliases on the way.
    let keys: Vec<String> = tensors.keys().cloned().collect();
    for key in keys {
        if let Some(primary) = alias_target(&key) {
            let (Some(a), Some(b)) = (tensors.get(&key), tensors.get(&primary)) else {
                // An alias without its primary: treat the alias as the primary.
                if let Some(data) = tensors.remove(&key) {
                    tensors.insert(primary, data);
                }
                continue;
            };
            if a != b {
                return Err(ImportError::AliasMismatch {
                    path: path.into(),
                    key: primary,
                    alias: key,
                });
            }
            tensors.remove(&key);
            report.ignored.push(key);
        } else if is_ignored(&key) {
            tensors.remove(&key);
            report.ignored.push(key);
        }
    }
    let has_backbone = tensors.keys().any(|k| k.starts_with("feature."));
    report.backbone_kept = !has_backbone && options.allow_missing_backbone;

    let mut snapshots = Vec::with_capacity(params.len());
    for param in &params {
        let fsct_path = param.full_path();
        if report.backbone_kept && fsct_path.starts_with("feature.") {
            continue;
        }
        let model_shape = param.shape.to_vec();
        let data = take_reference(&mut tensors, &fsct_path, &model_shape, path, &known)?;
        let data = data.convert_dtype(param.dtype);
        snapshots.push(TensorSnapshot::from_data(
            data,
            param.path_stack.clone().unwrap_or_default(),
            param.container_stack.clone().unwrap_or_default(),
            ParamId::new(),
        ));
        report.loaded.push(fsct_path);
    }
    if let Some(key) = tensors.keys().next() {
        return Err(ImportError::UnexpectedKey { path: path.into(), key: key.clone() });
    }
    let result = model.apply(snapshots, None, None, true);
    if let Some(error) = result.errors.first() {
        return Err(ImportError::Tensor {
            path: path.into(),
            key: String::new(),
            message: error.to_string(),
        });
    }
    tracing::info!(
        loaded = report.loaded.len(),
        ignored = report.ignored.len(),
        epoch = ?report.epoch,
        format = ?report.format,
        state_dict_key = ?report.state_dict_key,
        stripped_prefix = ?report.stripped_prefix,
        "checkpoint imported"
    );
    Ok((model, report))
}

/// The float tensors of a checkpoint's state dict, keyed by reference name, and what was found
/// around them.
struct Checkpoint {
    tensors: BTreeMap<String, TensorData>,
    epoch: Option<i64>,
    format: CheckpointFormat,
    state_dict_key: Option<String>,
    stripped_prefix: Option<String>,
    /// The file's other float tensors, by full name.
    elsewhere: Vec<String>,
}

/// Checks the file (see the module docs), locates its state dict among `expected` keys and reads
/// every float tensor of it as f32 through burn-store.
fn read_checkpoint(path: &Path, expected: &BTreeSet<String>) -> Result<Checkpoint, ImportError> {
    let read_error = |message: String| ImportError::Read { path: path.into(), message };
    if !path.is_file() {
        return Err(read_error("no such file".into()));
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
    for entry in &located.entries {
        if !entry.tensor.storage.is_float() {
            // Integer buffers (num_batches_tracked) carry nothing fsct uses.
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

/// Keys dropped on purpose.
fn is_ignored(key: &str) -> bool {
    key.starts_with("FCN.")
        || key.starts_with("vic_regularization.")
        || key.ends_with("num_batches_tracked")
}

/// For an aliased conv-block key `feature.trunk.{i}.trunk.{0,1}.*`, the primary `C`/`BN` key.
fn alias_target(key: &str) -> Option<String> {
    let rest = key.strip_prefix("feature.trunk.")?;
    let (block, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("trunk.")?;
    let (index, leaf) = rest.split_once('.')?;
    let module = match index {
        "0" => "C",
        "1" => "BN",
        _ => return None,
    };
    Some(format!("feature.trunk.{block}.{module}.{leaf}"))
}

/// The reference key of an fsct parameter path.
fn reference_key(fsct_path: &str) -> String {
    const SEGMENTS: [(&str, &str); 10] = [
        ("input_linear.norm.", "input_linear.0."),
        ("input_linear.proj.", "input_linear.1."),
        ("FFN.norm.", "FFN.0."),
        ("FFN.fc1.", "FFN.1."),
        ("FFN.fc2.", "FFN.3."),
        ("linear.norm.", "linear.0."),
        ("linear.fc.", "linear.1."),
        ("linear.last.", "linear.2."),
        ("downsample.conv.", "downsample.0."),
        ("downsample.bn.", "downsample.1."),
    ];
    let mut key = fsct_path.to_string();
    for (from, to) in SEGMENTS {
        if key.starts_with(from) || key.contains(&format!(".{from}")) {
            key = key.replacen(from, to, 1);
        }
    }
    if let Some(stem) = key.strip_suffix(".gamma") {
        key = format!("{stem}.weight");
    } else if let Some(stem) = key.strip_suffix(".beta") {
        key = format!("{stem}.bias");
    }
    key
}

/// Removes and returns the reference tensor for one fsct parameter, in fsct layout.
fn take_reference(
    tensors: &mut BTreeMap<String, TensorData>,
    fsct_path: &str,
    model_shape: &[usize],
    path: &Path,
    known: &[String],
) -> Result<TensorData, ImportError> {
    let key = reference_key(fsct_path);
    let missing = |k: &str| ImportError::MissingKey {
        path: path.into(),
        key: k.into(),
        param: fsct_path.into(),
        similar: keys::similar(k, known.iter().map(String::as_str)),
    };
    let shape_error = |key: &str, expected: Vec<usize>, found: &[usize]| ImportError::Shape {
        path: path.into(),
        key: key.to_string(),
        expected,
        found: found.to_vec(),
    };
    // The cosine head: weight norm folded into one vector.
    if fsct_path == "linear.last.weight" && model_shape.len() == 1 {
        let (g_key, v_key) = ("linear.2.L.weight_g", "linear.2.L.weight_v");
        let g = tensors.remove(g_key).ok_or_else(|| missing(g_key))?;
        let v = tensors.remove(v_key).ok_or_else(|| missing(v_key))?;
        if v.shape.as_slice() != [1, model_shape[0]].as_slice() {
            return Err(shape_error(v_key, vec![1, model_shape[0]], v.shape.as_slice()));
        }
        if g.shape.num_elements() != 1 {
            return Err(shape_error(g_key, vec![1, 1], g.shape.as_slice()));
        }
        let g = to_vec(&g, g_key, path)?[0] as f64;
        let v = to_vec(&v, v_key, path)?;
        let norm = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
        let w: Vec<f32> = v.iter().map(|&x| (g * x as f64 / norm) as f32).collect();
        return Ok(TensorData::new(w, [model_shape[0]]));
    }
    let data = tensors.remove(&key).ok_or_else(|| missing(&key))?;
    // Linear weights are [out, in] in PyTorch and [in, out] in Burn.
    if model_shape.len() == 2 && key.ends_with(".weight") {
        let expected = vec![model_shape[1], model_shape[0]];
        if data.shape.as_slice() != expected.as_slice() {
            return Err(shape_error(&key, expected, data.shape.as_slice()));
        }
        let (rows, cols) = (expected[0], expected[1]);
        let values = to_vec(&data, &key, path)?;
        let mut transposed = vec![0.0f32; values.len()];
        for r in 0..rows {
            for c in 0..cols {
                transposed[c * rows + r] = values[r * cols + c];
            }
        }
        return Ok(TensorData::new(transposed, [cols, rows]));
    }
    // Scalars saved as `[]` or `[1]` both fit a one-element parameter.
    if data.shape.as_slice() != model_shape {
        return Err(shape_error(&key, model_shape.to_vec(), data.shape.as_slice()));
    }
    Ok(data)
}

fn to_vec(data: &TensorData, key: &str, path: &Path) -> Result<Vec<f32>, ImportError> {
    data.to_vec::<f32>().map_err(|e| ImportError::Tensor {
        path: path.into(),
        key: key.into(),
        message: format!("{e:?}"),
    })
}

/// The reference keys a model expects, in order (handy to diff against a checkpoint).
pub fn expected_reference_keys<B: Backend, M: Module<B>>(model: &M) -> BTreeSet<String> {
    expected_keys(&ModuleSnapshot::<B>::collect(model, None, None, true))
}

/// The reference keys of a model's parameters (the cosine head's as its weight-norm pair).
fn expected_keys(params: &[TensorSnapshot]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for param in params {
        let fsct_path = param.full_path();
        if fsct_path == "linear.last.weight" && param.shape.len() == 1 {
            keys.insert("linear.2.L.weight_g".to_string());
            keys.insert("linear.2.L.weight_v".to_string());
        } else {
            keys.insert(reference_key(&fsct_path));
        }
    }
    keys
}
