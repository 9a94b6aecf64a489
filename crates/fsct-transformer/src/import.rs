//! Import of reference PyTorch checkpoints into fsct models.
//!
//! Reads the original code's files — training checkpoints `{'epoch': int, 'state': state_dict}`
//! (`.tar`) and plain state dicts (`.pt`, `.pth`) — and the common variants of them, and
//! safetensors files with the same keys (what [`crate::export`] writes; no wrapper prefix is
//! stripped there), then maps every key by name:
//!
//! | reference | fsct |
//! |---|---|
//! | `*.weight` / `*.bias` of LayerNorm and BatchNorm | `*.gamma` / `*.beta` |
//! | `ATTN.input_linear.{0,1}` | `ATTN.input_linear.{norm,proj}` |
//! | `FFN.{0,1,3}` | `FFN.{norm,fc1,fc2}` |
//! | `linear.{0,1,2}` | `linear.{norm,fc,last}` |
//! | `linear.2.L.weight_g` `[1, 1]`, `linear.2.L.weight_v` `[1, 64]` | `linear.last.weight_g` `[1]`, `linear.last.weight_v` `[64]` |
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
//! [`import_backbone`] loads pretrained weights into a ResNet backbone alone through the same
//! reader: a torchvision ImageNet state dict into the torchvision layout, or the reference's
//! `Pretrained_ResNet_FETI.pt.tar` into the FETI layout (`backbone.rs`; what it does with keys the
//! model lacks is in its docs).
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

//!
//! # Where the pieces live
//!
//! This file holds the entry points ([`import_reference`], [`expected_reference_keys`]) and what
//! they take and give; [`ImportError`] is in `error.rs`. Reading a file: `checkpoint.rs` (scan,
//! locate, read through burn-store) over `scan.rs` (tells the layouts apart), `zip_layout.rs` and
//! `legacy_layout.rs` (the containers and their storage bytes), `pickle.rs` with `input.rs`
//! (the restricted pickle machine) and `rebuild.rs` (its allow-list), `storage.rs` (storage and
//! tensor extents), `value.rs` (the object tree), `hint.rs` (shared advice); `keys.rs` finds
//! where the state dict sits and which keys resemble a missing one; `quiet.rs` catches
//! burn-store's panics. Mapping it onto the model: `key_map.rs` (reference ↔ fsct names) and
//! `convert.rs` (one tensor into fsct's layout).

mod backbone;
mod checkpoint;
mod convert;
mod error;
mod hint;
mod input;
mod key_map;
mod keys;
mod legacy_layout;
mod pickle;
mod quiet;
mod rebuild;
mod scan;
mod storage;
mod value;
mod zip_layout;

pub use backbone::{import_backbone, BackboneImportReport};
pub use error::ImportError;
pub use quiet::quietly;
pub use scan::CheckpointFormat;

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::ParamId;
use burn::prelude::*;
use burn_store::{ModuleSnapshot, TensorSnapshot};

use checkpoint::read_checkpoint;
use convert::take_reference;
pub(crate) use key_map::reference_key;
use key_map::{alias_target, expected_keys, is_ignored};

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

/// The reference keys a model expects, in order (handy to diff against a checkpoint).
pub fn expected_reference_keys<B: Backend, M: Module<B>>(model: &M) -> BTreeSet<String> {
    expected_keys(&ModuleSnapshot::<B>::collect(model, None, None, true))
}
