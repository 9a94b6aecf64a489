//! Model weights in and out of checkpoint bytes, with every parameter's shape checked against the
//! model the config builds *before* the weights are used.
//!
//! Burn's `load_record` takes a record's tensors as they are: a checkpoint written for another
//! image size, way or shot loads without complaint and panics later inside an operation (a
//! `layer_norm` over the wrong width). [`load_model_bytes`] is the one door through which saved
//! weights enter a model in fsct-train (`test`, `--resume`, the best model before the final test):
//! it compares the shapes of every parameter and fails with an [`InputError`] naming each
//! mismatching parameter, both shapes and the likely setting. The optimizer's state travels
//! through here too ([`optimizer_bytes`], [`load_optimizer_bytes`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_store::ModuleSnapshot;
use fsct_transformer::import::quietly;

use crate::checkpoint::Checkpoint;
use crate::error::InputError;
use crate::optim::Optim;

/// The recorder of model and optimizer records inside checkpoints.
pub type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Every parameter of a module by its dotted path, with its shape.
pub fn param_shapes<B: Backend, M: Module<B>>(model: &M) -> BTreeMap<String, Vec<usize>> {
    ModuleSnapshot::<B>::collect(model, None, None, true)
        .into_iter()
        .map(|snapshot| (snapshot.full_path(), snapshot.shape.to_vec()))
        .collect()
}

/// Serialises a model into checkpoint bytes.
pub fn model_bytes<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>> {
    Ok(ModelRecorder::default().record(model.clone().into_record(), ())?)
}

/// Loads checkpoint bytes into `model` (built from the checkpoint's or the run's config),
/// checking that the record has the model's structure and every parameter its shape.
///
/// `source` names the checkpoint in messages.
///
/// # Errors
/// An [`InputError`] (exit code 2) when the bytes do not decode as this model's record or any
/// parameter's shape differs; the message lists the differing parameters with both shapes.
pub fn load_model_bytes<B: Backend, M: Module<B>>(
    model: M,
    bytes: &[u8],
    source: &str,
    device: &B::Device,
) -> Result<M> {
    let expected = param_shapes::<B, M>(&model);
    let unfit = |why: String| {
        if why.contains("weight_g") || why.contains("weight_v") {
            return InputError::new(format!(
                "{source}: written by an fsct version that stored the cosine head's weight norm \
                 folded into one weight; this version keeps the reference's two parameters \
                 (`weight_g`, `weight_v`, so that AdamW trains what the reference trains) and cannot \
                 read it: import the reference PyTorch checkpoint again (`fsct-train \
                 import-pytorch`) or train again ({why})"
            ));
        }
        InputError::new(format!(
            "{source}: its weights do not have the structure of the model the config describes ({why}); \
             use the config the checkpoint was written with (method, backbone, depth)"
        ))
    };
    // Decoding builds tensors through asserting constructors (`Tensor::from_data` checks rank
    // and byte count): a crafted record that passed the checksums must still end as an error,
    // with the panic's message kept off the user's screen.
    let record = quietly(|| ModelRecorder::default().load(bytes.to_vec(), device))
        .map_err(&unfit)?
        .map_err(|err| unfit(err.to_string()))?;
    let loaded = quietly(|| model.load_record(record)).map_err(&unfit)?;
    let found = param_shapes::<B, M>(&loaded);
    let mismatches = shape_mismatches(&expected, &found);
    if !mismatches.is_empty() {
        return Err(InputError::new(format!(
            "{source}: its weights do not fit the model the config describes: {}; the checkpoint was written \
             for other model settings (image size, n_way, k_shot, heads, dim_head, mlp_dim or backbone): \
             use the checkpoint's own settings",
            mismatches.join("; ")
        ))
        .into());
    }
    Ok(loaded)
}

/// How messages name the checkpoint file at `path`.
pub fn checkpoint_source(path: &Path) -> String {
    format!("checkpoint `{}`", path.display())
}

/// Loads the weights of `ckpt`, read from `path`, into `model`: [`load_model_bytes`] with the
/// file named in messages.
///
/// # Errors
/// As [`load_model_bytes`].
pub fn load_checkpoint_model<B: Backend, M: Module<B>>(
    model: M,
    ckpt: &Checkpoint,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    load_model_bytes(model, &ckpt.model, &checkpoint_source(path), device)
}

/// The model an fsct checkpoint file holds, with the config it was written with: read, its
/// config validated, the model built and its weights loaded (every shape checked).
///
/// # Errors
/// A file that is not a readable checkpoint, or weights that do not fit (exit code 2).
pub fn load_checkpoint_file<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(crate::config::Config, crate::model::AnyModel<B>)> {
    let ckpt = Checkpoint::load(path)?;
    let config = ckpt.header.config.clone();
    config.validate(path)?;
    let model = crate::model::build_model::<B>(&config, device)?;
    let model = load_checkpoint_model(model, &ckpt, path, device)?;
    Ok((config, model))
}

/// Serialises the optimizer's state into checkpoint bytes ([`Optim::record_bytes`]).
pub fn optimizer_bytes<B: AutodiffBackend>(optim: &Optim<B>) -> Result<Vec<u8>> {
    optim.record_bytes()
}

/// Loads checkpoint bytes into the optimizer's state. `source` names the checkpoint in messages.
///
/// # Errors
/// An [`InputError`] (exit code 2) when the bytes do not decode or do not fit the model's
/// parameters.
pub fn load_optimizer_bytes<B: AutodiffBackend>(
    optim: Optim<B>,
    bytes: Vec<u8>,
    source: &str,
    device: &B::Device,
) -> Result<Optim<B>> {
    let record = quietly(|| optim.decode_record(bytes, device))
        .map_err(|why| {
            InputError::new(format!("{source}: its optimizer state cannot be read ({why})"))
        })?
        .map_err(|err| {
            InputError::new(format!("{source}: its optimizer state cannot be read ({err})"))
        })?;
    Ok(quietly(move || optim.load_record(record)).map_err(|why| {
        InputError::new(format!("{source}: its optimizer state does not fit the model ({why})"))
    })?)
}

/// One line per parameter that is missing, extra or shaped differently (at most 8, then a count).
fn shape_mismatches(
    expected: &BTreeMap<String, Vec<usize>>,
    found: &BTreeMap<String, Vec<usize>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, shape) in expected {
        match found.get(path) {
            None => lines.push(format!("`{path}` is missing (the model has {shape:?})")),
            Some(other) if other != shape => lines.push(format!(
                "`{path}` has shape {other:?} in the checkpoint, {shape:?} in the model"
            )),
            Some(_) => {}
        }
    }
    for path in found.keys().filter(|p| !expected.contains_key(*p)) {
        lines.push(format!("`{path}` is not a parameter of the model"));
    }
    if lines.len() > 8 {
        let more = lines.len() - 8;
        lines.truncate(8);
        lines.push(format!("and {more} more"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_name_the_parameter_and_both_shapes() {
        let expected: BTreeMap<_, _> =
            [("a.weight".to_string(), vec![4, 3]), ("b".to_string(), vec![2])].into();
        let found: BTreeMap<_, _> =
            [("a.weight".to_string(), vec![5, 3]), ("c".to_string(), vec![1])].into();
        let lines = shape_mismatches(&expected, &found);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains("`a.weight`")
                && lines[0].contains("[5, 3]")
                && lines[0].contains("[4, 3]")
        );
        assert!(lines[1].contains("`b` is missing"));
        assert!(lines[2].contains("`c` is not a parameter"));
        assert!(shape_mismatches(&expected, &expected).is_empty());
    }

    #[test]
    fn a_checkpoint_with_the_folded_cosine_head_gets_its_own_advice() {
        use burn::backend::Flex;
        let path = Path::new("old.toml");
        let text =
            "[data]\nimage_size = 16\n[model]\nbackbone = \"Conv4\"\nmethod = \"FSCT_cosine\"\n";
        let config = crate::config::Config::parse(text, path).unwrap();
        let device = Default::default();
        let model = crate::model::build_model::<Flex>(&config, &device).unwrap();
        let bytes = model_bytes(&model).unwrap();
        // What an older build wrote lacks `weight_g` and `weight_v` (it had one `weight`).
        let renamed = |bytes: &[u8], from: &[u8], to: &[u8]| {
            let at =
                bytes.windows(from.len()).position(|w| w == from).expect("field in the record");
            [&bytes[..at], to, &bytes[at + from.len()..]].concat()
        };
        let old = renamed(&bytes, b"weight_g", b"weight_x");
        let model = crate::model::build_model::<Flex>(&config, &device).unwrap();
        let err = load_model_bytes(model, &old, "checkpoint `old.ckpt`", &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checkpoint `old.ckpt`")
                && err.contains("folded into one weight")
                && err.contains("import-pytorch"),
            "{err}"
        );
        // The current layout loads.
        let model = crate::model::build_model::<Flex>(&config, &device).unwrap();
        load_model_bytes(model, &bytes, "checkpoint `new.ckpt`", &device).unwrap();
    }
}
