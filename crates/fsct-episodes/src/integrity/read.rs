//! Reading an image file for its framing: bytes at an offset, the tail of the file, and the
//! two ways a check fails ([`Problem`]).

use std::io::{self, Read, Seek, SeekFrom};

/// How many bytes from the end are searched for an end marker before walking the file.
pub(super) const TAIL: u64 = 8 * 1024;

pub(super) enum Problem {
    /// The file ends before the format says it should.
    Truncated(String),
    /// The framing makes no sense.
    Corrupt(String),
    Io(io::Error),
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Problem::Io(e)
    }
}

pub(super) fn io_reason(e: io::Error) -> String {
    format!("cannot read the file: {e}")
}

pub(super) fn truncated<T>(what: impl Into<String>) -> Result<T, Problem> {
    Err(Problem::Truncated(what.into()))
}

pub(super) fn corrupt<T>(what: impl Into<String>) -> Result<T, Problem> {
    Err(Problem::Corrupt(what.into()))
}

/// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
pub(super) fn read_at<R: Read + Seek>(
    reader: &mut R,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    reader.seek(SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Exactly `N` bytes at `offset`, or `None` when the file ends first.
pub(super) fn bytes_at<const N: usize, R: Read + Seek>(
    reader: &mut R,
    offset: u64,
) -> Result<Option<[u8; N]>, Problem> {
    let mut buf = [0u8; N];
    Ok((read_at(reader, offset, &mut buf)? == N).then_some(buf))
}

/// The last `TAIL` bytes at or after `from`, and the offset of the first of them.
pub(super) fn tail<R: Read + Seek>(
    reader: &mut R,
    len: u64,
    from: u64,
) -> Result<(u64, Vec<u8>), Problem> {
    let start = len.saturating_sub(TAIL).max(from).min(len);
    let mut buf = vec![0u8; (len - start) as usize];
    let n = read_at(reader, start, &mut buf)?;
    buf.truncate(n);
    Ok((start, buf))
}

pub(super) fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}
