//! The zip layout (PyTorch ≥ 1.6): `data.pkl` plus one `data/{key}` member per storage. Every
//! member must open, each storage's member must hold what the pickle claims, and is read through
//! once (CRC-checked by the zip reader).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};

use super::hint::{truncated_hint, BIG_ENDIAN};
use super::input::Input;
use super::pickle::read_pickle;
use super::storage::{check_tensors, storage_bytes, storages_of};
use super::value::Value;

/// Largest `data.pkl` read into memory.
const MAX_PICKLE: u64 = 1 << 30;

/// Reads and checks a zip-layout file but its tensor data; returns the pickle's object tree.
pub(super) fn scan_zip(file: File, file_len: u64) -> Result<Value, String> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("it is a damaged zip archive ({e}): {}", truncated_hint()))?;
    // Every member must open, as burn-store opens them all.
    let mut names = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let member = archive
            .by_index(i)
            .map_err(|e| format!("zip member #{i} is damaged ({e}): {}", truncated_hint()))?;
        names.push(member.name().to_string());
    }
    // The pickle, where burn-store looks for it.
    let pickle_name = ["data.pkl", "archive/data.pkl"]
        .into_iter()
        .find(|n| names.iter().any(|m| m == n))
        .map(str::to_string)
        .or_else(|| names.iter().find(|n| n.ends_with("data.pkl")).cloned())
        .ok_or("it is a zip archive without a `data.pkl`, so not a torch.save file")?;
    let prefix = pickle_name.strip_suffix("data.pkl").unwrap_or_default().to_string();
    let pickle = {
        let mut member =
            archive.by_name(&pickle_name).map_err(|e| format!("`{pickle_name}`: {e}"))?;
        if member.size() > MAX_PICKLE {
            return Err(format!(
                "`{pickle_name}` claims {} bytes, more than any checkpoint's pickle",
                member.size()
            ));
        }
        let mut bytes = Vec::new();
        member
            .by_ref()
            .take(MAX_PICKLE)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("`{pickle_name}` is damaged ({e}): {}", truncated_hint()))?;
        bytes
    };
    if let Ok(mut member) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        let _ = member.by_ref().take(16).read_to_string(&mut order);
        if order.trim() == "big" {
            return Err(BIG_ENDIAN.into());
        }
    }
    let mut input = Input::new(pickle.as_slice(), pickle.len() as u64, format!("`{pickle_name}`"));
    let root = read_pickle(&mut input)?;

    // Each storage's data member, resolved as burn-store resolves it, must hold what the pickle
    // claims, and must read back whole (CRC-checked by the zip reader).
    let storages = storages_of(&root)?;
    let data_files: Vec<&String> = names
        .iter()
        .filter(|n| {
            (n.starts_with("data/") || n.contains("/data/"))
                && !n.ends_with(".pkl")
                && !n.ends_with('/')
        })
        .collect();
    let mut member_sizes: HashMap<String, u64> = HashMap::new();
    for (key, (storage, user)) in &storages {
        let exact = format!("data/{key}");
        let member = if names.contains(&exact) {
            exact
        } else {
            data_files
                .iter()
                .find(|n| n.ends_with(&format!("/data/{key}")) || (n.contains("/data/") && n.rsplit('/').next() == Some(key)))
                .map(|n| n.to_string())
                .ok_or_else(|| {
                    format!(
                        "storage `{key}` of tensor `{user}` has no data in the archive (no member `{prefix}data/{key}`): {}",
                        truncated_hint()
                    )
                })?
        };
        let size = match member_sizes.get(&member) {
            Some(&size) => size,
            None => {
                let size = check_member(&mut archive, &member, file_len)?;
                member_sizes.insert(member.clone(), size);
                size
            }
        };
        let claimed = storage_bytes(storage, user)?;
        if claimed > size {
            return Err(format!(
                "storage `{key}` of tensor `{user}` claims {} × {} = {claimed} bytes but its member `{member}` holds \
                 {size}: {}",
                storage.numel,
                storage.element_size,
                truncated_hint()
            ));
        }
    }
    check_tensors(&root)?;
    Ok(root)
}

/// Reads a zip member through, returning its size once it has been checked whole.
fn check_member<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    file_len: u64,
) -> Result<u64, String> {
    let mut member = archive
        .by_name(name)
        .map_err(|e| format!("zip member `{name}` is damaged ({e}): {}", truncated_hint()))?;
    let (size, packed) = (member.size(), member.compressed_size());
    let start = member.data_start().unwrap_or(u64::MAX);
    if start.checked_add(packed).is_none_or(|end| end > file_len) {
        return Err(format!(
            "zip member `{name}` claims {packed} bytes from offset {start} but the file ends at byte {file_len}: {}",
            truncated_hint()
        ));
    }
    let stored = member.compression() == zip::CompressionMethod::Stored;
    // Deflate expands at most ~1032:1; anything claiming more is a damaged or crafted header.
    let plausible = if stored {
        size == packed
    } else {
        size <= packed.saturating_mul(1100).saturating_add(1 << 16)
    };
    if !plausible {
        return Err(format!(
            "zip member `{name}` claims {size} bytes from {packed} stored ones ({:?}): {}",
            member.compression(),
            truncated_hint()
        ));
    }
    let mut buffer = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        match member.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                read += n as u64;
                if read > size {
                    break;
                }
            }
            Err(e) => {
                return Err(format!("zip member `{name}` is damaged ({e}): {}", truncated_hint()))
            }
        }
    }
    if read != size {
        return Err(format!(
            "zip member `{name}` claims {size} bytes but holds {read}: {}",
            truncated_hint()
        ));
    }
    Ok(size)
}
