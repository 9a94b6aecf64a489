//! JPEG: the header segments walked up to the first scan, then an end-of-image marker after it. See the parent module for why.

use std::io::{BufReader, Read, Seek, SeekFrom};

use super::read::{bytes_at, corrupt, rfind, tail, truncated, Problem};

pub(super) fn jpeg<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
    let sos = jpeg_first_scan(reader, len)?;
    // Entropy-coded data never holds `FF D9` (every data `FF` is followed by `00`), so an EOI
    // anywhere after the first scan header ends the image.
    let (start, tail_bytes) = tail(reader, len, sos)?;
    if rfind(&tail_bytes, &[0xFF, 0xD9]).is_some() {
        return Ok(());
    }
    if start <= sos {
        return truncated("the JPEG data ends without an end-of-image marker (FF D9)");
    }
    // More than `TAIL` bytes after the image's end (or none at all): walk the scans.
    jpeg_walk_scans(reader, len, sos)
}

/// The offset of the first SOS marker of the image, found by walking the header segments by
/// their lengths (so nothing inside an APPn segment, such as an EXIF thumbnail, is mistaken for
/// the image's own markers).
fn jpeg_first_scan<R: Read + Seek>(reader: &mut R, len: u64) -> Result<u64, Problem> {
    let mut pos = 2; // after SOI
    loop {
        let Some([ff, mut marker]) = bytes_at::<2, _>(reader, pos)? else {
            return truncated("the JPEG ends inside its header, before the image data");
        };
        if ff != 0xFF {
            return corrupt(format!("no JPEG marker at byte {pos}"));
        }
        // Any number of fill bytes (FF) may precede a marker.
        while marker == 0xFF {
            pos += 1;
            match bytes_at::<2, _>(reader, pos)? {
                Some([_, m]) => marker = m,
                None => return truncated("the JPEG ends inside its header, before the image data"),
            }
        }
        match marker {
            0xDA => return Ok(pos),
            0xD9 => return corrupt("the JPEG ends (EOI) before any image data"),
            0x01 | 0xD0..=0xD8 => pos += 2,
            _ => {
                let Some(size) = bytes_at::<2, _>(reader, pos + 2)? else {
                    return truncated("the JPEG ends inside its header, before the image data");
                };
                let size = u64::from(u16::from_be_bytes(size));
                if size < 2 {
                    return corrupt(format!("a JPEG segment at byte {pos} has length {size}"));
                }
                pos += 2 + size;
                if pos > len {
                    return truncated(format!(
                        "a JPEG header segment (marker FF {marker:02X}) runs past the end"
                    ));
                }
            }
        }
    }
}

/// Walks the scans from the first SOS: entropy-coded data (where `FF` is followed by `00`, a
/// restart marker or fill) and the segments between scans (skipped by their lengths), up to EOI.
fn jpeg_walk_scans<R: Read + Seek>(reader: &mut R, len: u64, sos: u64) -> Result<(), Problem> {
    reader.seek(SeekFrom::Start(sos))?;
    let mut input = BufReader::with_capacity(1 << 16, reader.take(len - sos));
    let mut byte = || -> Result<Option<u8>, Problem> {
        let mut b = [0u8; 1];
        Ok((input.read(&mut b)? == 1).then_some(b[0]))
    };
    let cut = || truncated("the JPEG data ends without an end-of-image marker (FF D9)");
    // At a marker: `FF DA`.
    let mut skip_segment = true;
    loop {
        if skip_segment {
            // Read past the marker and its segment.
            let (Some(_), Some(_), Some(hi), Some(lo)) = (byte()?, byte()?, byte()?, byte()?)
            else {
                return cut();
            };
            let size = u16::from_be_bytes([hi, lo]);
            for _ in 2..size {
                if byte()?.is_none() {
                    return cut();
                }
            }
            skip_segment = false;
        }
        // Entropy-coded data up to the next real marker.
        let marker = loop {
            match byte()? {
                None => return cut(),
                Some(0xFF) => {
                    let mut next = byte()?;
                    while next == Some(0xFF) {
                        next = byte()?;
                    }
                    match next {
                        None => return cut(),
                        Some(0x00 | 0xD0..=0xD7) => {}
                        Some(m) => break m,
                    }
                }
                Some(_) => {}
            }
        };
        if marker == 0xD9 {
            return Ok(());
        }
        // A segment between scans (DHT, SOS, DQT, DRI, …): skip it by its length. The marker's
        // two bytes are already read, so read the length and the rest.
        let (Some(hi), Some(lo)) = (byte()?, byte()?) else {
            return cut();
        };
        let size = u16::from_be_bytes([hi, lo]);
        for _ in 2..size {
            if byte()?.is_none() {
                return cut();
            }
        }
    }
}
