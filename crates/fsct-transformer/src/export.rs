//! Export of fsct models under the reference's (PyTorch) key names and layouts — the inverse of
//! [`crate::import`], table included — as a safetensors file PyTorch loads with
//! `safetensors.torch.load_file` and `model.load_state_dict(..., strict=True)`.
//!
//! Besides the renames, export writes what the reference's state dict holds that fsct does not
//! keep: the conv blocks' aliased keys (`trunk.{i}.trunk.0.*` and `trunk.{i}.trunk.1.*`, equal to
//! `trunk.{i}.C.*` and `trunk.{i}.BN.*`: the reference registers each module twice) and each batch
//! norm's `num_batches_tracked` (fsct does not count batches: written as 0; PyTorch reads it only
//! when a BatchNorm's momentum is `None`, which the reference's never is).
//!
//! Linear weights go back to `[out, in]`, the cosine head's `weight_g` / `weight_v` to `[1, 1]` /
//! `[1, 64]`. Every tensor is written in f32 (a half-precision model's weights are widened).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn_store::ModuleSnapshot;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::import::reference_key;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A parameter's values could not be read back from the device.
    #[error("cannot read fsct parameter `{param}`: {message}")]
    Read {
        /// The fsct parameter path.
        param: String,
        /// What went wrong.
        message: String,
    },
    /// Two parameters mapped to one reference key (a custom module whose names collide).
    #[error("fsct parameters map to the same reference key `{key}`")]
    Collision {
        /// The reference key.
        key: String,
    },
    /// The safetensors encoder refused the tensors.
    #[error("cannot encode the safetensors file: {0}")]
    Encode(String),
}

/// One exported tensor: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportTensor {
    /// A float tensor (f32).
    Float {
        /// PyTorch's shape.
        shape: Vec<usize>,
        /// Row-major values.
        values: Vec<f32>,
    },
    /// A 0-dimensional i64 (`num_batches_tracked`).
    Count(i64),
}

/// The model's state dict as the reference lays it out, by reference key.
///
/// # Errors
/// [`ExportError::Read`] when a parameter's values cannot be read; [`ExportError::Collision`].
pub fn reference_state_dict<B: Backend, M: Module<B>>(
    model: &M,
) -> Result<BTreeMap<String, ExportTensor>, ExportError> {
    let mut out = BTreeMap::new();
    let mut insert = |key: String, tensor: ExportTensor| match out.insert(key.clone(), tensor) {
        Some(_) => Err(ExportError::Collision { key }),
        None => Ok(()),
    };
    for snapshot in ModuleSnapshot::<B>::collect(model, None, None, true) {
        let path = snapshot.full_path();
        let read = |message: String| ExportError::Read { param: path.clone(), message };
        let data = snapshot.to_data().map_err(|e| read(format!("{e:?}")))?.convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.to_vec::<f32>().map_err(|e| read(format!("{e:?}")))?;
        let key = reference_key(&path);
        let (shape, values) = to_reference_layout(&key, shape, values);
        if let Some(alias) = conv_block_alias(&key) {
            insert(alias, ExportTensor::Float { shape: shape.clone(), values: values.clone() })?;
        }
        if let Some(stem) = key.strip_suffix(".running_mean") {
            let count = format!("{stem}.num_batches_tracked");
            if let Some(alias) = conv_block_alias(&count) {
                insert(alias, ExportTensor::Count(0))?;
            }
            insert(count, ExportTensor::Count(0))?;
        }
        insert(key, ExportTensor::Float { shape, values })?;
    }
    Ok(out)
}

/// Linear weights `[in, out]` → `[out, in]`; the cosine head's `[1]`/`[64]` → `[1, 1]`/`[1, 64]`.
fn to_reference_layout(key: &str, shape: Vec<usize>, values: Vec<f32>) -> (Vec<usize>, Vec<f32>) {
    if key.starts_with("linear.2.L.weight_") && shape.len() == 1 {
        return (vec![1, shape[0]], values);
    }
    if shape.len() == 2 && key.ends_with(".weight") {
        let (rows, cols) = (shape[0], shape[1]);
        let mut transposed = vec![0.0f32; values.len()];
        for r in 0..rows {
            for c in 0..cols {
                transposed[c * rows + r] = values[r * cols + c];
            }
        }
        return (vec![cols, rows], transposed);
    }
    (shape, values)
}

/// `feature.trunk.{i}.C.*` → `feature.trunk.{i}.trunk.0.*`, `…BN.*` → `…trunk.1.*` (the inverse
/// of the import's alias check).
fn conv_block_alias(key: &str) -> Option<String> {
    let rest = key.strip_prefix("feature.trunk.")?;
    let (block, rest) = rest.split_once('.')?;
    let (module, leaf) = rest.split_once('.')?;
    let index = match module {
        "C" => "0",
        "BN" => "1",
        _ => return None,
    };
    Some(format!("feature.trunk.{block}.trunk.{index}.{leaf}"))
}

/// The model's reference state dict encoded as safetensors bytes (keys sorted).
///
/// # Errors
/// As [`reference_state_dict`], or [`ExportError::Encode`].
pub fn to_safetensors<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>, ExportError> {
    let state = reference_state_dict::<B, M>(model)?;
    let encoded: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = state
        .into_iter()
        .map(|(key, tensor)| match tensor {
            ExportTensor::Float { shape, values } => {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (key, shape, Dtype::F32, bytes)
            }
            ExportTensor::Count(n) => (key, Vec::new(), Dtype::I64, n.to_le_bytes().to_vec()),
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(key, shape, dtype, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (key.clone(), view))
                .map_err(|e| ExportError::Encode(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| ExportError::Encode(e.to_string()))
}
