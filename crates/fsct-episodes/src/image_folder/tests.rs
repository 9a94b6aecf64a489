use super::*;
use crate::test_util::{capture_logs, noisy, save, solid, ALL_EXTENSIONS};

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("dog", 3), ("cat", 2), ("emu", 4)] {
        for i in 0..n {
            let ext = if i % 2 == 0 { "png" } else { "JPG" };
            save(dir.path(), &format!("{class}/{i}.{ext}"), &solid(5, 7, [i as u8 * 9; 3]));
        }
    }
    std::fs::write(dir.path().join("cat/notes.txt"), "not an image").unwrap();
    std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
    dir
}

#[test]
fn all_subfolders_sorted_and_only_images() {
    let dir = folder();
    let data = Dataset::open_folder(dir.path(), None).unwrap();
    let names: Vec<&str> = data.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cat", "dog", "emu"]);
    assert_eq!(data.num_images(), 9);
    assert_eq!(data.classes[1].items[1], Item::File(dir.path().join("dog/1.JPG")));
    assert_eq!(data.load(2, 2).unwrap().get_pixel(0, 0).0, [18; 3]);
}

#[test]
fn class_list_keeps_its_order() {
    let dir = folder();
    let list = ["emu".to_string(), "cat".to_string()];
    let data = Dataset::open_folder(dir.path(), Some(&list)).unwrap();
    assert_eq!(data.classes.len(), 2);
    assert_eq!(data.classes[0].name, "emu");
    assert_eq!(data.classes[1].items.len(), 2);
}

#[test]
fn missing_or_repeated_class_folder_is_an_error() {
    let dir = folder();
    let list = ["cat".to_string(), "yak".to_string()];
    let err = Dataset::open_folder(dir.path(), Some(&list)).unwrap_err().to_string();
    assert!(err.contains("class folder `yak` does not exist"), "{err}");
    let list = ["cat".to_string(), "cat".to_string()];
    let err = Dataset::open_folder(dir.path(), Some(&list)).unwrap_err().to_string();
    assert!(err.contains("`cat` is listed twice"), "{err}");
    let err = Dataset::open_folder(&dir.path().join("cat"), None).unwrap_err().to_string();
    assert!(err.contains("no class folders found"), "{err}");
    let err = Dataset::open_folder(&dir.path().join("nowhere"), None).unwrap_err().to_string();
    assert!(err.contains("nowhere: cannot read the image directory"), "{err}");
}

#[test]
fn split_by_class_lists_rejects_a_class_in_two_splits() {
    let dir = folder();
    let lists = ClassLists {
        base: vec!["cat".into(), "dog".into()],
        val: vec!["emu".into()],
        novel: vec!["dog".into()],
    };
    let err = open_image_folder_lists(dir.path(), &lists, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dog` is listed in more than one split (base and novel)"), "{err}");
    let lists = ClassLists { novel: vec![], ..lists };
    let splits = open_image_folder_lists(dir.path(), &lists, &OpenOptions::default()).unwrap();
    assert_eq!(splits.base.num_classes(), 2);
    assert_eq!(splits.val.classes[0].name, "emu");
}

#[test]
fn every_image_format_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for (i, ext) in ALL_EXTENSIONS.iter().enumerate() {
        save(dir.path(), &format!("c/{i}.{ext}"), &solid(6, 5, [200, 100, 50]));
        save(dir.path(), &format!("d/{i}.{}", ext.to_uppercase()), &noisy(9, 7));
    }
    let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
    assert!(!logs.contains("skipped"), "{logs}");
    assert_eq!(data.classes[0].items.len(), ALL_EXTENSIONS.len());
    assert_eq!(data.classes[1].items.len(), ALL_EXTENSIONS.len());
    for (i, ext) in ALL_EXTENSIONS.iter().enumerate() {
        let image = data.load(0, i).unwrap();
        assert_eq!(image.dimensions(), (6, 5), "{ext}");
        let [r, g, b] = image.get_pixel(3, 2).0;
        assert!(r > 180 && (80..120).contains(&g) && b < 80, "{ext}: {r} {g} {b}");
        assert_eq!(data.load(1, i).unwrap().dimensions(), (9, 7));
    }
    data.verify_files(&OpenOptions { verify: crate::Verify::Decode, threads: 2 }).unwrap();
}

#[test]
fn skipped_files_are_counted_and_named_in_one_warning_per_split() {
    let dir = folder(); // cat/notes.txt, .hidden/
    for i in 0..5 {
        std::fs::write(dir.path().join(format!("dog/readme{i}.md")), "text").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("emu/nested")).unwrap();
    std::fs::write(dir.path().join("emu/.DS_Store"), "hidden").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("cat/link.png"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("ghost")).unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "about").unwrap();
    let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
    assert_eq!(data.num_images(), 9);
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
    let (warning, debug): (Vec<&str>, Vec<&str>) = logs.lines().partition(|l| l.contains("WARN"));
    let hidden = debug.iter().find(|l| l.contains("hidden")).unwrap();
    assert!(hidden.contains("skipped 2 hidden files or folders (e.g. "), "{logs}");
    let logs = warning[0];
    assert!(logs.contains(&format!("{}: split `", dir.path().display())), "{logs}");
    assert!(logs.contains("1 files outside the class folders (e.g. "), "{logs}");
    assert!(logs.contains("README.txt"), "{logs}");
    assert!(logs.contains("split `"), "{logs}");
    assert!(
        logs.contains(
            "6 files whose extension is not an image's (jpg, jpeg, png, webp, bmp, gif, tif, tiff)"
        ),
        "{logs}"
    );
    assert!(logs.contains("notes.txt") || logs.contains("readme0.md"), "{logs}");
    assert!(logs.contains(", …)"), "more than the examples shown: {logs}");
    assert!(logs.contains("1 folders inside class folders (e.g. "), "{logs}");
    assert!(logs.contains("emu/nested"), "{logs}");
    assert!(!logs.contains("DS_Store"), "hidden files are not reported: {logs}");
    #[cfg(unix)]
    {
        assert!(logs.contains("2 dangling symbolic links"), "{logs}");
        assert!(logs.contains("cat/link.png"), "{logs}");
        assert!(logs.contains("dangling=2"), "{logs}");
    }
    // Nothing skipped, nothing logged.
    let clean = tempfile::tempdir().unwrap();
    save(clean.path(), "a/0.png", &solid(4, 4, [0; 3]));
    let (_, logs) = capture_logs(|| Dataset::open_folder(clean.path(), None).unwrap());
    assert!(!logs.contains("WARN"), "{logs}");
}

#[cfg(unix)]
#[test]
fn a_file_reached_from_two_classes_is_an_error_and_twice_in_one_is_kept_once() {
    let dir = folder();
    std::os::unix::fs::symlink(dir.path().join("dog/0.png"), dir.path().join("dog/again.png"))
        .unwrap();
    let (data, logs) = capture_logs(|| Dataset::open_folder(dir.path(), None).unwrap());
    assert_eq!(data.classes[1].items.len(), 3);
    assert!(logs.contains("1 repeated entries of a file already in its class (e.g. "), "{logs}");
    assert!(logs.contains("dog/again.png"), "{logs}");
    std::os::unix::fs::symlink(dir.path().join("dog/1.JPG"), dir.path().join("emu/borrowed.jpg"))
        .unwrap();
    let err = Dataset::open_folder(dir.path(), None).unwrap_err().to_string();
    assert!(
        err.contains("emu/borrowed.jpg: the same image is listed in two classes, `dog` and `emu`"),
        "{err}"
    );
}

#[test]
fn three_folders_must_not_share_a_class_or_an_image() {
    let dir = tempfile::tempdir().unwrap();
    for (split, class) in [("train", "dog"), ("val", "cat"), ("test", "emu")] {
        for i in 0..2 {
            save(dir.path(), &format!("{split}/{class}/{i}.png"), &solid(4, 4, [i; 3]));
        }
    }
    let open = || {
        let p = |s: &str| dir.path().join(s);
        open_image_folders(p("train"), p("val"), p("test"), &OpenOptions::default())
    };
    let splits = open().unwrap();
    assert_eq!(splits.novel.classes[0].name, "emu");
    // A class folder of the same name in train and test.
    save(dir.path(), "test/dog/9.png", &solid(4, 4, [1; 3]));
    let err = open().unwrap_err().to_string();
    assert!(err.contains("class `dog` is in two splits: `base` ("), "{err}");
    assert!(err.contains("train) and `novel` ("), "{err}");
    std::fs::remove_dir_all(dir.path().join("test/dog")).unwrap();
    // The same image under two class names, through a symbolic link.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            dir.path().join("train/dog/0.png"),
            dir.path().join("val/cat/7.png"),
        )
        .unwrap();
        let err = open().unwrap_err().to_string();
        assert!(
            err.contains("val/cat/7.png: the same image is in split `val` (class `cat`"),
            "{err}"
        );
        assert!(err.contains("split `base` (class `dog`"), "{err}");
    }
}
