//! The bounded byte source the pickle machine reads from.

use std::io::BufRead;

use super::hint::truncated_hint;

/// Longest pickle line (GLOBAL names, INT text) accepted.
const MAX_LINE: usize = 4096;

/// A bounded byte source that knows its position, for messages and for the legacy data offset.
pub(super) struct Input<R> {
    inner: R,
    /// Bytes read so far.
    pub position: u64,
    /// The byte at which the source ends (the file's or the zip member's length).
    pub end: u64,
    /// What is being read, for messages (`` `data.pkl` ``, "the legacy header", …).
    pub what: String,
}

impl<R: BufRead> Input<R> {
    pub(super) fn new(inner: R, end: u64, what: impl Into<String>) -> Self {
        Self { inner, position: 0, end, what: what.into() }
    }

    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    fn ended(&self) -> String {
        format!("{} ends early, at byte {}: {}", self.what, self.position, truncated_hint())
    }

    pub(super) fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if self.position == self.end {
            return Err(format!(
                "{} is cut off at byte {}: {}",
                self.what,
                self.position,
                truncated_hint()
            ));
        }
        if self.position.saturating_add(n) > self.end {
            return Err(format!(
                "{} claims a {n}-byte item at byte {} but only {} bytes follow: {}",
                self.what,
                self.position,
                self.end - self.position,
                truncated_hint()
            ));
        }
        let mut buffer = vec![0u8; n as usize];
        self.inner.read_exact(&mut buffer).map_err(|_| self.ended())?;
        self.position += n;
        Ok(buffer)
    }

    pub(super) fn byte(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.bytes(N as u64)?;
        let mut array = [0u8; N];
        array.copy_from_slice(&bytes);
        Ok(array)
    }

    pub(super) fn line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        loop {
            let b = self.byte()?;
            if b == b'\n' {
                break;
            }
            if line.len() >= MAX_LINE {
                return Err(format!(
                    "{} has a text line longer than {MAX_LINE} bytes at byte {}",
                    self.what, self.position
                ));
            }
            line.push(b);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| {
            format!("{} has a line that is not UTF-8 at byte {}", self.what, self.position)
        })
    }

    pub(super) fn string(&mut self, n: u64) -> Result<String, String> {
        let at = self.position;
        String::from_utf8(self.bytes(n)?)
            .map_err(|_| format!("{} has a string that is not UTF-8 at byte {at}", self.what))
    }
}
