//! Helpers shared by the integration tests: fixture paths and safetensors reading.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;

/// Hand-written `torch.save` files (zip and legacy) claiming whatever sizes a test needs.
pub mod torchfile;

/// `../shared/fixtures` beside the repository (as laid out for developers and CI), or
/// `$FSCT_SHARED_DIR/fixtures`.
pub fn shared_fixture(name: &str) -> PathBuf {
    let shared = std::env::var_os("FSCT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = shared.join("fixtures").join(name);
    assert!(
        path.is_file(),
        "parity fixture {} not found: the repository expects ../shared beside it (or set FSCT_SHARED_DIR)",
        path.display()
    );
    path
}

/// A fixture of this crate (`tests/fixtures`).
pub fn local_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Every f32 tensor of a safetensors file.
pub fn read_safetensors(path: &PathBuf) -> HashMap<String, TensorData> {
    let bytes = std::fs::read(path).expect("fixture readable");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, TensorData::new(values, view.shape().to_vec()))
        })
        .collect()
}

/// Largest absolute difference between a tensor and reference data of the same shape.
pub fn max_abs_diff<B: Backend, const D: usize>(
    actual: Tensor<B, D>,
    expected: &TensorData,
) -> f32 {
    assert_eq!(actual.dims().to_vec(), expected.shape.to_vec(), "shape");
    let a: Vec<f32> = actual.into_data().convert::<f32>().to_vec().unwrap();
    let e: Vec<f32> = expected.to_vec().unwrap();
    a.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
