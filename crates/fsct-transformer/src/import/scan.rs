//! A metadata-only reading of a `torch.save` file, done before burn-store touches it.
//!
//! burn-store trusts what a file claims: a storage or tensor that claims more bytes than the file
//! holds is read as zeros, or makes it allocate the claimed size (an abort, not even a panic), or
//! overflows an integer (a panic). So the file is first read here without any tensor data: the
//! container (zip or legacy), every pickle — with the same opcodes burn-store supports, and only
//! the callables a weights file needs — and every storage and tensor it describes, checked
//! against the bytes really stored. What comes out is the object tree (dicts, numbers, strings,
//! tensor descriptions), which also gives the epoch and where the state dict sits.
//!
//! This file tells the layouts apart and dispatches; the pieces live in `zip_layout.rs` and
//! `legacy_layout.rs` (the containers), `pickle.rs` with `input.rs` and `rebuild.rs` (the pickle
//! machine and its allow-list), `storage.rs` (the extent checks) and `value.rs` (the tree).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::legacy_layout::scan_legacy;
use super::value::Value;
use super::zip_layout::scan_zip;

/// How `torch.save` laid the file out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointFormat {
    /// A zip archive (`data.pkl` plus one member per storage): PyTorch ≥ 1.6's default.
    #[default]
    Zip,
    /// The legacy stream of pickles followed by the raw storages: PyTorch < 1.6, or
    /// `torch.save(..., _use_new_zipfile_serialization=False)`.
    Legacy,
    /// A safetensors file (what `fsct-train export` writes, or `safetensors.torch.save_file`).
    Safetensors,
}

/// What the scan found.
pub(crate) struct Scan {
    pub format: CheckpointFormat,
    pub root: Value,
}

/// Reads and checks everything but the tensor data. The error is the reason, for
/// `ImportError::Read`.
pub(crate) fn scan(path: &Path) -> Result<Scan, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let file_len = file.metadata().map_err(|e| format!("cannot read its size: {e}"))?.len();
    let mut head = [0u8; 512];
    let head_len = read_up_to(&mut file, &mut head).map_err(|e| format!("cannot read it: {e}"))?;
    let head = &head[..head_len];
    file.seek(SeekFrom::Start(0)).map_err(|e| format!("cannot read it: {e}"))?;

    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return scan_zip(file, file_len).map(|root| Scan { format: CheckpointFormat::Zip, root });
    }
    if head.len() >= 15 && head[..15] == LEGACY_MAGIC {
        return scan_legacy(file, file_len)
            .map(|root| Scan { format: CheckpointFormat::Legacy, root });
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Err("it is a tar-format PyTorch file (torch < 0.4), which this importer does not read: load it in \
                    Python and save it again with torch.save"
            .into());
    }
    if file_len == 0 {
        return Err("the file is empty".into());
    }
    Err(format!(
        "it is neither a zip archive (torch.save since PyTorch 1.6) nor a legacy torch.save file \
         (it starts with {:02x?}): check that it is a checkpoint written by torch.save, and that the copy is complete",
        &head[..head.len().min(8)]
    ))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// `PROTO 2, LONG1 10 bytes 0x1950a86a20f9469cfc6c, STOP`: what burn-store recognises.
const LEGACY_MAGIC: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
