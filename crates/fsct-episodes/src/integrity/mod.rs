//! Is an image file complete? A structural check of each supported format's framing, shared by
//! the open-time verification ([`crate::Verify`]) and the loader's decode path, so a truncated
//! file is the same [`crate::EpisodeError::Decode`] whichever way it is reached.
//!
//! Decoders do not always notice truncation: the `image` crate's JPEG decoder fills the missing
//! part of a JPEG cut in half with grey and reports success (PIL refuses such a file). So the
//! check looks at the framing each format has for its end, reading as little as it can:
//!
//! - JPEG: the header segments are walked by their lengths (an EXIF thumbnail, with its own
//!   SOS/EOI, lies inside an APP1 segment and is skipped) up to the first SOS of the image; an
//!   EOI marker (`FF D9`) must follow it. The last 8 KiB are searched first; only when the file
//!   has more than that after its EOI (trailing data is allowed) are the scans walked forward.
//! - PNG: the `IEND` chunk; searched in the last 8 KiB, else the chunks are walked by their
//!   lengths (trailing bytes after `IEND` are allowed).
//! - GIF: the blocks are walked up to the trailer byte `0x3B` (this reads the whole file: GIF
//!   has no length fields beyond 255-byte sub-blocks).
//! - WebP: the RIFF size and every chunk must lie inside the file.
//! - BMP: the pixel data the header describes (rows × padded row size, or the stated size of
//!   compressed data) must lie inside the file.
//! - TIFF (and BigTIFF): every IFD, and the strips or tiles each IFD points to, must lie inside
//!   the file.
//!
//! Other content is left to the decoder. Every failure is a one-line reason, naming what is
//! missing and the file's length.

mod bmp;
mod gif;
mod jpeg;
mod png;
mod read;
mod tiff;
mod webp;

use std::io::{Read, Seek};

use bmp::bmp;
use gif::gif;
use jpeg::jpeg;
use png::png;
use read::{io_reason, read_at, Problem};
use tiff::tiff;
use webp::webp;

/// Checks that the image in `reader` (of `len` bytes) is complete. The reader's position is left
/// anywhere.
pub(crate) fn check_complete<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), String> {
    if len == 0 {
        return Err("the file is empty".into());
    }
    let mut head = [0u8; 12];
    let n = read_at(reader, 0, &mut head).map_err(io_reason)?;
    let head = &head[..n];
    let result = if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg(reader, len)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(reader, len)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        gif(reader, len)
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        webp(reader, len)
    } else if head.starts_with(b"BM") {
        bmp(reader, len)
    } else if head.starts_with(b"II") || head.starts_with(b"MM") {
        tiff(reader, len, head)
    } else {
        // Not a format with a known framing: the decoder will say what it is.
        Ok(())
    };
    result.map_err(|problem| match problem {
        Problem::Truncated(what) => format!("the file is truncated ({len} bytes): {what}"),
        Problem::Corrupt(what) => format!("the file is corrupt: {what}"),
        Problem::Io(e) => io_reason(e),
    })
}

#[cfg(test)]
mod tests;
