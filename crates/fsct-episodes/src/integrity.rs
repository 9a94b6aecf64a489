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

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// How many bytes from the end are searched for an end marker before walking the file.
const TAIL: u64 = 8 * 1024;

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

enum Problem {
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

fn io_reason(e: io::Error) -> String {
    format!("cannot read the file: {e}")
}

fn truncated<T>(what: impl Into<String>) -> Result<T, Problem> {
    Err(Problem::Truncated(what.into()))
}

fn corrupt<T>(what: impl Into<String>) -> Result<T, Problem> {
    Err(Problem::Corrupt(what.into()))
}

/// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
fn read_at<R: Read + Seek>(reader: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
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
fn bytes_at<const N: usize, R: Read + Seek>(
    reader: &mut R,
    offset: u64,
) -> Result<Option<[u8; N]>, Problem> {
    let mut buf = [0u8; N];
    Ok((read_at(reader, offset, &mut buf)? == N).then_some(buf))
}

/// The last `TAIL` bytes at or after `from`, and the offset of the first of them.
fn tail<R: Read + Seek>(reader: &mut R, len: u64, from: u64) -> Result<(u64, Vec<u8>), Problem> {
    let start = len.saturating_sub(TAIL).max(from).min(len);
    let mut buf = vec![0u8; (len - start) as usize];
    let n = read_at(reader, start, &mut buf)?;
    buf.truncate(n);
    Ok((start, buf))
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// JPEG

fn jpeg<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
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

// ---------------------------------------------------------------------------------------------
// PNG

const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

fn png<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
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

// ---------------------------------------------------------------------------------------------
// GIF

fn gif<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
    reader.seek(SeekFrom::Start(0))?;
    let mut input = BufReader::with_capacity(1 << 16, reader.take(len));
    let cut = || truncated("the GIF ends before its trailer (3B)");
    let mut header = [0u8; 13];
    if read_full(&mut input, &mut header)? < 13 {
        return cut();
    }
    if header[10] & 0x80 != 0 {
        let table = 3 * (2usize << (header[10] & 7));
        if !skip(&mut input, table)? {
            return cut();
        }
    }
    loop {
        let mut kind = [0u8; 1];
        if read_full(&mut input, &mut kind)? == 0 {
            return cut();
        }
        match kind[0] {
            0x3B => return Ok(()),
            0x21 => {
                // Extension: label, then sub-blocks.
                if !skip(&mut input, 1)? || !skip_sub_blocks(&mut input)? {
                    return cut();
                }
            }
            0x2C => {
                let mut descriptor = [0u8; 9];
                if read_full(&mut input, &mut descriptor)? < 9 {
                    return cut();
                }
                if descriptor[8] & 0x80 != 0 {
                    let table = 3 * (2usize << (descriptor[8] & 7));
                    if !skip(&mut input, table)? {
                        return cut();
                    }
                }
                // LZW minimum code size, then the image data's sub-blocks.
                if !skip(&mut input, 1)? || !skip_sub_blocks(&mut input)? {
                    return cut();
                }
            }
            other => return corrupt(format!("unknown GIF block type {other:02X}")),
        }
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Skips `n` bytes; false when the input ends first.
fn skip(input: &mut impl BufRead, mut n: usize) -> io::Result<bool> {
    while n > 0 {
        let available = input.fill_buf()?.len();
        if available == 0 {
            return Ok(false);
        }
        let step = available.min(n);
        input.consume(step);
        n -= step;
    }
    Ok(true)
}

/// Skips GIF sub-blocks up to and including the empty one; false when the input ends first.
fn skip_sub_blocks(input: &mut impl BufRead) -> io::Result<bool> {
    loop {
        let mut size = [0u8; 1];
        if read_full(input, &mut size)? == 0 {
            return Ok(false);
        }
        if size[0] == 0 {
            return Ok(true);
        }
        if !skip(input, usize::from(size[0]))? {
            return Ok(false);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebP

fn webp<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
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

// ---------------------------------------------------------------------------------------------
// BMP

fn bmp<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
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

// ---------------------------------------------------------------------------------------------
// TIFF

const STRIP_OFFSETS: u16 = 273;
const STRIP_BYTE_COUNTS: u16 = 279;
const TILE_OFFSETS: u16 = 324;
const TILE_BYTE_COUNTS: u16 = 325;

fn tiff<R: Read + Seek>(reader: &mut R, len: u64, head: &[u8]) -> Result<(), Problem> {
    if head.len() < 8 {
        return truncated("the TIFF ends inside its header");
    }
    let little = head[0] == b'I';
    if head[1] != head[0] {
        return Ok(()); // not TIFF after all: leave it to the decoder
    }
    let t = Tiff { little };
    let magic = t.u16(&head[2..4]);
    let (big, first) = match magic {
        42 => (false, u64::from(t.u32(&head[4..8]))),
        43 => {
            let Some(offset) = bytes_at::<8, _>(reader, 8)? else {
                return truncated("the BigTIFF ends inside its header");
            };
            (true, t.u64(&offset))
        }
        _ => return Ok(()),
    };
    let (count_size, entry_size, offset_size) = if big { (8, 20, 8) } else { (2, 12, 4) };
    let mut ifd = first;
    let mut seen = std::collections::HashSet::new();
    let mut index = 0;
    while ifd != 0 {
        if !seen.insert(ifd) || seen.len() > 4096 {
            return corrupt("the TIFF's IFD chain loops");
        }
        let mut count = [0u8; 8];
        if ifd.saturating_add(count_size) > len
            || read_at(reader, ifd, &mut count[..count_size as usize])? < count_size as usize
        {
            return truncated(format!("IFD {index} at byte {ifd} lies past the end"));
        }
        let count = if big { t.u64(&count) } else { u64::from(t.u16(&count[..2])) };
        let entries_end =
            ifd.saturating_add(count_size).saturating_add(count.saturating_mul(entry_size));
        if entries_end.saturating_add(offset_size) > len {
            return truncated(format!("IFD {index} at byte {ifd} runs past the end"));
        }
        let mut entries = vec![0u8; (count * entry_size) as usize];
        read_at(reader, ifd + count_size, &mut entries)?;
        let mut arrays: [Option<Vec<u64>>; 4] = Default::default();
        for entry in entries.chunks_exact(entry_size as usize) {
            let tag = t.u16(&entry[..2]);
            t.check_value(len, entry, big, tag)?;
            let slot = match tag {
                STRIP_OFFSETS => 0,
                STRIP_BYTE_COUNTS => 1,
                TILE_OFFSETS => 2,
                TILE_BYTE_COUNTS => 3,
                _ => continue,
            };
            arrays[slot] = Some(t.array(reader, len, entry, big)?);
        }
        let [strip_offsets, strip_counts, tile_offsets, tile_counts] = arrays;
        for (offsets, counts, what) in
            [(strip_offsets, strip_counts, "strip"), (tile_offsets, tile_counts, "tile")]
        {
            let Some(offsets) = offsets else { continue };
            let counts = counts.unwrap_or_default();
            for (i, &offset) in offsets.iter().enumerate() {
                let size = counts.get(i).copied().unwrap_or(0);
                if offset.saturating_add(size) > len || (size == 0 && offset > len) {
                    return truncated(format!(
                        "{what} {i} of IFD {index} (bytes {offset}..{}) lies past the end",
                        offset.saturating_add(size)
                    ));
                }
            }
        }
        let mut next = [0u8; 8];
        read_at(reader, entries_end, &mut next[..offset_size as usize])?;
        ifd = if big { t.u64(&next) } else { u64::from(t.u32(&next[..4])) };
        index += 1;
    }
    Ok(())
}

struct Tiff {
    little: bool,
}

impl Tiff {
    fn u16(&self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    }

    /// An entry's value, when it does not fit in the entry, must lie inside the file.
    fn check_value(&self, len: u64, entry: &[u8], big: bool, tag: u16) -> Result<(), Problem> {
        let size: u64 = match self.u16(&entry[2..4]) {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 | 17 | 18 => 8,
            _ => return Ok(()), // unknown types are ignored, as the TIFF spec asks
        };
        let (count, value) = if big {
            (self.u64(&entry[4..12]), &entry[12..20])
        } else {
            (u64::from(self.u32(&entry[4..8])), &entry[8..12])
        };
        let bytes = count.saturating_mul(size);
        if bytes <= value.len() as u64 {
            return Ok(());
        }
        let at = if big { self.u64(value) } else { u64::from(self.u32(value)) };
        if at.saturating_add(bytes) > len {
            return truncated(format!(
                "the value of TIFF tag {tag} (bytes {at}..{}) lies past the end",
                at.saturating_add(bytes)
            ));
        }
        Ok(())
    }

    /// The values of an offset or byte-count entry (SHORT, LONG or LONG8), inline or at the
    /// offset the entry gives, which must lie inside the file.
    fn array<R: Read + Seek>(
        &self,
        reader: &mut R,
        len: u64,
        entry: &[u8],
        big: bool,
    ) -> Result<Vec<u64>, Problem> {
        let kind = self.u16(&entry[2..4]);
        let (count, value) = if big {
            (self.u64(&entry[4..12]), &entry[12..20])
        } else {
            (u64::from(self.u32(&entry[4..8])), &entry[8..12])
        };
        let size = match kind {
            3 => 2,
            4 | 13 => 4,
            16 | 18 => 8,
            _ => return corrupt(format!("a TIFF offset entry has type {kind}")),
        };
        let bytes = count.checked_mul(size).filter(|&b| b <= len);
        let Some(bytes) = bytes else {
            return truncated(format!("a TIFF entry lists {count} offsets"));
        };
        let data = if bytes <= value.len() as u64 {
            value[..bytes as usize].to_vec()
        } else {
            let at = if big { self.u64(value) } else { u64::from(self.u32(value)) };
            if at.saturating_add(bytes) > len {
                return truncated(format!("a TIFF offset table at byte {at} lies past the end"));
            }
            let mut data = vec![0u8; bytes as usize];
            read_at(reader, at, &mut data)?;
            data
        };
        Ok(data
            .chunks_exact(size as usize)
            .map(|b| match size {
                2 => u64::from(self.u16(b)),
                4 => u64::from(self.u32(b)),
                _ => self.u64(b),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, RgbImage};
    use std::io::Cursor;

    /// A noisy image (so compressed formats do not shrink it to a few bytes).
    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = (x * 7919 + y * 104_729).wrapping_mul(2_654_435_761) >> 7;
            image::Rgb([v as u8, (v >> 8) as u8, (x * 4 + y) as u8])
        })
    }

    fn encode(format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        picture(64, 48).write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        check_complete(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    const FORMATS: [ImageFormat; 6] = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::WebP,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
    ];

    #[test]
    fn every_format_whole_passes_and_cut_anywhere_fails() {
        for format in FORMATS {
            let bytes = encode(format);
            check(&bytes).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            // Every cut point (a sample of them for speed), the middle included.
            let step = (bytes.len() / 97).max(1);
            let cuts = (16..bytes.len()).step_by(step).chain([bytes.len() / 2, bytes.len() - 1]);
            for cut in cuts {
                let err = check(&bytes[..cut]).err();
                let err = err
                    .unwrap_or_else(|| panic!("{format:?} cut at {cut} of {} passed", bytes.len()));
                assert!(err.contains("truncated") || err.contains("corrupt"), "{format:?}: {err}");
            }
        }
    }

    #[test]
    fn a_jpeg_cut_in_half_decodes_but_is_caught() {
        let bytes = encode(ImageFormat::Jpeg);
        let half = &bytes[..bytes.len() / 2];
        // The reason for this check: the decoder fills in the missing half.
        assert!(image::load_from_memory(half).is_ok(), "the decoder accepts it");
        let err = check(half).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(err.contains("end-of-image marker"), "{err}");
    }

    /// APP1 (EXIF) segment holding a complete little JPEG, inserted after SOI.
    fn with_thumbnail(jpeg: &[u8]) -> Vec<u8> {
        let mut thumb = Vec::new();
        RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
            .write_to(&mut Cursor::new(&mut thumb), ImageFormat::Jpeg)
            .unwrap();
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&thumb); // its own SOS … EOI
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn a_jpeg_thumbnail_does_not_count_as_the_images_end() {
        let bytes = with_thumbnail(&encode(ImageFormat::Jpeg));
        check(&bytes).unwrap();
        image::load_from_memory(&bytes).unwrap();
        // Cut just after the thumbnail's EOI, and in the middle of the image: both fail although
        // the thumbnail holds an SOS followed by an EOI.
        let thumb_end = rfind(&bytes[..bytes.len() - 2], &[0xFF, 0xD9]).unwrap();
        let err = check(&bytes[..thumb_end + 40]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = check(&bytes[..bytes.len() * 2 / 3]).unwrap_err();
        assert!(err.contains("end-of-image marker"), "{err}");
    }

    #[test]
    fn trailing_bytes_after_the_end_are_allowed() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp] {
            for extra in [16usize, 200_000] {
                let mut bytes = encode(format);
                bytes.extend(std::iter::repeat_n(0u8, extra));
                check(&bytes).unwrap_or_else(|e| panic!("{format:?} + {extra} zeros: {e}"));
            }
        }
        // A big trailer after a truncated JPEG (no EOI at all) still fails, via the scan walk.
        let bytes = encode(ImageFormat::Jpeg);
        let mut cut = bytes[..bytes.len() / 2].to_vec();
        cut.extend(std::iter::repeat_n(0u8, 200_000));
        let err = check(&cut).unwrap_err();
        assert!(err.contains("end-of-image marker"), "{err}");
        // And a PNG whose IEND is far from the end is found by walking the chunks.
        let mut png = encode(ImageFormat::Png);
        png.extend(std::iter::repeat_n(7u8, 100_000));
        check(&png).unwrap();
    }

    #[test]
    fn a_jpeg_with_a_large_trailer_is_walked_to_its_end() {
        // The scan walk on a complete JPEG with more than the searched tail after its EOI: the
        // entropy-coded data is crossed up to EOI.
        let mut bytes = with_thumbnail(&encode(ImageFormat::Jpeg));
        bytes.extend(std::iter::repeat_n(0xFFu8, 100_000));
        check(&bytes).unwrap();
    }

    #[test]
    fn empty_and_unknown_files() {
        assert_eq!(check(b"").unwrap_err(), "the file is empty");
        check(b"plain text, not an image format this check knows").unwrap();
        let err = check(&[0xFF, 0xD8, 0xFF]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Damaged headers (random bytes overwritten, then a random cut) never panic the check,
        /// whatever sizes and offsets they claim.
        #[test]
        fn damaged_files_never_panic(
            format in 0..FORMATS.len(),
            flips in proptest::collection::vec((0..64usize, proptest::prelude::any::<u8>()), 1..8),
            keep in 0.0..1.0f64,
        ) {
            let mut bytes = encode(FORMATS[format]);
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(((bytes.len() as f64) * keep) as usize + 1);
            let _ = check(&bytes);
        }
    }
}
