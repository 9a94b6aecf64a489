//! How `fsct-train` fails: exit codes and one-cause messages.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a valid run failed: the training diverged (non-finite loss, or mixed precision's loss scale stuck at its floor), the device ran out of memory, an internal error |
//! | 2 | the user's input or environment is at fault: config file or flag, dataset, checkpoint, output folder (not writable, a file, holding another run, locked by another process) |
//!
//! Every error type of the input side ([`InputError`], [`crate::config::ConfigError`],
//! [`crate::checkpoint::CheckpointError`], the dataset, model and import errors of the other
//! crates) maps to 2 wherever it sits in an error's chain; [`Diverged`] and everything else
//! map to 1. [`render`] prints a chain as one line, dropping a cause that its parent's message
//! already contains (so an OS error is never said twice).

/// Bad input or environment found by fsct-train itself (exit code 2). The message names the
/// file or flag, the field and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    /// An input error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A valid run that failed because the training diverged (exit code 1). No result is written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Diverged(pub String);

/// The process exit code for an error: 2 when the input or environment is at fault, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if is_input_error(err) {
        2
    } else {
        1
    }
}

/// Whether any cause in the chain is an input error (and none says the run diverged).
pub fn is_input_error(err: &anyhow::Error) -> bool {
    if err.chain().any(|cause| cause.is::<Diverged>()) {
        return false;
    }
    err.chain().any(|cause| {
        cause.is::<InputError>()
            || cause.is::<crate::config::ConfigError>()
            || cause.is::<crate::checkpoint::CheckpointError>()
            || cause.is::<fsct_episodes::EpisodeError>()
            || cause.is::<fsct_transformer::ModelError>()
            || cause.is::<fsct_transformer::import::ImportError>()
    })
}

/// The chain as one line, outermost first, each cause said once: a cause whose text its
/// parent's message already contains (thiserror messages that embed `{source}`) is dropped.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_os_error_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "a.toml".into(),
            source: io,
        });
        let line = render(&err);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(line.contains("a.toml"), "{line}");
        assert_eq!(exit_code(&err), 2);
    }

    #[test]
    fn context_is_kept_and_codes_follow_the_chain() {
        let err = anyhow::Error::new(InputError::new("bad field")).context("opening the dataset");
        assert_eq!(render(&err), "opening the dataset: bad field");
        assert_eq!(exit_code(&err), 2);
        let err: anyhow::Error =
            Err::<(), _>(Diverged("the loss became NaN".into())).context("epoch 3").unwrap_err();
        assert_eq!(exit_code(&err), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), 1);
    }
}
