use std::path::PathBuf;

/// Everything that can go wrong between a dataset description on disk and an episode.
///
/// Each message names the file or class at fault and how to fix it, so it can be shown to a user
/// as is.
#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error("{path}: cannot read the split file: {source}; fix: check the path and its permissions")]
    SplitRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}: not a valid split file: {source}; fix: it must be a JSON object with \
         `image_names` (list of paths) and `image_labels` (list of integers)"
    )]
    SplitParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "{path}: `image_names` has {names} entries but `image_labels` has {labels}; fix: give \
         exactly one label per image"
    )]
    LengthMismatch {
        path: PathBuf,
        names: usize,
        labels: usize,
    },

    #[error(
        "{path}: image does not exist (listed in {listed_in}){more}; fix: restore the file, or \
         regenerate the list (relative paths are resolved against the list's folder)"
    )]
    MissingFile {
        path: PathBuf,
        listed_in: PathBuf,
        /// ", and N more missing files" when there are several.
        more: String,
    },

    #[error("{path}: cannot read the image directory: {source}; fix: check the path")]
    DirRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}: class folder `{class}` does not exist; fix: create it or remove `{class}` from \
         the class list"
    )]
    MissingClassFolder { path: PathBuf, class: String },


    #[error(
        "{path}: class `{class}` is listed in more than one split ({first} and {second}); fix: \
         each class must belong to one split"
    )]
    ClassInTwoSplits {
        path: PathBuf,
        class: String,
        first: String,
        second: String,
    },

    #[error(
        "{path}: class `{class}` is listed twice; fix: list each class folder once"
    )]
    DuplicateClass { path: PathBuf, class: String },

    #[error("{path}: no class folders found; fix: put images in `{path}/<class>/<image>`")]
    NoClasses { path: PathBuf },

    #[error(
        "{path}: cannot decode image: {reason}; fix: re-encode the file (JPEG or PNG) or remove \
         it from {listed_in}"
    )]
    Decode {
        path: PathBuf,
        listed_in: PathBuf,
        reason: String,
    },

    #[error(
        "class `{class}` of `{split}` ({source_path}) has {have} images but an episode needs \
         k_shot + n_query = {need}; fix: lower k_shot or n_query, or remove the class from `{split}`"
    )]
    TooFewImages {
        split: String,
        source_path: PathBuf,
        class: String,
        have: usize,
        need: usize,
    },

    #[error(
        "`{split}` ({source_path}) has {have} classes but n_way = {n_way}; fix: lower n_way to at \
         most {have} or add classes to `{split}`"
    )]
    TooFewClasses {
        split: String,
        source_path: PathBuf,
        have: usize,
        n_way: usize,
    },

    #[error("invalid configuration: `{field}` {problem}; fix: {fix}")]
    Config {
        field: &'static str,
        problem: String,
        fix: &'static str,
    },

    #[error("episode loader worker stopped unexpectedly; fix: this is a bug, please report it")]
    WorkerLost,
}

impl EpisodeError {
    pub(crate) fn decode(path: PathBuf, listed_in: PathBuf, reason: impl ToString) -> Self {
        Self::Decode {
            path,
            listed_in,
            reason: reason.to_string(),
        }
    }
}
