//! A metadata-only reading of a `torch.save` file, done before burn-store touches it.
//!
//! burn-store trusts what a file claims: a storage or tensor that claims more bytes than the file
//! holds is read as zeros, or makes it allocate the claimed size (an abort, not even a panic), or
//! overflows an integer (a panic). So the file is first read here without any tensor data: the
//! container (zip or legacy), every pickle — with the same opcodes burn-store supports, and only
//! the callables a weights file needs — and every storage and tensor it describes, checked
//! against the bytes really stored. What comes out is the object tree (dicts, numbers, strings,
//! tensor descriptions), which also gives the epoch and where the state dict sits.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

/// How `torch.save` laid the file out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointFormat {
    /// A zip archive (`data.pkl` plus one member per storage): PyTorch ≥ 1.6's default.
    #[default]
    Zip,
    /// The legacy stream of pickles followed by the raw storages: PyTorch < 1.6, or
    /// `torch.save(..., _use_new_zipfile_serialization=False)`.
    Legacy,
}

/// Containers nested deeper than this are refused (a crafted file could otherwise exhaust the
/// stack of any recursive reader, burn-store's included).
const MAX_DEPTH: u32 = 64;
/// Longest pickle line (GLOBAL names, INT text) accepted.
const MAX_LINE: usize = 4096;
/// Largest `data.pkl` read into memory.
const MAX_PICKLE: u64 = 1 << 30;

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

#[derive(Debug, Clone, Default)]
pub(crate) struct Seq {
    pub items: Vec<Value>,
    depth: u32,
    /// Values in the tree, this one included (what a copy costs).
    size: u64,
}

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

    fn size(&self) -> u64 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.size.max(1),
            Value::Dict(m) => m.size.max(1),
            _ => 1,
        }
    }

    fn describe(&self) -> String {
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

fn seq(items: Vec<Value>) -> Result<Seq, String> {
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

impl Map {
    fn insert(&mut self, key: String, value: Value) -> Result<(), String> {
        let depth = self.depth.max(value.depth() + 1);
        check_depth(depth)?;
        self.depth = depth;
        self.size = self.size.max(1).saturating_add(value.size());
        self.items.insert(key, value);
        Ok(())
    }
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
        return scan_zip(file, file_len);
    }
    if head.len() >= 15 && head[..15] == LEGACY_MAGIC {
        return scan_legacy(file, file_len);
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

fn truncated_hint() -> &'static str {
    "the file is truncated or damaged: copy or download it again"
}

// ---------------------------------------------------------------------------------------------
// Zip format

fn scan_zip(file: File, file_len: u64) -> Result<Scan, String> {
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
            return Err("it was saved on a big-endian machine, which the reader does not support: load and save it \
                        again on a little-endian one (x86, ARM)"
                .into());
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
    Ok(Scan { format: CheckpointFormat::Zip, root })
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

// ---------------------------------------------------------------------------------------------
// Legacy format

fn scan_legacy(file: File, file_len: u64) -> Result<Scan, String> {
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
            return Err("it was saved on a big-endian machine, which the reader does not support: load and save it \
                        again on a little-endian one (x86, ARM)"
                .into());
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
    Ok(Scan { format: CheckpointFormat::Legacy, root })
}

// ---------------------------------------------------------------------------------------------
// Storage and tensor checks

fn storage_bytes(storage: &StorageRef, user: &str) -> Result<u64, String> {
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
fn storages_of(root: &Value) -> Result<BTreeMap<String, (Rc<StorageRef>, String)>, String> {
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
fn check_tensors(root: &Value) -> Result<(), String> {
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

// ---------------------------------------------------------------------------------------------
// Pickle

/// A bounded byte source that knows its position, for messages and for the legacy data offset.
struct Input<R> {
    inner: R,
    position: u64,
    end: u64,
    what: String,
}

impl<R: BufRead> Input<R> {
    fn new(inner: R, end: u64, what: impl Into<String>) -> Self {
        Self { inner, position: 0, end, what: what.into() }
    }

    fn into_inner(self) -> R {
        self.inner
    }

    fn ended(&self) -> String {
        format!("{} ends early, at byte {}: {}", self.what, self.position, truncated_hint())
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if self.position == self.end {
            return Err(format!(
                "{} is cut off at byte {}: {}",
                self.what,
                self.position,
                truncated_hint()
            ));
        }
        if self.position.saturating_add(n) > self.end {
            return Err(format!(
                "{} claims a {n}-byte item at byte {} but only {} bytes follow: {}",
                self.what,
                self.position,
                self.end - self.position,
                truncated_hint()
            ));
        }
        let mut buffer = vec![0u8; n as usize];
        self.inner.read_exact(&mut buffer).map_err(|_| self.ended())?;
        self.position += n;
        Ok(buffer)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.bytes(N as u64)?;
        let mut array = [0u8; N];
        array.copy_from_slice(&bytes);
        Ok(array)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        loop {
            let b = self.byte()?;
            if b == b'\n' {
                break;
            }
            if line.len() >= MAX_LINE {
                return Err(format!(
                    "{} has a text line longer than {MAX_LINE} bytes at byte {}",
                    self.what, self.position
                ));
            }
            line.push(b);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| {
            format!("{} has a line that is not UTF-8 at byte {}", self.what, self.position)
        })
    }

    fn string(&mut self, n: u64) -> Result<String, String> {
        let at = self.position;
        String::from_utf8(self.bytes(n)?)
            .map_err(|_| format!("{} has a string that is not UTF-8 at byte {at}", self.what))
    }
}

/// Callables a weights file may call, and what they do here.
fn allowed(callable: &str) -> bool {
    matches!(
        callable,
        "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor"
            | "torch._utils._rebuild_parameter"
            | "collections.OrderedDict"
    )
}

fn refused(callable: &str) -> String {
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

fn read_pickle<R: BufRead>(input: &mut Input<R>) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let underflow = |input: &Input<R>| {
        format!(
            "{} is malformed (stack underflow at byte {}): {}",
            input.what,
            input.position,
            truncated_hint()
        )
    };
    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| underflow(input))?
        };
    }
    // The memo is copied by value, as burn-store does (Python shares it by reference): values
    // copied in and out are counted, so that a crafted pickle fetching a big container over and
    // over cannot make this (or burn-store) build a tree far larger than the file.
    let mut copied: u64 = 0;
    let budget = input.end.saturating_mul(16).saturating_add(1 << 20);
    loop {
        if copied > budget {
            return Err(format!(
                "{} copies the same containers over and over (more than {budget} values), which no checkpoint does: {}",
                input.what,
                truncated_hint()
            ));
        }
        let at = input.position;
        let op = input.byte()?;
        match op {
            0x80 => {
                let version = input.byte()?;
                if version > 5 {
                    return Err(format!(
                        "{} uses pickle protocol {version}, which does not exist",
                        input.what
                    ));
                }
            }
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => input.byte()? as u32,
                    b'r' => u32::from_le_bytes(input.array()?),
                    _ => memo.len() as u32,
                };
                let value = stack.last().ok_or_else(|| underflow(input))?;
                copied = copied.saturating_add(value.size());
                memo.insert(index, value.clone());
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    input.byte()? as u32
                } else {
                    u32::from_le_bytes(input.array()?)
                };
                let value = memo.get(&index).ok_or_else(|| {
                    format!(
                        "{} refers to memo entry {index} that was never stored: {}",
                        input.what,
                        truncated_hint()
                    )
                })?;
                copied = copied.saturating_add(value.size());
                stack.push(value.clone());
            }
            b')' => stack.push(Value::Tuple(Seq::default())),
            b']' => stack.push(Value::List(Seq::default())),
            b'}' => stack.push(Value::Dict(Map::default())),
            b'(' => stack.push(Value::Mark),
            b'X' => {
                let n = u32::from_le_bytes(input.array()?) as u64;
                stack.push(Value::Str(input.string(n)?));
            }
            b'U' => {
                let n = input.byte()? as u64;
                stack.push(Value::Str(input.string(n)?));
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(input.array()?) as i64)),
            b'K' => stack.push(Value::Int(input.byte()? as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(input.array()?) as i64)),
            b'I' => {
                let text = input.line()?;
                let value = text
                    .parse::<i64>()
                    .map_err(|_| format!("{} has a bad INT {text:?} at byte {at}", input.what))?;
                stack.push(Value::Int(value));
            }
            0x8a => {
                let n = input.byte()? as u64;
                let bytes = input.bytes(n)?;
                stack.push(long1(&bytes));
            }
            b'G' => {
                input.array::<8>()?;
                stack.push(Value::Float);
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b't' | b'l' => {
                let items = pop_to_mark(&mut stack, input)?;
                let items = seq(items)?;
                stack.push(if op == b't' { Value::Tuple(items) } else { Value::List(items) });
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(underflow(input));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(seq(items)?));
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop!()] } else { pop_to_mark(&mut stack, input)? };
                match stack.last_mut() {
                    Some(Value::List(list)) => {
                        let depth = items.iter().map(|v| v.depth() + 1).fold(list.depth, u32::max);
                        check_depth(depth)?;
                        list.depth = depth;
                        list.size = items
                            .iter()
                            .map(Value::size)
                            .fold(list.size.max(1), u64::saturating_add);
                        list.items.extend(items);
                    }
                    _ => {
                        return Err(format!(
                            "{} appends to something that is not a list at byte {at}",
                            input.what
                        ))
                    }
                }
            }
            b's' => {
                let value = pop!();
                let key = pop!();
                let Value::Str(key) = key else {
                    return Err(format!(
                        "{} has a dict key that is {}, not a string (at byte {at}); the reader supports string keys only",
                        input.what,
                        key.describe()
                    ));
                };
                match stack.last_mut() {
                    Some(Value::Dict(map)) => map.insert(key, value)?,
                    _ => {
                        return Err(format!(
                            "{} sets an item on something that is not a dict at byte {at}",
                            input.what
                        ));
                    }
                }
            }
            b'u' | b'd' => {
                let items = pop_to_mark(&mut stack, input)?;
                if items.len() % 2 != 0 {
                    return Err(format!(
                        "{} has a dict with an odd number of items at byte {at}",
                        input.what
                    ));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    let key = match key {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        other => {
                            return Err(format!(
                                "{} has a dict key that is {} at byte {at}; the reader supports string and int keys",
                                input.what,
                                other.describe()
                            ));
                        }
                    };
                    pairs.push((key, value));
                }
                if op == b'd' {
                    let mut map = Map::default();
                    for (key, value) in pairs {
                        map.insert(key, value)?;
                    }
                    stack.push(Value::Dict(map));
                } else {
                    match stack.last_mut() {
                        Some(Value::Dict(map)) => {
                            for (key, value) in pairs {
                                map.insert(key, value)?;
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{} sets items on something that is not a dict at byte {at}",
                                input.what
                            ));
                        }
                    }
                }
            }
            b'Q' => {
                let id = pop!();
                stack.push(Value::Storage(Rc::new(storage_from_id(id)?)));
            }
            b'R' => {
                let args = pop!();
                let callable = pop!();
                let Value::Global(name) = callable else {
                    return Err(format!(
                        "{} calls {}, which is not a function (at byte {at})",
                        input.what,
                        callable.describe()
                    ));
                };
                if !allowed(&name) {
                    return Err(refused(&name));
                }
                stack.push(call(&name, args)?);
            }
            0x81 => {
                let _args = pop!();
                let class = pop!();
                let name = match class {
                    Value::Global(name) => name,
                    other => other.describe(),
                };
                return Err(refused(&name));
            }
            b'b' => {
                let state = pop!();
                let object = pop!();
                stack.push(match (object, state) {
                    (Value::Dict(mut map), Value::Dict(update)) => {
                        for (key, value) in update.items {
                            map.insert(key, value)?;
                        }
                        Value::Dict(map)
                    }
                    (object @ Value::Dict(_), _) => object,
                    _ => Value::Opaque,
                });
            }
            b'.' => return stack.pop().ok_or_else(|| underflow(input)),
            0x8c | 0x8d | 0x8e | 0x93 | 0x95 => {
                return Err(format!(
                    "{} uses pickle protocol 4 or later (opcode 0x{op:02x} at byte {at}), which the reader does not \
                     support: save it with torch.save's default protocol (no `pickle_protocol` argument)",
                    input.what
                ));
            }
            _ => {
                return Err(format!(
                    "{} has pickle opcode 0x{op:02x} at byte {at}, which the reader does not support: {}",
                    input.what,
                    truncated_hint()
                ));
            }
        }
    }
}

fn long1(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let mut value: i64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value |= (b as i64) << (8 * i);
    }
    if let Some(&last) = bytes.last() {
        if bytes.len() < 8 && last & 0x80 != 0 {
            value -= 1i64 << (8 * bytes.len());
        }
    }
    Value::Int(value)
}

fn pop_to_mark<R>(stack: &mut Vec<Value>, input: &Input<R>) -> Result<Vec<Value>, String> {
    let mark = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| {
        format!(
            "{} is malformed (no MARK before byte {}): {}",
            input.what,
            input.position,
            truncated_hint()
        )
    })?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
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
fn storage_from_id(id: Value) -> Result<StorageRef, String> {
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
fn call(name: &str, args: Value) -> Result<Value, String> {
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
