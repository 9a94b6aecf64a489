//! The reference split format (spec §3.3): `{"label_names": [...], "image_names": [...],
//! "image_labels": [...]}`, one file per split (`base.json`, `val.json`, `novel.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::EpisodeError;
use crate::split::{assemble, Class, Dataset, Item, OpenOptions, Skipped, Splits};

#[derive(Deserialize)]
#[serde(expecting = "a JSON object with `image_names` and `image_labels`")]
struct SplitFile {
    #[serde(default)]
    label_names: Vec<String>,
    image_names: Vec<String>,
    image_labels: Vec<i64>,
}

impl Dataset {
    /// Reads one reference split file (`base.json`, …), checking that every listed image exists,
    /// has a readable image header and is complete. See [`open_json_split`] for the format.
    /// Opening splits one by one does not compare them: call [`crate::check_disjoint`].
    pub fn open_json(path: &Path) -> Result<Dataset, EpisodeError> {
        open_json_split(path, &OpenOptions::default())
    }
}

/// Reads one split file.
///
/// The file is UTF-8 JSON (a leading byte-order mark is skipped; any other encoding is an
/// [`EpisodeError::SplitEncoding`]). Classes are the sorted unique labels, as the reference does;
/// a class is named `label_names[label]` when that entry exists (the reference numbers labels
/// across all splits and lists every name in each file), else after the label number. Image paths
/// are absolute or relative to the JSON file's folder.
///
/// Checked here: the file lists at least one image, one label per image, no empty path; a file
/// listed more than once in its class is kept once (the repeats are skipped and their count
/// logged as a warning: sampling one image twice in an episode would put it in the support and
/// the query set at once); a file listed in two classes is an error
/// ([`EpisodeError::FileInTwoClasses`]). Files are compared by their canonical paths, so
/// `a.png`, `./a.png` and a symbolic link to it are one file. The files are then checked as
/// `options.verify` asks.
pub fn open_json_split(
    path: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Dataset, EpisodeError> {
    let path = path.as_ref();
    let _span = tracing::info_span!("open_json_split", path = %path.display()).entered();
    let bytes = std::fs::read(path)
        .map_err(|error| EpisodeError::SplitRead { path: path.to_path_buf(), error })?;
    let text = utf8_text(path, &bytes)?;
    let file: SplitFile = serde_json::from_str(text).map_err(|e| parse_error(path, &e))?;
    if file.image_names.len() != file.image_labels.len() {
        return Err(EpisodeError::LengthMismatch {
            path: path.to_path_buf(),
            names: file.image_names.len(),
            labels: file.image_labels.len(),
        });
    }
    if file.image_names.is_empty() {
        return Err(EpisodeError::EmptySplit { path: path.to_path_buf() });
    }
    if let Some(index) = file.image_names.iter().position(|n| n.is_empty() || n.contains('\0')) {
        return Err(EpisodeError::BadImageName {
            path: path.to_path_buf(),
            index,
            name: file.image_names[index].clone(),
        });
    }

    let folder = path.parent().unwrap_or(Path::new("."));
    let mut by_label: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
    for (name, &label) in file.image_names.iter().zip(&file.image_labels) {
        by_label.entry(label).or_default().push(Item::File(folder.join(name)));
    }
    let classes = by_label
        .into_iter()
        .map(|(label, items)| Class {
            name: usize::try_from(label)
                .ok()
                .and_then(|i| file.label_names.get(i).cloned())
                .unwrap_or_else(|| label.to_string()),
            items,
        })
        .collect();

    let name =
        path.file_stem().map_or_else(|| "split".to_string(), |s| s.to_string_lossy().into_owned());
    let split = assemble(&name, path, classes, Skipped::default(), options)?;
    tracing::info!(classes = split.num_classes(), images = split.num_images(), "split opened");
    Ok(split)
}

/// The file's text: UTF-8, with a leading byte-order mark skipped. Anything else is an encoding
/// error here, so it is not reported later as a JSON syntax or structure problem.
fn utf8_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, EpisodeError> {
    let encoding =
        |problem: String| EpisodeError::SplitEncoding { path: path.to_path_buf(), problem };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(encoding("it is UTF-16: it starts with a UTF-16 byte-order mark".into()));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // JSON text never holds a NUL byte; UTF-16 without a byte-order mark is full of them.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(encoding(format!(
            "it holds a NUL byte at offset {at}: UTF-16 without a byte-order mark, or not text"
        )));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        encoding(format!("byte 0x{:02X} at offset {at}, line {line}, is not UTF-8", bytes[at]))
    })
}

/// A syntax error (or an early end) is reported as such; only a well-formed JSON value of the
/// wrong shape is blamed on the split structure.
fn parse_error(path: &Path, e: &serde_json::Error) -> EpisodeError {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let problem = message.strip_suffix(&suffix).unwrap_or(&message).to_string();
    let (path, line, column) = (path.to_path_buf(), e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => {
            EpisodeError::SplitParse { path, problem, line, column }
        }
        _ => EpisodeError::SplitSyntax { path, problem, line, column },
    }
}

/// Opens `dir/base.json`, `dir/val.json` and `dir/novel.json`, and checks that no class or image
/// is in two of them ([`crate::check_disjoint`]).
pub fn open_json_splits(
    dir: impl AsRef<Path>,
    options: &OpenOptions,
) -> Result<Splits, EpisodeError> {
    let dir = dir.as_ref();
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let splits = Splits {
        base: open_json_split(file("base.json"), options)?,
        val: open_json_split(file("val.json"), options)?,
        novel: open_json_split(file("novel.json"), options)?,
    };
    splits.check_disjoint()?;
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{save, save_gray, solid};
    use crate::EpisodeSpec;
    use serde_json::json;

    fn write_json(dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    #[test]
    fn reads_relative_and_absolute_paths_png_and_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let abs = save(dir.path(), "imgs/b0.jpg", &solid(12, 10, [200, 10, 10]));
        save(dir.path(), "imgs/a0.png", &solid(6, 6, [1, 2, 3]));
        save(dir.path(), "imgs/a1.png", &solid(6, 6, [4, 5, 6]));
        save_gray(dir.path(), "imgs/b1.png", 5, 5, 77);
        let path = write_json(
            dir.path(),
            "base.json",
            json!({
                "label_names": ["zero", "one", "two", "three", "four", "five", "six", "seven"],
                // Labels out of order: classes come out sorted (5 before 7).
                "image_names": ["imgs/b1.png", "imgs/a0.png", abs.to_str().unwrap(), "imgs/a1.png"],
                "image_labels": [7, 5, 7, 5],
            }),
        );
        let data = Dataset::open_json(&path).unwrap();
        assert_eq!(data.name(), "base");
        assert_eq!(data.num_classes(), 2);
        assert_eq!(data.num_images(), 4);
        assert_eq!(data.classes[0].name, "five");
        assert_eq!(data.classes[1].name, "seven");
        assert_eq!(data.classes[0].items[0], Item::File(dir.path().join("imgs/a0.png")));
        assert_eq!(data.classes[1].items[1], Item::File(abs));
        assert_eq!(data.load(0, 1).unwrap().get_pixel(0, 0).0, [4, 5, 6]);
        // Grayscale is replicated to three channels.
        assert_eq!(data.load(1, 0).unwrap().get_pixel(2, 2).0, [77, 77, 77]);
        let jpeg = data.load(1, 1).unwrap();
        assert_eq!(jpeg.dimensions(), (12, 10));
        assert!(jpeg.get_pixel(6, 5).0[0] > 180, "JPEG decoded red");
        data.validate(&EpisodeSpec { n_way: 2, k_shot: 1, n_query: 1 }).unwrap();
    }

    #[test]
    fn labels_without_names_are_named_by_number() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x.png", &solid(4, 4, [0; 3]));
        let path = write_json(
            dir.path(),
            "novel.json",
            json!({"image_names": ["x.png"], "image_labels": [80]}),
        );
        let data = Dataset::open_json(&path).unwrap();
        assert_eq!(data.classes[0].name, "80");
    }

    #[test]
    fn lists_of_different_length_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_json(
            dir.path(),
            "val.json",
            json!({"label_names": [], "image_names": ["a.png", "b.png"], "image_labels": [0]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("val.json"), "{err}");
        assert!(err.contains("`image_names` has 2 entries but `image_labels` has 1"), "{err}");
        assert!(err.contains("fix:"), "{err}");
    }

    #[test]
    fn missing_files_are_named_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "ok.png", &solid(4, 4, [0; 3]));
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["ok.png", "gone1.png", "gone2.png"], "image_labels": [0, 0, 1]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("gone1.png: image does not exist"), "{err}");
        assert!(err.contains("base.json"), "{err}");
        assert!(err.contains("and 1 more missing files"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_listed_dangling_link_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "ok.png", &solid(4, 4, [0; 3]));
        std::os::unix::fs::symlink(dir.path().join("moved.png"), dir.path().join("link.png"))
            .unwrap();
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["ok.png", "link.png", "gone.png"], "image_labels": [0, 0, 1]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("link.png: a symbolic link to "), "{err}");
        assert!(err.contains("moved.png, which does not exist (listed in "), "{err}");
        assert!(err.contains("base.json), and 1 more missing files"), "{err}");
    }

    #[test]
    fn bad_json_and_unreadable_file_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        std::fs::write(&path, r#"{"image_names": ["a.png"]}"#).unwrap();
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("base.json: not a valid split file"), "{err}");
        assert!(err.contains("image_labels"), "{err}");
        let err = Dataset::open_json(&dir.path().join("nope.json")).unwrap_err().to_string();
        assert!(err.contains("nope.json: cannot read the split file"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_an_image_is_caught_at_open_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.png"), b"definitely not a png").unwrap();
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["broken.png"], "image_labels": [0]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("broken.png: cannot decode image"), "{err}");
        assert!(err.contains("re-encode"), "{err}");
    }

    #[test]
    fn three_split_files_open_together() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["base.json", "val.json", "novel.json"].iter().enumerate() {
            save(dir.path(), &format!("x{i}.png"), &solid(4, 4, [0; 3]));
            write_json(
                dir.path(),
                name,
                json!({"image_names": [format!("x{i}.png")], "image_labels": [i]}),
            );
        }
        let splits = open_json_splits(dir.path(), &OpenOptions::default()).unwrap();
        assert_eq!(
            [splits.base.name(), splits.val.name(), splits.novel.name()],
            ["base", "val", "novel"]
        );
    }

    #[test]
    fn split_files_sharing_a_class_or_an_image_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..4 {
            save(dir.path(), &format!("x{i}.png"), &solid(4, 4, [0; 3]));
        }
        let names = json!(["ant", "bee", "cow", "doe"]);
        let write = |val_label: i64, val_file: &str| {
            write_json(
                dir.path(),
                "base.json",
                json!({"label_names": names, "image_names": ["x0.png"], "image_labels": [0]}),
            );
            write_json(
                dir.path(),
                "val.json",
                json!({"label_names": names, "image_names": [val_file], "image_labels": [val_label]}),
            );
            write_json(
                dir.path(),
                "novel.json",
                json!({"label_names": names, "image_names": ["x2.png"], "image_labels": [2]}),
            );
        };
        write(1, "x1.png");
        open_json_splits(dir.path(), &OpenOptions::default()).unwrap();
        // val's label 2 is novel's class `cow`: training and testing on one class.
        write(2, "x1.png");
        let err = open_json_splits(dir.path(), &OpenOptions::default()).unwrap_err().to_string();
        assert!(err.contains("class `cow` is in two splits: `val` ("), "{err}");
        assert!(err.contains("val.json) and `novel` ("), "{err}");
        assert!(err.contains("novel.json)"), "{err}");
        // val lists base's image under another class.
        write(1, "./x0.png");
        let err = open_json_splits(dir.path(), &OpenOptions::default()).unwrap_err().to_string();
        assert!(err.contains("x0.png: the same image is in split `val` (class `bee`"), "{err}");
        assert!(err.contains("and in split `base` (class `ant`"), "{err}");
        // Splits read one by one are compared by check_disjoint.
        let val = Dataset::open_json(&dir.path().join("val.json")).unwrap();
        let base = Dataset::open_json(&dir.path().join("base.json")).unwrap();
        let err = crate::check_disjoint(&[&base, &val]).unwrap_err().to_string();
        assert!(err.contains("x0.png: the same image is in split `val`"), "{err}");
        // One file given for two splits.
        let again = Dataset::open_json(&dir.path().join("base.json")).unwrap();
        let err = crate::check_disjoint(&[&base, &again]).unwrap_err().to_string();
        assert!(
            err.contains("base.json: splits `base` and `base` are both read from this file"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "x.png", &solid(4, 4, [0; 3]));
        let path = dir.path().join("base.json");
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(
            json!({"image_names": ["x.png"], "image_labels": [3]}).to_string().as_bytes(),
        );
        std::fs::write(&path, bytes).unwrap();
        let data = Dataset::open_json(&path).unwrap();
        assert_eq!(data.classes[0].name, "3");
    }

    #[test]
    fn text_that_is_not_utf8_is_blamed_on_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let text = json!({"image_names": ["é.png"], "image_labels": [0]}).to_string();
        let utf16 = |bom: &[u8]| {
            let mut bytes = bom.to_vec();
            bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            bytes
        };
        let latin1: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
        for (bytes, says) in [
            (utf16(&[0xFF, 0xFE]), "it is UTF-16"),
            (utf16(&[]), "NUL byte at offset 1"),
            (latin1, "byte 0xE9 at offset"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let err = Dataset::open_json(&path).unwrap_err();
            assert!(matches!(err, EpisodeError::SplitEncoding { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.starts_with(&format!("{}: the split file is not UTF-8 text (", path.display())),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
            assert!(err.contains("fix: save it as UTF-8"), "{err}");
            if says.contains("0xE9") {
                assert!(err.contains(", line 1, is not UTF-8)"), "{err}");
            }
            assert!(!err.contains("image_labels") && !err.contains("JSON"), "one cause: {err}");
        }
    }

    #[test]
    fn syntax_errors_are_not_blamed_on_the_structure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.json");
        let text = json!({"image_names": ["a.png"], "image_labels": [0]}).to_string();
        std::fs::write(&path, &text[..text.len() - 5]).unwrap();
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: not valid JSON: EOF while parsing", path.display())),
            "{err}"
        );
        assert!(err.contains("at line 1, column"), "{err}");
        assert!(!err.contains("must be a JSON object"), "{err}");
        // Said once: no position repeated, nothing left for a printed chain to repeat.
        assert_eq!(err.matches("line").count(), 1, "{err}");
        std::fs::write(&path, "{\"image_names\": [\"a.png\",], \"image_labels\": [0]}").unwrap();
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("not valid JSON: trailing comma at line 1, column"), "{err}");
        // Well-formed JSON of the wrong shape is a structure problem, in words, not Rust types.
        std::fs::write(&path, "42").unwrap();
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid split file: invalid type: integer `42`, expected a JSON object with `image_names` and `image_labels`"), "{err}");
        assert!(!err.contains("SplitFile"), "{err}");
    }

    #[test]
    fn errors_state_their_cause_once() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::open_json(&dir.path().join("nope.json")).unwrap_err();
        assert!(err.source().is_none(), "the cause is in the message; a chain would repeat it");
        let text = err.to_string();
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        let err = Dataset::open_folder(&dir.path().join("nowhere"), None).unwrap_err();
        assert!(err.source().is_none());
    }

    #[test]
    fn an_empty_split_or_path_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            write_json(dir.path(), "val.json", json!({"image_names": [], "image_labels": []}));
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(err.contains("val.json: the split lists no images"), "{err}");
        let path = write_json(
            dir.path(),
            "val.json",
            json!({"image_names": ["a.png", ""], "image_labels": [0, 0]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(
            err.contains("val.json: entry 1 of `image_names` (\"\") is not a file name"),
            "{err}"
        );
    }

    #[test]
    fn a_file_listed_twice_in_a_class_is_kept_once_and_in_two_classes_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            save(dir.path(), &format!("imgs/{i}.png"), &solid(4, 4, [0; 3]));
        }
        let path = write_json(
            dir.path(),
            "base.json",
            json!({
                "image_names": ["imgs/0.png", "imgs/1.png", "imgs/0.png", "./imgs/0.png", "imgs/2.png"],
                "image_labels": [4, 4, 4, 4, 5],
            }),
        );
        let (data, logs) = crate::test_util::capture_logs(|| Dataset::open_json(&path).unwrap());
        assert_eq!(data.classes[0].items.len(), 2);
        assert_eq!(data.num_images(), 3);
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("base.json: split `base` skipped 2 repeated entries of a file already in its class (e.g. "), "{logs}");
        assert!(logs.contains("imgs/0.png"), "{logs}");
        assert!(logs.contains("duplicates=2"), "{logs}");
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": ["imgs/0.png", "imgs/1.png", "imgs/../imgs/1.png"], "image_labels": [4, 4, 5]}),
        );
        let err = Dataset::open_json(&path).unwrap_err().to_string();
        assert!(
            err.contains(
                "imgs/../imgs/1.png: the same image is listed in two classes, `4` and `5` (in "
            ),
            "{err}"
        );
        assert!(err.contains("base.json)"), "{err}");
    }

    #[test]
    fn every_image_format_is_read_from_a_split() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> =
            crate::test_util::ALL_EXTENSIONS.iter().map(|e| format!("i.{e}")).collect();
        for name in &names {
            save(dir.path(), name, &solid(5, 4, [0, 0, 250]));
        }
        let path = write_json(
            dir.path(),
            "base.json",
            json!({"image_names": names, "image_labels": vec![0; names.len()]}),
        );
        let data = Dataset::open_json(&path).unwrap();
        for (i, name) in names.iter().enumerate() {
            assert!(data.load(0, i).unwrap().get_pixel(1, 1).0[2] > 200, "{name}");
        }
    }
}

/// Mutated split files: every case opens or is one [`EpisodeError`] naming the split file;
/// none panics.
#[cfg(test)]
mod fuzz {
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
            Bytes::DoubleBom => {
                bytes.splice(0..0, [0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF]).for_each(drop)
            }
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
}
