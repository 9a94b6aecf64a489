use std::path::PathBuf;

/// Everything that can go wrong between a dataset description on disk and an episode.
///
/// Each message names the file or class at fault and how to fix it, so it can be shown to a user
/// as is. A message states its cause once: no variant also returns it from
/// [`std::error::Error::source`], so a printed chain (`{:#}` in anyhow) does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error(
        "{path}: cannot read the split file: {error}; fix: check the path and its permissions"
    )]
    SplitRead { path: PathBuf, error: std::io::Error },

    #[error(
        "{path}: the split file is not UTF-8 text ({problem}); fix: save it as UTF-8 (a \
         byte-order mark is fine)"
    )]
    SplitEncoding { path: PathBuf, problem: String },

    #[error(
        "{path}: not valid JSON: {problem} at line {line}, column {column}; fix: repair the \
         JSON there (was the file cut short or edited by hand?)"
    )]
    SplitSyntax { path: PathBuf, problem: String, line: usize, column: usize },

    #[error(
        "{path}: not a valid split file: {problem} (line {line}, column {column}); fix: it must \
         be a JSON object with `image_names` (list of paths) and `image_labels` (list of \
         integers), and optionally `label_names` (list of strings)"
    )]
    SplitParse { path: PathBuf, problem: String, line: usize, column: usize },

    #[error("{path}: the split lists no images; fix: list the split's images in `image_names`")]
    EmptySplit { path: PathBuf },

    #[error(
        "{path}: entry {index} of `image_names` ({name:?}) is not a file name; fix: give the \
         image's path, absolute or relative to the split file's folder"
    )]
    BadImageName { path: PathBuf, index: usize, name: String },

    #[error(
        "{path}: the same image is listed in two classes, `{first}` and `{second}` (in \
         {listed_in}); fix: an image belongs to one class: remove one of the entries"
    )]
    FileInTwoClasses { path: PathBuf, listed_in: PathBuf, first: String, second: String },

    #[error(
        "{path}: `image_names` has {names} entries but `image_labels` has {labels}; fix: give \
         exactly one label per image"
    )]
    LengthMismatch { path: PathBuf, names: usize, labels: usize },

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

    #[error(
        "{path}: a symbolic link to {target}, which does not exist (listed in {listed_in}){more}; \
         fix: restore the link's target, or regenerate the list"
    )]
    DanglingLink {
        path: PathBuf,
        target: PathBuf,
        listed_in: PathBuf,
        /// ", and N more missing files" when there are several.
        more: String,
    },

    #[error("{path}: cannot read the image directory: {error}; fix: check the path")]
    DirRead { path: PathBuf, error: std::io::Error },

    #[error(
        "{path}: class folder `{class}` does not exist; fix: create it or remove `{class}` from \
         the class list"
    )]
    MissingClassFolder { path: PathBuf, class: String },

    #[error(
        "{path}: class `{class}` is listed in more than one split ({first} and {second}); fix: \
         each class must belong to one split"
    )]
    ClassInTwoSplits { path: PathBuf, class: String, first: String, second: String },

    #[error("{path}: class `{class}` is listed twice; fix: list each class folder once")]
    DuplicateClass { path: PathBuf, class: String },

    #[error(
        "class `{class}` is in two splits: {first} and {second}{more}; fix: each class must \
         belong to one split, or accuracy is measured on classes seen in training (JSON labels \
         number the classes across all split files, as in the reference)"
    )]
    SplitsShareClass {
        class: String,
        /// The first split holding it: "`base` (its source)".
        first: String,
        /// The second split holding it.
        second: String,
        /// ", and N more shared classes" when there are several.
        more: String,
    },

    #[error(
        "{path}: the same image is in split {second} and in split {first}, as {first_path}{more}; \
         fix: each image must belong to one split"
    )]
    SplitsShareImage {
        /// The image as the second split lists it.
        path: PathBuf,
        /// "`novel` (class `c`, its source)".
        second: String,
        /// The same image as the first split lists it.
        first_path: PathBuf,
        /// "`base` (class `c`, its source)".
        first: String,
        /// ", and N more shared images" when there are several.
        more: String,
    },

    #[error(
        "{path}: splits `{first}` and `{second}` are both read from this file; fix: give each \
         split its own file"
    )]
    SplitsShareFile { path: PathBuf, first: String, second: String },

    #[error("{path}: no class folders found; fix: put images in `{path}/<class>/<image>`")]
    NoClasses { path: PathBuf },

    #[error(
        "{path}: cannot decode image: {reason}; fix: re-encode the file (JPEG, PNG, WebP, BMP, \
         GIF or TIFF) or remove it from {listed_in}"
    )]
    Decode { path: PathBuf, listed_in: PathBuf, reason: String },

    #[error(
        "class `{class}` of `{split}` ({source_path}) has {have} images but an episode needs \
         k_shot + n_query = {need}; fix: lower k_shot or n_query, or remove the class from `{split}`"
    )]
    TooFewImages { split: String, source_path: PathBuf, class: String, have: usize, need: usize },

    #[error(
        "`{split}` ({source_path}) has {have} classes but n_way = {n_way}; fix: lower n_way to at \
         most {have} or add classes to `{split}`"
    )]
    TooFewClasses { split: String, source_path: PathBuf, have: usize, n_way: usize },

    #[error("invalid configuration: `{field}` {problem}; fix: {fix}")]
    Config { field: &'static str, problem: String, fix: &'static str },

    #[error("episode loader worker stopped unexpectedly; fix: this is a bug, please report it")]
    WorkerLost,
}

impl EpisodeError {
    pub(crate) fn decode(path: PathBuf, listed_in: PathBuf, reason: impl ToString) -> Self {
        Self::Decode { path, listed_in, reason: reason.to_string() }
    }
}

/// ", and N more <what>" for a count of problems of which the first is named.
pub(crate) fn more(count: usize, what: &str) -> String {
    match count {
        0 | 1 => String::new(),
        n => format!(", and {} more {what}", n - 1),
    }
}
