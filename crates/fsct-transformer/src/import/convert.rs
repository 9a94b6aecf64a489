//! One reference tensor turned into fsct's layout for one parameter: shapes checked, Linear
//! weights transposed, the cosine head's weight norm folded.

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

/// The values of `data` as f32, or a tensor error naming `key`.
fn to_vec(data: &TensorData, key: &str, path: &Path) -> Result<Vec<f32>, ImportError> {
    data.to_vec::<f32>().map_err(|e| ImportError::Tensor {
        path: path.into(),
        key: key.into(),
        message: format!("{e:?}"),
    })
}
