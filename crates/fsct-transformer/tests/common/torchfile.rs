//! Writes `torch.save` files by hand — zip and legacy layouts, pickle protocol 2 as torch.save
//! writes it — with whatever sizes they should *claim*, to test damaged and crafted files.

use std::io::Write;
use std::path::Path;

/// One tensor entry of a state dict, and the storage behind it.
#[derive(Clone)]
pub struct Entry {
    pub name: String,
    /// `FloatStorage`, `LongStorage`, …
    pub kind: &'static str,
    pub storage_key: String,
    /// The element count the pickle claims for the storage.
    pub numel: u64,
    pub offset: i64,
    pub shape: Vec<i64>,
    pub stride: Vec<i64>,
    /// The bytes actually stored.
    pub data: Vec<u8>,
    /// Legacy format: the element count written before the data (default: the bytes stored / 4).
    pub count_header: Option<u64>,
}

/// An honest f32 tensor, alone in its storage.
pub fn f32_entry(name: &str, storage_key: &str, values: &[f32], shape: &[i64]) -> Entry {
    let mut stride = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    Entry {
        name: name.into(),
        kind: "FloatStorage",
        storage_key: storage_key.into(),
        numel: values.len() as u64,
        offset: 0,
        shape: shape.to_vec(),
        stride,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        count_header: None,
    }
}

/// Pickle protocol 2, as torch.save writes it.
#[derive(Default)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    pub fn start() -> Self {
        Self(vec![0x80, 2])
    }
    pub fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.0.extend([b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.0.push(b'M');
            self.0.extend((v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.0.push(b'J');
            self.0.extend((v as i32).to_le_bytes());
        } else {
            self.0.extend([0x8a, 8]);
            self.0.extend(v.to_le_bytes());
        }
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }
    pub fn tuple(&mut self, values: &[i64]) -> &mut Self {
        self.op(b'(');
        for &v in values {
            self.int(v);
        }
        self.op(b't')
    }
    pub fn tensor(&mut self, e: &Entry, legacy: bool) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(').op(b'(');
        self.str("storage")
            .global("torch", e.kind)
            .str(&e.storage_key)
            .str("cpu")
            .int(e.numel as i64);
        if legacy {
            self.op(b'N');
        }
        self.op(b't').op(b'Q').int(e.offset).tuple(&e.shape).tuple(&e.stride).op(0x89);
        self.global("collections", "OrderedDict").op(b')').op(b'R').op(b't').op(b'R')
    }
    pub fn state_dict(&mut self, entries: &[Entry], legacy: bool) -> &mut Self {
        self.op(b'}').op(b'(');
        for e in entries {
            self.str(&e.name).tensor(e, legacy);
        }
        self.op(b'u')
    }
    pub fn stop(&mut self) -> Vec<u8> {
        self.op(b'.');
        std::mem::take(&mut self.0)
    }
}

/// The pickle of `entries` as a state dict, or as `{'epoch': epoch, 'state': state_dict}`.
pub fn main_pickle(entries: &[Entry], epoch: Option<i64>, legacy: bool) -> Vec<u8> {
    let mut p = Pickle::start();
    if let Some(epoch) = epoch {
        p.op(b'}').op(b'(').str("epoch").int(epoch).str("state");
        p.state_dict(entries, legacy).op(b'u');
    } else {
        p.state_dict(entries, legacy);
    }
    p.stop()
}

fn storages(entries: &[Entry]) -> Vec<&Entry> {
    let mut seen = Vec::<&Entry>::new();
    for e in entries {
        if !seen.iter().any(|s| s.storage_key == e.storage_key) {
            seen.push(e);
        }
    }
    seen
}

/// A zip-format file (as PyTorch ≥ 1.6 writes it) around a pickle and the stored bytes.
pub fn write_zip_with(path: &Path, pickle: &[u8], entries: &[Entry]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    for e in storages(entries) {
        zip.start_file(format!("archive/data/{}", e.storage_key), options).unwrap();
        zip.write_all(&e.data).unwrap();
    }
    zip.start_file("archive/version", options).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

pub fn write_zip(path: &Path, entries: &[Entry], epoch: Option<i64>) {
    write_zip_with(path, &main_pickle(entries, epoch, false), entries);
}

/// The legacy header: magic number, protocol version, system information.
pub fn legacy_header() -> Vec<u8> {
    let mut out = vec![
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
    ];
    out.extend(Pickle::start().int(1001).stop());
    let mut info = Pickle::start();
    info.op(b'}').op(b'(').str("protocol_version").int(1001).str("little_endian").op(0x88);
    info.str("type_sizes")
        .op(b'}')
        .op(b'(')
        .str("short")
        .int(2)
        .str("int")
        .int(4)
        .str("long")
        .int(4)
        .op(b'u');
    out.extend(info.op(b'u').stop());
    out
}

/// A legacy-format file (`_use_new_zipfile_serialization=False`) around a pickle.
pub fn write_legacy_with(path: &Path, pickle: &[u8], entries: &[Entry]) {
    let mut out = legacy_header();
    out.extend(pickle);
    let storages = storages(entries);
    let mut keys = Pickle::start();
    keys.op(b']').op(b'(');
    for e in &storages {
        keys.str(&e.storage_key);
    }
    out.extend(keys.op(b'e').stop());
    for e in storages {
        out.extend(e.count_header.unwrap_or(e.data.len() as u64 / 4).to_le_bytes());
        out.extend(&e.data);
    }
    std::fs::write(path, out).unwrap();
}

pub fn write_legacy(path: &Path, entries: &[Entry], epoch: Option<i64>) {
    write_legacy_with(path, &main_pickle(entries, epoch, true), entries);
}
