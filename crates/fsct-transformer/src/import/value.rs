//! The object tree a checkpoint's pickle describes, without any tensor data: dicts, lists,
//! numbers, strings, and the storages and tensors as the pickle describes them. Containers track
//! their nesting depth and size so that a crafted file cannot nest or copy its way past the limits
//! (see `pickle.rs`).

use std::collections::BTreeMap;
use std::rc::Rc;

/// Containers nested deeper than this are refused (a crafted file could otherwise exhaust the
/// stack of any recursive reader, burn-store's included).
const MAX_DEPTH: u32 = 64;

/// A storage as a pickle describes it: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Debug)]
pub(crate) struct StorageRef {
    pub key: String,
    /// `FloatStorage`, `LongStorage`, …
    pub kind: String,
    pub element_size: u64,
    pub numel: u64,
}

impl StorageRef {
    pub fn is_float(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "FloatStorage" | "DoubleStorage" | "HalfStorage" | "BFloat16Storage"
        )
    }
}

/// A tensor as `_rebuild_tensor(_v2)` describes it.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl TensorRef {
    /// Element count, if it fits in a u64.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Whether the elements lie row-major and contiguous from `offset` (burn-store reads them so;
    /// strides of size-1 dimensions do not matter).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1u64;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }
}

/// A pickled value, without tensor data.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (the legacy format's magic number).
    BigInt,
    Float,
    Str(String),
    Tuple(Seq),
    List(Seq),
    Dict(Map),
    /// A `GLOBAL` reference `module.name`, never called unless allow-listed.
    Global(String),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// The result of `BUILD` on something that is not a dict (burn-store keeps it opaque too).
    Opaque,
    /// The pickle `MARK`.
    Mark,
}

/// A tuple's or a list's items.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seq {
    pub items: Vec<Value>,
    depth: u32,
    /// Values in the tree, this one included (what a copy costs).
    size: u64,
}

/// A dict's items, by string key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Map {
    pub items: BTreeMap<String, Value>,
    depth: u32,
    size: u64,
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(m) => m.depth,
            _ => 0,
        }
    }

    pub(super) fn size(&self) -> u64 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.size.max(1),
            Value::Dict(m) => m.size.max(1),
            _ => 1,
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(i) => i.to_string(),
            Value::BigInt => "an int wider than 64 bits".into(),
            Value::Float => "a float".into(),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("`{g}`"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Opaque => "an object".into(),
            Value::Mark => "a mark".into(),
        }
    }
}

/// A tuple or list of `items`, refused if it nests too deep.
pub(super) fn seq(items: Vec<Value>) -> Result<Seq, String> {
    let depth = items.iter().map(|v| v.depth() + 1).max().unwrap_or(1);
    check_depth(depth)?;
    let size = items.iter().map(Value::size).fold(1u64, u64::saturating_add);
    Ok(Seq { items, depth, size })
}

fn check_depth(depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("its pickle nests containers more than {MAX_DEPTH} levels deep, which no state dict does"));
    }
    Ok(())
}

impl Seq {
    /// Appends `items` (the pickle's `APPEND`, `APPENDS`), refused if the list would nest too deep.
    pub(super) fn extend(&mut self, items: Vec<Value>) -> Result<(), String> {
        let depth = items.iter().map(|v| v.depth() + 1).fold(self.depth, u32::max);
        check_depth(depth)?;
        self.depth = depth;
        self.size = items.iter().map(Value::size).fold(self.size.max(1), u64::saturating_add);
        self.items.extend(items);
        Ok(())
    }
}

impl Map {
    /// Sets `key` (the pickle's `SETITEM`, `SETITEMS`, `BUILD`), refused if the dict would nest
    /// too deep.
    pub(super) fn insert(&mut self, key: String, value: Value) -> Result<(), String> {
        let depth = self.depth.max(value.depth() + 1);
        check_depth(depth)?;
        self.depth = depth;
        self.size = self.size.max(1).saturating_add(value.size());
        self.items.insert(key, value);
        Ok(())
    }
}

/// Calls `f` on every value with its path (`a.b` through dicts, `a[0]` through lists and tuples).
pub(crate) fn visit(value: &Value, path: &mut String, f: &mut dyn FnMut(&str, &Value)) {
    f(path, value);
    let len = path.len();
    match value {
        Value::Dict(map) => {
            for (key, child) in &map.items {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                visit(child, path, f);
                path.truncate(len);
            }
        }
        Value::List(s) | Value::Tuple(s) => {
            for (i, child) in s.items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                visit(child, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
