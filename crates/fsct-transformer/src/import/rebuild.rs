//! What a checkpoint's pickle may build: the allow-list of callables a weights file needs
//! (`torch._utils._rebuild_tensor{,_v2}`, `_rebuild_parameter`, `collections.OrderedDict`), what
//! each builds here, and the storages its persistent ids name. Everything else is refused, so
//! nothing from a checkpoint is ever run.

use std::rc::Rc;

use super::hint::truncated_hint;
use super::value::{Map, StorageRef, TensorRef, Value};

/// Callables a weights file may call, and what they do here.
pub(super) fn allowed(callable: &str) -> bool {
    matches!(
        callable,
        "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor"
            | "torch._utils._rebuild_parameter"
            | "collections.OrderedDict"
    )
}

/// The reason `callable` is refused: a torch object a state dict does not hold, or code.
pub(super) fn refused(callable: &str) -> String {
    if callable.starts_with("torch.") {
        format!(
            "its pickle builds `{callable}`, which a plain state dict does not contain (a whole model, or a tensor \
             subclass) and the reader does not support: in Python, save the weights alone with \
             torch.save(model.state_dict(), path)"
        )
    } else {
        format!(
            "refused: its pickle calls `{callable}` when loaded, i.e. it would run code or build arbitrary objects \
             in Python; the importer runs nothing and reads only tensors, numbers, strings and dicts (as \
             torch.load(weights_only=True) does). If the file is yours and trusted, load it in Python and save the \
             weights alone with torch.save(model.state_dict(), path)"
        )
    }
}

fn element_size(kind: &str) -> Option<u64> {
    Some(match kind {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        _ => return None,
    })
}

fn non_negative(value: &Value, what: &str) -> Result<u64, String> {
    match value {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        other => Err(format!(
            "{what} is {} instead of a non-negative int: {}",
            other.describe(),
            truncated_hint()
        )),
    }
}

/// `('storage', torch.FloatStorage, key, location, numel[, view_metadata])`.
pub(super) fn storage_from_id(id: Value) -> Result<StorageRef, String> {
    let Value::Tuple(id) = id else {
        return Err(format!(
            "a storage reference is {} instead of a tuple: {}",
            id.describe(),
            truncated_hint()
        ));
    };
    let items = &id.items;
    if items.len() < 5 || !matches!(&items[0], Value::Str(s) if s == "storage") {
        return Err(format!("a storage reference has an unexpected form: {}", truncated_hint()));
    }
    let kind = match &items[1] {
        Value::Global(g) => g.rsplit('.').next().unwrap_or_default().to_string(),
        Value::Str(s) => s.clone(),
        other => {
            return Err(format!(
                "a storage type is {} instead of a class: {}",
                other.describe(),
                truncated_hint()
            ));
        }
    };
    let element_size = element_size(&kind).ok_or_else(|| {
        format!(
            "it holds a `{kind}`, a tensor type the reader does not support: convert that tensor to float in Python"
        )
    })?;
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        other => {
            return Err(format!(
                "a storage key is {} instead of a string: {}",
                other.describe(),
                truncated_hint()
            ));
        }
    };
    let numel = non_negative(&items[4], &format!("the size of storage `{key}`"))?;
    if let Some(view) = items.get(5) {
        if !matches!(view, Value::None) {
            return Err(format!(
                "storage `{key}` is a view into another storage (PyTorch < 0.4), which the reader does not support: \
                 load and save the file again with a recent PyTorch"
            ));
        }
    }
    Ok(StorageRef { key, kind, element_size, numel })
}

/// An allow-listed callable applied to its arguments.
pub(super) fn call(name: &str, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        if name == "collections.OrderedDict" {
            if let Value::List(pairs) = args {
                return ordered_dict(pairs.items);
            }
        }
        return Err(format!(
            "`{name}` is called with {} instead of a tuple: {}",
            args.describe(),
            truncated_hint()
        ));
    };
    let mut args = args.items;
    match name {
        "collections.OrderedDict" => match args.pop() {
            None => Ok(Value::Dict(Map::default())),
            Some(Value::List(pairs)) if args.is_empty() => ordered_dict(pairs.items),
            Some(_) => Err(format!(
                "`OrderedDict` is called with unexpected arguments: {}",
                truncated_hint()
            )),
        },
        "torch._utils._rebuild_parameter" => match args.into_iter().next() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor),
            _ => Err(format!(
                "a parameter is rebuilt from something that is not a tensor: {}",
                truncated_hint()
            )),
        },
        _ => {
            // _rebuild_tensor(storage, offset, size, stride[, requires_grad, hooks, metadata])
            if args.len() < 4 {
                return Err(format!(
                    "`{name}` is called with {} arguments: {}",
                    args.len(),
                    truncated_hint()
                ));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!(
                    "a tensor is rebuilt from {} instead of a storage: {}",
                    args[0].describe(),
                    truncated_hint()
                ));
            };
            let what = format!("a dimension of a tensor in storage `{}`", storage.key);
            let dims = |v: &Value| -> Result<Vec<u64>, String> {
                match v {
                    Value::Tuple(t) => t.items.iter().map(|d| non_negative(d, &what)).collect(),
                    other => {
                        Err(format!("a tensor shape is {}: {}", other.describe(), truncated_hint()))
                    }
                }
            };
            let offset = non_negative(
                &args[1],
                &format!("the offset of a tensor in storage `{}`", storage.key),
            )?;
            let shape = dims(&args[2])?;
            let stride = dims(&args[3])?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "a tensor has shape {shape:?} but stride {stride:?}: {}",
                    truncated_hint()
                ));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: storage.clone(),
                offset,
                shape,
                stride,
            })))
        }
    }
}

fn ordered_dict(pairs: Vec<Value>) -> Result<Value, String> {
    let mut map = Map::default();
    for pair in pairs {
        if let Value::List(p) | Value::Tuple(p) = pair {
            let mut items = p.items.into_iter();
            if let (Some(Value::Str(key)), Some(value)) = (items.next(), items.next()) {
                map.insert(key, value)?;
            }
        }
    }
    Ok(Value::Dict(map))
}
