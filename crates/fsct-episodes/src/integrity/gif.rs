//! GIF: the blocks walked up to the trailer byte. See the parent module for why.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use super::read::{corrupt, truncated, Problem};

pub(super) fn gif<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(), Problem> {
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
