//! The legacy layout (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles
//! (magic number, protocol version, system information, the object, the storage keys) followed by
//! each storage as its element count and raw bytes, which must match the pickle and fit in the
//! file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use super::hint::{truncated_hint, BIG_ENDIAN};
use super::input::Input;
use super::pickle::read_pickle;
use super::storage::{check_tensors, storage_bytes, storages_of};
use super::value::Value;

/// Reads and checks a legacy-layout file but its tensor data; returns the pickle's object tree.
pub(super) fn scan_legacy(file: File, file_len: u64) -> Result<Value, String> {
    let mut input = Input::new(BufReader::new(file), file_len, "the legacy header");
    // 1. The magic number, 2. the protocol version, 3. system information.
    read_pickle(&mut input)?;
    input.what = "the legacy protocol version".into();
    match read_pickle(&mut input)? {
        Value::Int(1001) => {}
        other => {
            return Err(format!("its legacy protocol version is {}, not 1001", other.describe()))
        }
    }
    input.what = "the legacy system information".into();
    if let Value::Dict(info) = read_pickle(&mut input)? {
        if let Some(Value::Bool(false)) = info.items.get("little_endian") {
            return Err(BIG_ENDIAN.into());
        }
    }
    // 4. The object, 5. the keys of the storages in the order their data follows.
    input.what = "the pickle".into();
    let root = read_pickle(&mut input)?;
    input.what = "the legacy storage list".into();
    let keys = match read_pickle(&mut input)? {
        Value::List(keys) => keys
            .items
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                other => Err(format!(
                    "its legacy storage list holds {} instead of a key",
                    other.describe()
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(format!("its legacy storage list is {}", other.describe())),
    };
    // 6. Each storage: its element count (u64) and its bytes.
    let storages = storages_of(&root)?;
    let mut reader = input.into_inner();
    let mut position = reader.stream_position().map_err(|e| e.to_string())?;
    for key in &keys {
        let Some((storage, user)) = storages.get(key) else {
            return Err(format!(
                "its legacy storage list names storage `{key}`, which no tensor uses: the reader cannot place the data \
                 that follows; {}",
                truncated_hint()
            ));
        };
        let mut count = [0u8; 8];
        if position.saturating_add(8) > file_len || reader.read_exact(&mut count).is_err() {
            return Err(format!(
                "storage `{key}` of tensor `{user}` should start at byte {position} but the file ends at byte \
                 {file_len}: {}",
                truncated_hint()
            ));
        }
        let count = u64::from_le_bytes(count);
        if count != storage.numel {
            return Err(format!(
                "storage `{key}` of tensor `{user}` claims {} elements in the pickle but {count} in the data section: {}",
                storage.numel,
                truncated_hint()
            ));
        }
        let bytes = storage_bytes(storage, user)?;
        let end = position.checked_add(8 + bytes).filter(|&end| end <= file_len).ok_or_else(|| {
            format!(
                "storage `{key}` of tensor `{user}` claims {count} × {} = {bytes} bytes from byte {} but the file ends \
                 at byte {file_len}: {}",
                storage.element_size,
                position + 8,
                truncated_hint()
            )
        })?;
        reader.seek(SeekFrom::Start(end)).map_err(|e| e.to_string())?;
        position = end;
    }
    if let Some((key, (_, user))) = storages.iter().find(|(k, _)| !keys.contains(k)) {
        return Err(format!(
            "storage `{key}` of tensor `{user}` is missing from the legacy storage list, so its data cannot be found: {}",
            truncated_hint()
        ));
    }
    check_tensors(&root)?;
    Ok(root)
}
