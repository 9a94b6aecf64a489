/// Errors from building or feeding a few-shot model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The episode tensor does not match the model.
    #[error("episode of shape {found:?} does not fit the model: {why}")]
    EpisodeShape {
        /// The `[n_way, k_shot + n_query, c, h, w]` shape received.
        found: [usize; 5],
        /// What is wrong and how to fix it.
        why: String,
    },
    /// A configuration value that cannot work.
    #[error("invalid model configuration: `{field}` {why}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong and how to fix it.
        why: String,
    },
}
