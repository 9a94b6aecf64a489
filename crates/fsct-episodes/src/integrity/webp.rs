//! WebP: the RIFF size and every chunk inside the file. See the parent module for why.

use std::io::{Read, Seek};

use super::read::{bytes_at, corrupt, truncated, Problem};

pub(super) fn webp<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
    let Some(size) = bytes_at::<4, _>(reader, 4)? else {
        return truncated("the WebP ends inside its RIFF header");
    };
    let riff_end = 8 + u64::from(u32::from_le_bytes(size));
    if riff_end > len {
        return truncated(format!("the RIFF header says {riff_end} bytes"));
    }
    // Chunks: fourcc (4), size (4), data, a pad byte when the size is odd.
    let mut pos = 12;
    let mut chunks = 0;
    while pos + 8 <= riff_end {
        let Some(header) = bytes_at::<8, _>(reader, pos)? else {
            return truncated("the WebP ends inside a chunk header");
        };
        let size = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        let end = pos + 8 + size;
        if end > len {
            return truncated(format!(
                "the WebP chunk `{}` at byte {pos} runs past the end",
                String::from_utf8_lossy(&header[..4])
            ));
        }
        chunks += 1;
        pos = end + (size & 1);
    }
    if chunks == 0 {
        return corrupt("the WebP has no chunks");
    }
    Ok(())
}
