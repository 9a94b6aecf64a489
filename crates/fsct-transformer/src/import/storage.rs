//! The checks of storages and tensors against what the file really stores: each storage's byte
//! count (which must fit in a u64), every storage a tensor uses (described once, consistently),
//! and each tensor's extent inside its storage.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::hint::truncated_hint;
use super::value::{visit, StorageRef, Value};

/// A storage's size in bytes; `user` names a tensor using it, for the message.
pub(super) fn storage_bytes(storage: &StorageRef, user: &str) -> Result<u64, String> {
    storage.numel.checked_mul(storage.element_size).ok_or_else(|| {
        format!(
            "storage `{}` of tensor `{user}` claims {} elements, more than any file holds: {}",
            storage.key,
            storage.numel,
            truncated_hint()
        )
    })
}

/// Every storage a tensor uses, with the name of one such tensor (for messages).
pub(super) fn storages_of(
    root: &Value,
) -> Result<BTreeMap<String, (Rc<StorageRef>, String)>, String> {
    let mut storages: BTreeMap<String, (Rc<StorageRef>, String)> = BTreeMap::new();
    let mut conflict = None;
    visit(root, &mut String::new(), &mut |name, value| {
        // Only storages behind tensors: burn-store locates legacy storages through their tensors.
        let Value::Tensor(tensor) = value else { return };
        let storage = &tensor.storage;
        match storages.get(&storage.key) {
            Some((known, _)) if known.kind != storage.kind || known.numel != storage.numel => {
                conflict.get_or_insert_with(|| {
                    format!(
                        "storage `{}` is described twice differently ({} × {} and {} × {}): {}",
                        storage.key,
                        known.numel,
                        known.kind,
                        storage.numel,
                        storage.kind,
                        truncated_hint()
                    )
                });
            }
            Some(_) => {}
            None => {
                storages.insert(storage.key.clone(), (storage.clone(), name.to_string()));
            }
        }
    });
    match conflict {
        Some(message) => Err(message),
        None => Ok(storages),
    }
}

/// Each tensor must lie inside its storage.
pub(super) fn check_tensors(root: &Value) -> Result<(), String> {
    let mut error = None;
    visit(root, &mut String::new(), &mut |name, value| {
        let Value::Tensor(t) = value else { return };
        if error.is_some() {
            return;
        }
        let extent = t.numel().and_then(|n| if n == 0 { Some(0) } else { t.offset.checked_add(n) });
        match extent {
            Some(end) if end <= t.storage.numel || t.numel() == Some(0) => {}
            _ => {
                error = Some(format!(
                    "tensor `{name}` of shape {:?} at offset {} claims elements up to {} of storage `{}`, which holds {}: {}",
                    t.shape,
                    t.offset,
                    extent.map_or("beyond 2^64".to_string(), |e| e.to_string()),
                    t.storage.key,
                    t.storage.numel,
                    truncated_hint()
                ));
            }
        }
    });
    error.map_or(Ok(()), Err)
}
