//! TIFF and BigTIFF: every IFD and the strips or tiles it points to inside the file. See the parent module for why.

use std::io::{Read, Seek};

use super::read::{bytes_at, corrupt, read_at, truncated, Problem};

const STRIP_OFFSETS: u16 = 273;
const STRIP_BYTE_COUNTS: u16 = 279;
const TILE_OFFSETS: u16 = 324;
const TILE_BYTE_COUNTS: u16 = 325;

pub(super) fn tiff<R: Read + Seek>(reader: &mut R, len: u64, head: &[u8]) -> Result<(), Problem> {
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
