use super::*;
use crate::test_util::{save, solid};
use proptest::prelude::*;
use serde_json::{json, Value};

/// What is done to a valid split before it is written.
#[derive(Debug, Clone)]
enum Edit {
    DropKey(usize),
    RenameKey(usize, String),
    Retype(usize, Value),
    EmptyList(usize),
    Label(usize, i64),
    LabelValue(usize, Value),
    Name(usize, String),
    ExtraKey(String, Value),
}

const KEYS: [&str; 3] = ["label_names", "image_names", "image_labels"];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..3usize).prop_map(Edit::DropKey),
        (0..3usize, "[a-z_]{0,12}").prop_map(|(k, n)| Edit::RenameKey(k, n)),
        (0..3usize, value()).prop_map(|(k, v)| Edit::Retype(k, v)),
        (0..3usize).prop_map(Edit::EmptyList),
        (0..6usize, prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -3..100i64])
            .prop_map(|(i, l)| Edit::Label(i, l)),
        (0..6usize, value()).prop_map(|(i, v)| Edit::LabelValue(i, v)),
        (
            0..6usize,
            prop_oneof![
                Just(String::new()),
                Just("/".to_string()),
                Just("..".to_string()),
                Just("a\0b.png".to_string()),
                Just("img/0.png".to_string()),
                Just("./img/1.png".to_string()),
                ".{0,12}",
            ]
        )
            .prop_map(|(i, n)| Edit::Name(i, n)),
        ("[a-z]{1,6}", value()).prop_map(|(k, v)| Edit::ExtraKey(k, v)),
    ]
}

/// What is done to the bytes after the edits.
#[derive(Debug, Clone)]
enum Bytes {
    Keep,
    Bom,
    DoubleBom,
    Utf16Bom,
    Truncate(usize),
    Insert(usize, u8),
    Flip(usize, u8),
}

fn bytes_edit() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => Just(Bytes::Keep),
        1 => Just(Bytes::Bom),
        1 => Just(Bytes::DoubleBom),
        1 => Just(Bytes::Utf16Bom),
        2 => any::<usize>().prop_map(Bytes::Truncate),
        2 => (any::<usize>(), 0x80..=0xFFu8).prop_map(|(i, b)| Bytes::Insert(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Bytes::Flip(i, b)),
    ]
}

fn apply(split: &mut Value, edit: &Edit) {
    let map = split.as_object_mut().unwrap();
    match edit {
        Edit::DropKey(k) => {
            map.remove(KEYS[*k]);
        }
        Edit::RenameKey(k, name) => {
            if let Some(v) = map.remove(KEYS[*k]) {
                map.insert(name.clone(), v);
            }
        }
        Edit::Retype(k, v) => {
            map.insert(KEYS[*k].to_string(), v.clone());
        }
        Edit::EmptyList(k) => {
            map.insert(KEYS[*k].to_string(), json!([]));
        }
        Edit::Label(i, l) => set(map, "image_labels", *i, json!(l)),
        Edit::LabelValue(i, v) => set(map, "image_labels", *i, v.clone()),
        Edit::Name(i, n) => set(map, "image_names", *i, json!(n)),
        Edit::ExtraKey(k, v) => {
            map.insert(k.clone(), v.clone());
        }
    }
}

fn set(map: &mut serde_json::Map<String, Value>, key: &str, i: usize, v: Value) {
    if let Some(Value::Array(list)) = map.get_mut(key) {
        if !list.is_empty() {
            let n = list.len();
            list[i % n] = v;
        }
    }
}

fn mutate_bytes(mut bytes: Vec<u8>, how: &Bytes) -> Vec<u8> {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match how {
        Bytes::Keep => {}
        Bytes::Bom => bytes.splice(0..0, [0xEF, 0xBB, 0xBF]).for_each(drop),
        Bytes::DoubleBom => bytes.splice(0..0, [0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF]).for_each(drop),
        Bytes::Utf16Bom => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            bytes = vec![0xFF, 0xFE];
            bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        }
        Bytes::Truncate(i) => {
            let n = at(*i, bytes.len());
            bytes.truncate(n);
        }
        Bytes::Insert(i, b) => {
            let n = at(*i, bytes.len() + 1);
            bytes.insert(n, *b);
        }
        Bytes::Flip(i, b) => {
            let n = at(*i, bytes.len());
            if n < bytes.len() {
                bytes[n] = *b;
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_split_file_opens_or_is_one_error(
        edits in proptest::collection::vec(edit(), 0..4),
        how in bytes_edit(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            save(dir.path(), &format!("img/{i}.png"), &solid(4, 4, [i as u8; 3]));
        }
        let mut split = json!({
            "label_names": ["a", "b", "c"],
            "image_names": ["img/0.png", "img/1.png", "img/2.png", "img/0.png", "img/1.png", "img/2.png"],
            "image_labels": [0, 0, 1, 0, 0, 1],
        });
        for e in &edits {
            apply(&mut split, e);
        }
        let bytes = mutate_bytes(split.to_string().into_bytes(), &how);
        let path = dir.path().join("split.json");
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| open_json_split(&path, &OpenOptions::default()));
        let result = result.map_err(|_| format!("panicked on {:?}", String::from_utf8_lossy(&bytes)));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
        if let Err(err) = result.unwrap() {
            let text = err.to_string();
            prop_assert!(text.contains("split.json"), "the error names the split file: {}", text);
            prop_assert!(text.contains("fix:"), "{}", text);
            prop_assert!(std::error::Error::source(&err).is_none(), "one cause: {}", text);
        }
    }
}
