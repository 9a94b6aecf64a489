//! The reliability issue's examples, each through the `fsct-train` binary as a user meets them:
//! bad input exits 2 with one message naming the file, the field and the fix; a diverged run
//! exits 1 and writes no result; nothing is replaced or loaded silently; and no path prints a
//! panic or a backtrace.

use std::path::{Path, PathBuf};
use std::process::Command;

use fsct_train::checkpoint::Checkpoint;

mod common;
use common::TINY;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary; every outcome, success or not, must be free of panics and backtraces, and an
/// error must be one `error:` line.
fn fsct(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_fsct-train"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let outcome = Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE", "internal error"] {
        assert!(!outcome.stderr.contains(bad), "{args:?} printed `{bad}`:\n{}", outcome.stderr);
    }
    if outcome.code != Some(0) {
        assert_eq!(
            outcome.stderr.matches("error:").count(),
            1,
            "{args:?}: one error line:\n{}",
            outcome.stderr
        );
    }
    outcome
}

fn expect(args: &[&str], code: i32, needles: &[&str]) -> Outcome {
    let out = fsct(args);
    assert_eq!(out.code, Some(code), "{args:?}:\n{}\n{}", out.stdout, out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "{args:?}: `{needle}` missing from:\n{}", out.stderr);
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Trains the tiny config into `dir/name` and returns the run folder.
fn train_tiny(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let config = write(dir, &format!("{name}.toml"), &format!("{TINY}\n{extra}"));
    let run = dir.join(name);
    let out = fsct(&["--config", s(&config), "--output", s(&run)]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    run
}

#[test]
fn test_with_another_config_keeps_the_checkpoints_image_size_or_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path(), "small", "");
    let best = run.join("best.ckpt");
    // [data] without a size: the model's own size (16 px) is kept, not the default 84.
    let other = write(
        dir.path(),
        "other.toml",
        "[data]\nkind = \"synthetic\"\nsynthetic_classes = 30\nsynthetic_images_per_class = 8\n",
    );
    let out = expect(&["test", "--checkpoint", s(&best), "--config", s(&other)], 0, &[]);
    assert!(out.stdout.contains("test: 3 episodes, accuracy"), "{}", out.stdout);
    // Another size, explicitly: refused with both sizes and the fix.
    let sized = write(dir.path(), "sized.toml", "[data]\nkind = \"synthetic\"\nimage_size = 32\n");
    expect(
        &["test", "--checkpoint", s(&best), "--config", s(&sized)],
        2,
        &["sized.toml", "32", "16 px", "data.image_size"],
    );
    // A dataset name whose default size differs resolves to the checkpoint's size too.
    let cifar = write(dir.path(), "cifar.toml", "[data]\nkind = \"synthetic\"\nname = \"CIFAR\"\n");
    expect(&["test", "--checkpoint", s(&best), "--config", s(&cifar)], 0, &[]);
}

#[test]
fn weights_that_do_not_fit_their_config_are_refused_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path(), "small", "");
    // A checkpoint whose header claims another image size than its weights were trained at.
    let mut ckpt = Checkpoint::load(&run.join("best.ckpt")).unwrap();
    ckpt.header.config.data.image_size = Some(40); // Conv4: 64×2×2 features instead of 64×1×1
    let forged = dir.path().join("forged.ckpt");
    ckpt.save(&forged).unwrap();
    expect(&["test", "--checkpoint", s(&forged)], 2, &["forged.ckpt", "do not fit", "shape"]);
    // Another method: the record does not even have the model's structure.
    let mut ckpt = Checkpoint::load(&run.join("best.ckpt")).unwrap();
    ckpt.header.config.model.method = fsct_train::config::Method::CtxCosine;
    ckpt.save(&forged).unwrap();
    expect(&["test", "--checkpoint", s(&forged)], 2, &["forged.ckpt"]);
}

#[test]
fn resume_applies_or_refuses_each_changed_field_by_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    // VIC run, then resume with new λ weights: refused, naming the field and both values.
    let vic =
        write(dir.path(), "vic2.toml", &TINY.replace("[model]\n", "[model]\nuse_vic = true\n"));
    let vic_run = dir.path().join("vicrun");
    expect(&["--config", s(&vic), "--output", s(&vic_run)], 0, &[]);
    let changed = write(
        dir.path(),
        "vic3.toml",
        &format!(
            "{}\n[vic]\nlambda_v = 2.5\n",
            TINY.replace("[model]\n", "[model]\nuse_vic = true\n")
        ),
    );
    expect(
        &["--config", s(&changed), "--output", s(&vic_run), "--resume", "--epochs", "2"],
        2,
        &["cannot resume", "last.ckpt", "`vic.lambda_v` is 2.5 now but 1.0 in the checkpoint"],
    );
    // Several fields at once: every one is named.
    let many = write(
        dir.path(),
        "many.toml",
        &TINY
            .replace("[model]\n", "[model]\nuse_vic = true\nheads = 4\n")
            .replace("n_query = 2", "n_query = 3"),
    );
    expect(
        &["--config", s(&many), "--output", s(&vic_run), "--resume"],
        2,
        &["`model.heads` is 4", "`episodes.n_query` is 3"],
    );
    // A field that takes effect: more epochs continue the run.
    expect(&["--config", s(&vic), "--output", s(&vic_run), "--resume", "--epochs", "2"], 0, &[]);
    let ckpt = Checkpoint::load(&vic_run.join("last.ckpt")).unwrap();
    assert_eq!((ckpt.header.state.epochs_done, ckpt.header.config.optim.epochs), (2, 2));
    let metrics = std::fs::read_to_string(vic_run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<&str> = metrics.lines().filter(|l| l.contains(r#""kind":"epoch""#)).collect();
    assert_eq!(epochs.len(), 2, "one line per epoch, none twice: {metrics}");
    assert!(
        epochs[0].contains(r#""epoch":1,"#) && epochs[1].contains(r#""epoch":2,"#),
        "{metrics}"
    );
}

#[test]
fn output_problems_are_found_before_training_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tiny.toml", TINY);
    let file = write(dir.path(), "a_file", "x");
    expect(
        &["--config", s(&config), "--output", s(&file)],
        2,
        &["a_file", "is an existing file", "--output"],
    );
    expect(
        &["--config", s(&config), "--output", s(&file.join("below"))],
        2,
        &["cannot create the folder"],
    );
    // A run already there: refused, then replaced with --overwrite, or continued with --resume.
    let run = train_tiny(dir.path(), "run", "");
    let before = std::fs::read(run.join("last.ckpt")).unwrap();
    expect(
        &["--config", s(&config), "--output", s(&run)],
        2,
        &["already holds a run", "--resume", "--overwrite"],
    );
    assert_eq!(std::fs::read(run.join("last.ckpt")).unwrap(), before, "nothing was replaced");
    expect(&["--config", s(&config), "--output", s(&run), "--overwrite"], 0, &[]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one epoch and its test, none twice after --overwrite");
    // A folder in use by another process (here: this one holds its lock).
    let held = fsct_train::run_dir::RunDir::claim(
        &dir.path().join("busy"),
        fsct_train::run_dir::Existing::Refuse,
    )
    .unwrap();
    expect(
        &["--config", s(&config), "--output", s(&held.path)],
        2,
        &["in use by another fsct-train process"],
    );
}

#[test]
fn a_run_that_diverges_exits_1_and_writes_no_result() {
    let dir = tempfile::tempdir().unwrap();
    // Mixed precision: every step overflows; the scale starts at its floor so this is quick.
    let mixed = write(
        dir.path(),
        "mixed.toml",
        &(TINY
            .replace("epochs = 1", "epochs = 1\nlearning_rate = 1e30")
            .replace("train_episodes = 2", "train_episodes = 12")
            + "\n[memory]\nprecision = \"mixed-f16\"\nloss_scale = 4.0\n"),
    );
    let run = dir.path().join("mixed");
    expect(
        &["--config", s(&mixed), "--output", s(&run)],
        1,
        &["diverged", "loss scale", "learning_rate"],
    );
    assert!(!run.join("results.txt").exists(), "no result for a diverged run");
    // f32: the loss itself becomes non-finite.
    let f32 = write(
        dir.path(),
        "f32.toml",
        &TINY
            .replace("epochs = 1", "epochs = 1\nlearning_rate = 1e30")
            .replace("train_episodes = 2", "train_episodes = 4"),
    );
    let run = dir.path().join("f32");
    expect(&["--config", s(&f32), "--output", s(&run)], 1, &["diverged", "learning_rate"]);
    assert!(!run.join("results.txt").exists());
}

#[test]
fn messages_say_one_cause_once_at_the_right_place() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = expect(&["--config", s(&missing)], 2, &["nope.toml"]);
    assert_eq!(out.stderr.matches("(os error 2)").count(), 1, "{}", out.stderr);
    // A byte-order mark is not a syntax error.
    let bom = write(dir.path(), "bom.toml", &format!("\u{feff}{TINY}"));
    expect(&["--config", s(&bom), "--output", s(&dir.path().join("bom"))], 0, &[]);
    // A bad value from a flag is blamed on the flag, not on the file.
    let config = write(dir.path(), "tiny.toml", TINY);
    let out = expect(
        &["--config", s(&config), "--image-size", "4", "--output", s(&dir.path().join("x"))],
        2,
        &["--image-size", "data.image_size"],
    );
    assert!(!out.stderr.contains("config `"), "{}", out.stderr);
    expect(&["--config", s(&config), "--epochs", "0"], 2, &["--epochs", "optim.epochs"]);
    expect(&["--config", s(&config), "--backbone", "ResNet50"], 2, &["--backbone", "ResNet34"]);
    // …and a bad value in the file is blamed on the file, whatever the flags.
    let bad = write(dir.path(), "bad.toml", &TINY.replace("n_way = 3", "n_way = 1"));
    expect(&["--config", s(&bad), "--epochs", "3"], 2, &["bad.toml", "episodes.n_way"]);
    // Not UTF-8.
    let latin = dir.path().join("latin.toml");
    std::fs::write(&latin, b"[model]\nbackbone = \"Conv\xe94\"\n").unwrap();
    expect(&["--config", s(&latin)], 2, &["latin.toml", "UTF-8"]);
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path(), "run", "");
    let best = run.join("best.ckpt");
    let mut bytes = std::fs::read(&best).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let damaged = dir.path().join("damaged.ckpt");
    std::fs::write(&damaged, &bytes).unwrap();
    expect(&["test", "--checkpoint", s(&damaged)], 2, &["damaged.ckpt", "checksum"]);
    std::fs::write(&damaged, &bytes[..at]).unwrap();
    expect(&["test", "--checkpoint", s(&damaged)], 2, &["damaged.ckpt", "truncated"]);
    // Resume from a damaged last.ckpt: the same.
    let mut last = std::fs::read(run.join("last.ckpt")).unwrap();
    let at = last.len() - 10;
    last[at] ^= 0x40;
    std::fs::write(run.join("last.ckpt"), &last).unwrap();
    let config = run.with_extension("toml");
    expect(
        &["--config", s(&config), "--output", s(&run), "--resume", "--epochs", "2"],
        2,
        &["last.ckpt", "checksum"],
    );
}

#[test]
fn test_opens_only_the_split_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path(), "run", "");
    // A cross-domain test set with only its test split: novel.json and its images.
    let data = dir.path().join("other_domain");
    let mut names = Vec::new();
    let mut labels = Vec::new();
    for class in 0..3 {
        for i in 0..4 {
            let rel = format!("img/c{class}_{i}.png");
            let path = data.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let pixel = image::Rgb([(class * 80) as u8, (i * 50) as u8, 30]);
            image::RgbImage::from_pixel(20, 20, pixel).save(&path).unwrap();
            names.push(rel);
            labels.push(class);
        }
    }
    let split = serde_json::json!({ "label_names": ["a", "b", "c"], "image_names": names, "image_labels": labels });
    std::fs::write(data.join("novel.json"), split.to_string()).unwrap();
    let config = write(
        dir.path(),
        "cross.toml",
        &format!("[data]\nkind = \"json\"\nroot = \"{}\"\n", s(&data)),
    );
    let out = expect(
        &["test", "--checkpoint", s(&run.join("best.ckpt")), "--config", s(&config)],
        0,
        &[],
    );
    assert!(out.stdout.contains("test: 3 episodes"), "{}", out.stdout);
    // Training on it still needs base.json and says so.
    expect(&["--config", s(&config), "--output", s(&dir.path().join("t"))], 2, &["base.json"]);
}

/// `root/{train,val,test}/<class>/<i>.<ext>` with 4 images a class, 20×20 px.
fn folder_dataset(root: &Path, classes: [&[&str]; 3], ext: &str) {
    for (split, names) in ["train", "val", "test"].into_iter().zip(classes) {
        for (c, class) in names.iter().enumerate() {
            for i in 0..4 {
                let path = root.join(split).join(class).join(format!("{i}.{ext}"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let img = image::RgbImage::from_fn(20, 20, |x, y| {
                    image::Rgb([(x * 12) as u8, (y * 12) as u8, (c * 60 + i * 10) as u8])
                });
                img.save(&path).unwrap();
            }
        }
    }
}

fn folder_config(dir: &Path, root: &Path) -> PathBuf {
    let text =
        TINY.replace("kind = \"synthetic\"", &format!("kind = \"folder\"\nroot = \"{}\"", s(root)));
    write(dir, "folder.toml", &text)
}

#[test]
fn datasets_that_are_silently_wrong_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let classes: [&[&str]; 3] = [&["a", "b", "c"], &["d", "e", "f"], &["g", "h", "i"]];
    // A clean dataset of JPEGs trains.
    let root = dir.path().join("jpegs");
    folder_dataset(&root, classes, "jpg");
    let config = folder_config(dir.path(), &root);
    expect(&["--config", s(&config), "--output", s(&dir.path().join("ok"))], 0, &[]);
    // A JPEG cut in half (the `image` crate would fill the missing part).
    let cut = root.join("train/b/2.jpg");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect(
        &["--config", s(&config), "--output", s(&dir.path().join("cut"))],
        2,
        &["train/b/2.jpg"],
    );

    // One class in training and testing.
    let root = dir.path().join("overlap");
    folder_dataset(&root, [&["a", "b", "c"], &["d", "e", "f"], &["g", "h", "a"]], "png");
    let config = folder_config(dir.path(), &root);
    expect(
        &["--config", s(&config), "--output", s(&dir.path().join("overlap_run"))],
        2,
        &["class `a`", "two splits"],
    );

    // WebP, BMP, GIF and TIFF are read, not skipped: a dataset of them trains.
    for ext in ["webp", "bmp", "gif", "tiff"] {
        let root = dir.path().join(ext);
        folder_dataset(&root, classes, ext);
        let config = folder_config(dir.path(), &root);
        expect(
            &["--config", s(&config), "--output", s(&dir.path().join(format!("{ext}_run")))],
            0,
            &[],
        );
    }
}

fn transformer_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fsct-transformer/tests/fixtures").join(name)
}

#[test]
fn reference_checkpoints_import_or_fail_with_one_message() {
    let dir = tempfile::tempdir().unwrap();
    // The reference's training checkpoint of a Conv4 3-way 2-shot model at 16 px: TINY's model.
    let config = write(dir.path(), "tiny.toml", TINY);
    let reference = transformer_fixture("tiny_conv4_cosine.tar");
    let out = dir.path().join("imported.ckpt");
    let ok = expect(
        &["import-pytorch", "--input", s(&reference), "--config", s(&config), "--output", s(&out)],
        0,
        &[],
    );
    assert!(ok.stdout.contains("epoch Some(7)"), "{}", ok.stdout);
    expect(&["test", "--checkpoint", s(&out)], 0, &[]);
    // Never replaced silently.
    expect(
        &["import-pytorch", "--input", s(&reference), "--config", s(&config), "--output", s(&out)],
        2,
        &["already exists", "--overwrite"],
    );
    expect(
        &[
            "import-pytorch",
            "--input",
            s(&reference),
            "--config",
            s(&config),
            "--output",
            s(&out),
            "--overwrite",
        ],
        0,
        &[],
    );
    // A config that describes another model: the missing key is named.
    let conv6 = write(dir.path(), "conv6.toml", &TINY.replace("Conv4", "Conv6"));
    expect(
        &[
            "import-pytorch",
            "--input",
            s(&reference),
            "--config",
            s(&conv6),
            "--output",
            s(&dir.path().join("x.ckpt")),
        ],
        2,
        &["tiny_conv4_cosine.tar"],
    );
    // Damaged: cut short.
    let bytes = std::fs::read(&reference).unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect(
        &[
            "import-pytorch",
            "--input",
            s(&cut),
            "--config",
            s(&config),
            "--output",
            s(&dir.path().join("y.ckpt")),
        ],
        2,
        &["cut.tar"],
    );
    // A pickle that tries to run code stays refused.
    let evil = transformer_fixture("evil_os_system.pt");
    expect(
        &[
            "import-pytorch",
            "--input",
            s(&evil),
            "--config",
            s(&config),
            "--output",
            s(&dir.path().join("z.ckpt")),
        ],
        2,
        &["evil_os_system.pt"],
    );
    assert!(!dir.path().join("z.ckpt").exists() && !dir.path().join("y.ckpt").exists());
}
