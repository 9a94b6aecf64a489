//! PNG: the `IEND` chunk, in the tail or by walking the chunks. See the parent module for why.

use std::io::{Read, Seek};

use super::read::{bytes_at, rfind, tail, truncated, Problem};

const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

pub(super) fn png<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
    let (_, tail_bytes) = tail(reader, len, 8)?;
    if rfind(&tail_bytes, &IEND).is_some() {
        return Ok(());
    }
    // Walk the chunks: each is length (4), type (4), data, CRC (4).
    let mut pos = 8;
    loop {
        let Some(header) = bytes_at::<8, _>(reader, pos)? else {
            return truncated("the PNG ends before its IEND chunk");
        };
        let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        let end = pos + 12 + size;
        if end > len {
            return truncated(format!(
                "the PNG chunk `{}` at byte {pos} runs past the end, before IEND",
                String::from_utf8_lossy(&header[4..8])
            ));
        }
        if &header[4..8] == b"IEND" {
            return Ok(());
        }
        pos = end;
    }
}
