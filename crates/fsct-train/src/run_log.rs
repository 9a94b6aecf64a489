//! `train.log`: what the console shows (the tracing output), also written into the run folder so
//! that a run on a cluster keeps it. The binary installs [`RunLogWriter`] as a second `tracing`
//! output (plain text, no colours); it writes nowhere until [`start`] names the file, which the
//! experiment does once it has claimed its output folder.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::error::InputError;

static FILE: Mutex<Option<File>> = Mutex::new(None);

/// The name of the log inside a run folder.
pub const FILE_NAME: &str = "train.log";

/// From now on, tracing output is also appended to `path`.
///
/// # Errors
/// An [`InputError`] when the file cannot be opened for appending.
pub fn start(path: &Path) -> Result<(), InputError> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
        InputError::new(format!("cannot open `{}` for writing ({e})", path.display()))
    })?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Appends `line` to the file only (what the console got another way, e.g. the final error).
pub fn note(line: &str) {
    if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = writeln!(file, "{line}");
    }
}

/// Stops writing to the file (the run is over).
pub fn stop() {
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A `tracing_subscriber` writer into the run's `train.log` (nothing before [`start`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLogWriter;

/// One write through [`RunLogWriter`].
#[derive(Debug)]
pub struct RunLogHandle;

impl Write for RunLogHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // A log line that cannot be written must not stop the run.
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = file.flush();
        }
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RunLogWriter {
    type Writer = RunLogHandle;

    fn make_writer(&'a self) -> Self::Writer {
        RunLogHandle
    }
}
