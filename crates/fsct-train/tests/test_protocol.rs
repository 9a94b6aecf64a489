//! `fsct-train test` as an evaluation protocol (issue 17): the episode shape, count and seed from
//! the command line, the two 95% intervals, `summary.json`, per-class accuracy and confusion
//! counts, and the refusals (FS-CT's fixed way and shot, a protocol already tested, bad values).

use std::path::{Path, PathBuf};

mod common;
use common::{run_binary, s, TINY};

fn fsct(args: &[&str]) -> (i32, String, String) {
    run_binary(args, Some("warn"))
}

/// Trains the tiny config (3-way 2-shot, 16 px glyphs, one epoch) with `method` into `dir/name`
/// and returns its best checkpoint.
fn train(dir: &Path, name: &str, method: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    let text = TINY
        .replace("backbone = \"Conv4\"", &format!("backbone = \"Conv4\"\nmethod = \"{method}\""));
    std::fs::write(&config, text).unwrap();
    let run = dir.join(name);
    let (code, _, stderr) = fsct(&["--config", s(&config), "--output", s(&run)]);
    assert_eq!(code, 0, "{stderr}");
    run.join("best.ckpt")
}

fn summary(folder: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).unwrap()).unwrap()
}

/// `per_class.csv` as (class, queries, correct).
fn per_class(folder: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(folder.join("per_class.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("class,queries,correct,accuracy"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn the_protocol_flags_shape_the_test_and_its_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    let best = train(dir.path(), "fsct", "FSCT_cosine");
    let reference = dir.path().join("reference");
    let args =
        ["test", "--checkpoint", s(&best), "--n-query", "3", "--episodes", "5", "--seed", "9"];
    let (code, stdout, stderr) = fsct(&[&args[..], &["--output", s(&reference)]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("test: 5 episodes, accuracy"), "{stdout}");
    assert!(stdout.contains("worst classes:"), "{stdout}");
    let json = summary(&reference);
    assert_eq!((json["n_way"].as_u64(), json["k_shot"].as_u64()), (Some(3), Some(2)));
    assert_eq!((json["n_query"].as_u64(), json["episodes"].as_u64()), (Some(3), Some(5)));
    assert_eq!((json["seed"].as_u64(), json["ci"].as_str()), (Some(9), Some("reference")));
    // Every query counted once, by its class; every episode has as many queries, so the mean
    // episode accuracy is the overall fraction correct.
    let classes = per_class(&reference);
    let queries: u64 = classes.iter().map(|c| c.1).sum();
    let correct: u64 = classes.iter().map(|c| c.2).sum();
    assert_eq!(queries, 5 * 3 * 3);
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!((accuracy - 100.0 * correct as f64 / queries as f64).abs() < 1e-9, "{accuracy}");
    // The synthetic test split's classes, by name.
    assert!(classes.iter().all(|c| c.0.starts_with("glyph")), "{classes:?}");
    let confusion = std::fs::read_to_string(reference.join("confusion.csv")).unwrap();
    let confused: u64 = confusion
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(confused, queries - correct);

    // The same episodes with LibFewShot's interval: wider by t₀.₉₇₅,₄/1.96·√(5/4).
    let student = dir.path().join("student");
    let (code, _, stderr) =
        fsct(&[&args[..], &["--ci", "student-t", "--output", s(&student)]].concat());
    assert_eq!(code, 0, "{stderr}");
    let t_json = summary(&student);
    assert_eq!(t_json["ci"].as_str(), Some("student-t"));
    assert_eq!(t_json["accuracy"], json["accuracy"]);
    let (ci, t_ci) = (json["ci95"].as_f64().unwrap(), t_json["ci95"].as_f64().unwrap());
    assert!(ci > 0.0, "these 5 episodes (seeded) differ in accuracy");
    let ratio = 2.7764451051977987 / 1.96 * (5.0f64 / 4.0).sqrt();
    assert!((t_ci / ci - ratio).abs() < 1e-6, "{t_ci} / {ci}");

    // Without --output: a folder per protocol beside the checkpoint; the same protocol again is
    // refused (nothing replaced), and replaced with --overwrite.
    let (code, _, stderr) = fsct(&args);
    assert_eq!(code, 0, "{stderr}");
    let default = best.parent().unwrap().join("tests/best-synthetic-3w2s3q-5ep-seed9");
    assert_eq!(summary(&default)["accuracy"], json["accuracy"]);
    let (code, _, stderr) = fsct(&args);
    assert_eq!(code, 2);
    assert!(stderr.contains("--overwrite") && stderr.contains("seed9"), "{stderr}");
    let (code, _, stderr) = fsct(&[&args[..], &["--overwrite"]].concat());
    assert_eq!(code, 0, "{stderr}");
    // Another seed draws other episodes into another folder.
    let (code, _, stderr) = fsct(&[&args[..7], &["--seed", "10"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(best.parent().unwrap().join("tests/best-synthetic-3w2s3q-5ep-seed10").is_dir());
}

#[test]
fn fsct_keeps_its_way_and_shot_and_ctx_takes_any() {
    let dir = tempfile::tempdir().unwrap();
    let best = train(dir.path(), "fsct", "FSCT_softmax");
    for flag in ["--n-way", "--k-shot"] {
        let (code, _, stderr) = fsct(&["test", "--checkpoint", s(&best), flag, "1"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(flag)
                && stderr.contains("prototype weights")
                && stderr.contains("3-way 2-shot"),
            "{stderr}"
        );
    }
    // The training's own way and shot are fine.
    let (code, _, stderr) = fsct(&[
        "test",
        "--checkpoint",
        s(&best),
        "--n-way",
        "3",
        "--k-shot",
        "2",
        "--episodes",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");

    let best = train(dir.path(), "ctx", "CTX_cosine");
    let out = dir.path().join("ctx-2way-1shot");
    let (code, _, stderr) = fsct(&[
        "test",
        "--checkpoint",
        s(&best),
        "--n-way",
        "2",
        "--k-shot",
        "1",
        "--n-query",
        "4",
        "--episodes",
        "3",
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json = summary(&out);
    assert_eq!((json["n_way"].as_u64(), json["k_shot"].as_u64()), (Some(2), Some(1)));
    assert_eq!(per_class(&out).iter().map(|c| c.1).sum::<u64>(), 3 * 2 * 4);
}

#[test]
fn bad_protocol_values_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let best = train(dir.path(), "fsct", "FSCT_cosine");
    let (code, _, stderr) = fsct(&["test", "--checkpoint", s(&best), "--n-query", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--n-query"), "{stderr}");
    let (code, _, stderr) = fsct(&["test", "--checkpoint", s(&best), "--episodes", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--episodes"), "{stderr}");
    // More images per class than the test classes hold (8): the dataset check names the numbers.
    let (code, _, stderr) = fsct(&["test", "--checkpoint", s(&best), "--n-query", "7"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains('8') && stderr.contains('9'), "{stderr}");
    let (code, _, stderr) = fsct(&["test", "--checkpoint", s(&best), "--ci", "bayes"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("student-t"), "{stderr}");
}
