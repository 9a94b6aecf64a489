//! The importer's error type, whose messages name the file, the key and what to do.

use std::path::PathBuf;

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
    /// A pretrained backbone file of the other ResNet layout (told apart by the stem).
    #[error(
        "`{path}`: key `{key}` has shape {found:?}, the stem of {file_layout}, but the model is built in \
         {model_layout}: set {fix} to load this file, or give a file of the model's layout"
    )]
    Layout {
        /// The checkpoint file.
        path: PathBuf,
        /// The key that gives the layout away (`conv1.weight`).
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The file's layout, in words.
        file_layout: &'static str,
        /// The model's layout, in words.
        model_layout: &'static str,
        /// The config setting that would load the file.
        fix: &'static str,
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

/// The end of a missing key's message: the file's keys that resemble it, if any, and what to do.
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
