//! BMP: the pixel data the header describes inside the file. See the parent module for why.

use std::io::{Read, Seek};

use super::read::{read_at, truncated, Problem};

pub(super) fn bmp<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
    let mut h = [0u8; 38];
    let n = read_at(reader, 0, &mut h)?;
    let u16le = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let u32le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if n < 26 {
        return truncated("the BMP ends inside its header");
    }
    let dib = u32le(14);
    if dib == 12 {
        return bmp_core(&h, len);
    }
    if n < 38 {
        return truncated("the BMP ends inside its header");
    }
    let offset = u64::from(u32le(10));
    let width = u64::from(u32le(18).cast_signed().unsigned_abs());
    let height = u64::from(u32le(22).cast_signed().unsigned_abs());
    let bpp = u16le(28);
    let compression = if dib >= 20 { u32le(30) } else { 0 };
    let image_size = if dib >= 24 { u64::from(u32le(34)) } else { 0 };
    let end = match compression {
        // Uncompressed rows (BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS), padded to 4 bytes.
        0 | 3 | 6 => Some(offset.saturating_add(bmp_rows(width, height, bpp))),
        // RLE, JPEG or PNG data: the size the header states, if it states one.
        _ if image_size > 0 => Some(offset.saturating_add(image_size)),
        _ => match u64::from(u32le(2)) {
            0 => None,
            file_size => Some(file_size),
        },
    };
    match end {
        Some(end) if end > len => truncated(format!("the BMP header describes {end} bytes")),
        _ => Ok(()),
    }
}

/// BITMAPCOREHEADER: 16-bit width and height, always uncompressed.
fn bmp_core(h: &[u8], len: u64) -> Result<(), Problem> {
    let u16le = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let offset = u64::from(u32::from_le_bytes([h[10], h[11], h[12], h[13]]));
    let end = offset.saturating_add(bmp_rows(u16le(18), u16le(20), u16le(24)));
    if end > len {
        return truncated(format!("the BMP header describes {end} bytes"));
    }
    Ok(())
}

/// Bytes of `height` rows padded to 4 bytes (saturating: a nonsense header is "too long").
fn bmp_rows(width: u64, height: u64, bpp: u64) -> u64 {
    width.saturating_mul(bpp).div_ceil(32).saturating_mul(4).saturating_mul(height)
}
