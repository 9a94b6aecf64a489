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
    std::os::unix::fs::symlink(dir.path().join("moved.png"), dir.path().join("link.png")).unwrap();
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
    let path = write_json(dir.path(), "val.json", json!({"image_names": [], "image_labels": []}));
    let err = Dataset::open_json(&path).unwrap_err().to_string();
    assert!(err.contains("val.json: the split lists no images"), "{err}");
    let path = write_json(
        dir.path(),
        "val.json",
        json!({"image_names": ["a.png", ""], "image_labels": [0, 0]}),
    );
    let err = Dataset::open_json(&path).unwrap_err().to_string();
    assert!(err.contains("val.json: entry 1 of `image_names` (\"\") is not a file name"), "{err}");
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
