//! One reference tensor turned into fsct's layout for one parameter: shapes checked, Linear
//! weights transposed, the cosine head's weight-norm pair reshaped.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;

use super::error::ImportError;
use super::key_map::reference_key;
use super::keys;

/// Removes and returns the reference tensor for one fsct parameter, in fsct layout.
pub(super) fn take_reference(
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
    // The cosine head's weight-norm pair is `[1, 1]` and `[1, 64]` in the reference (one output
    // row), `[1]` and `[64]` in fsct: the same values.
    if key.starts_with("linear.2.L.weight_") && model_shape.len() == 1 {
        let expected = vec![1, model_shape[0]];
        if data.shape.as_slice() != expected.as_slice() {
            return Err(shape_error(&key, expected, data.shape.as_slice()));
        }
        let values = to_vec(&data, &key, path)?;
        return Ok(TensorData::new(values, [model_shape[0]]));
    }
    // Scalars saved as `[]` or `[1]` both fit a one-element parameter.
    if data.shape.as_slice() != model_shape {
        return Err(shape_error(&key, model_shape.to_vec(), data.shape.as_slice()));
    }
    Ok(data)
}

/// The values of `data` as f32, or a tensor error naming `key`.
fn to_vec(data: &TensorData, key: &str, path: &Path) -> Result<Vec<f32>, ImportError> {
    data.to_vec::<f32>().map_err(|e| ImportError::Tensor {
        path: path.into(),
        key: key.into(),
        message: format!("{e:?}"),
    })
}
