//! What a training run leaves and prints (issue 18, first part): `config.toml` (the resolved
//! config), `train.log` (the console's log, the final error included), the results line with the
//! reference's date format, one console line per epoch, `-q`, and `--set`.

use fsct_train::config::Config;

mod common;
use common::{run_binary, s, TINY};

fn fsct(args: &[&str]) -> (i32, String, String) {
    run_binary(args, None)
}

#[test]
fn the_run_folder_holds_the_resolved_config_the_log_and_a_dated_result() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY).unwrap();
    let run = dir.path().join("run");
    let (code, stdout, stderr) = fsct(&[
        "--config",
        s(&file),
        "--output",
        s(&run),
        "--epochs",
        "2",
        "--set",
        "optim.learning_rate=5e-4",
        "--set",
        "memory.gradient_checkpoint=blocks",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // config.toml: the file with the flags applied, parsed back to the same config.
    let mut expected = Config::parse(TINY, &file).unwrap();
    expected.run.output = run.clone();
    expected.optim.epochs = 2;
    expected.optim.learning_rate = 5e-4;
    expected.memory.gradient_checkpoint = fsct_train::config::Checkpointing::Blocks;
    let written = Config::read(&run.join("config.toml")).unwrap();
    expected.source = Some(run.join("config.toml")); // where it was read from
    assert_eq!(written, expected);
    // One console line per epoch, also in train.log.
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    for epoch in ["epoch   1/2", "epoch   2/2"] {
        assert_eq!(stderr.matches(epoch).count(), 1, "{stderr}");
        assert_eq!(log.matches(epoch).count(), 1, "{log}");
    }
    assert!(log.contains("run ETA") && !log.contains("\u{1b}["), "plain text: {log}");
    // The results line: the reference's date format, the setting, the accuracy, the checkpoint.
    let results = std::fs::read_to_string(run.join("results.txt")).unwrap();
    let line = results.lines().next().unwrap();
    let date = line.strip_prefix("Time: ").unwrap().split_whitespace().next().unwrap();
    assert!(
        date.len() == 15
            && date.as_bytes()[8] == b'@'
            && date.replace('@', "").parse::<u64>().is_ok(),
        "{line}"
    );
    assert!(line.contains("Setting: synthetic-Conv4-FSCT_cosine-3w2s"), "{line}");
    assert!(line.contains("Test Acc = ") && line.ends_with("best.ckpt"), "{line}");
    assert!(stdout.contains("test: 3 episodes"), "{stdout}");

    // -q: no epoch lines, the result still on stdout.
    let quiet = dir.path().join("quiet");
    let (code, stdout, stderr) = fsct(&["-q", "--config", s(&file), "--output", s(&quiet)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("epoch") && stdout.contains("test: 3 episodes"), "{stderr}");
    // Another run into the same folder: refused, config.toml and train.log count as its files.
    std::fs::remove_file(quiet.join("best.ckpt")).unwrap();
    std::fs::remove_file(quiet.join("last.ckpt")).unwrap();
    std::fs::remove_file(quiet.join("metrics.jsonl")).unwrap();
    let (code, _, stderr) = fsct(&["--config", s(&file), "--output", s(&quiet)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("config.toml") && stderr.contains("--overwrite"), "{stderr}");
}

#[test]
fn set_reaches_any_field_and_names_itself_when_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY).unwrap();
    let run = dir.path().join("run");
    let args = |set: &str| {
        vec![
            "--config".to_string(),
            s(&file).into(),
            "--output".into(),
            s(&run).into(),
            "--set".into(),
            set.into(),
        ]
    };
    let run_with = |set: &str| {
        let owned = args(set);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        fsct(&refs)
    };
    for (set, needles) in [
        (
            "optim.learning_rat=1e-3",
            vec!["--set optim.learning_rat=1e-3", "unknown field `learning_rat`"],
        ),
        ("optim.learning_rate", vec!["--set optim.learning_rate", "no value"]),
        ("optim.learning_rate=-1", vec!["--set optim.learning_rate=-1", "positive"]),
        ("episodes.n_way=five", vec!["--set episodes.n_way=five", "n_way"]),
        ("memory.precision=half", vec!["--set memory.precision=half", "precision"]),
    ] {
        let (code, _, stderr) = run_with(set);
        assert_eq!(code, 2, "{set}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{set}: `{needle}` missing from {stderr}");
        }
        assert!(!run.join("train.log").exists(), "{set}: refused before the run started");
    }
    // A bare word is a string; a train run takes it.
    let (code, _, stderr) = run_with("data.name=CUB");
    assert_eq!(code, 0, "{stderr}");
    let written = Config::read(&run.join("config.toml")).unwrap();
    assert_eq!(written.data.name, "CUB");
}

#[test]
fn a_failed_run_keeps_its_error_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY.replace("train_episodes = 2", "train_episodes = 4")).unwrap();
    let run = dir.path().join("run");
    let (code, _, stderr) =
        fsct(&["--config", s(&file), "--output", s(&run), "--set", "optim.learning_rate=1e30"]);
    assert_eq!(code, 1, "{stderr}");
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("error: ") && log.contains("diverged"), "{log}");
}

#[test]
fn completions_and_every_subcommands_help_with_an_example() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, stderr) = fsct(&["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        for word in ["fsct-train", "checkpoint", "predict", "n-query"] {
            assert!(stdout.contains(word), "{shell}: `{word}` missing");
        }
    }
    let (code, _, stderr) = fsct(&["completions", "cmd.exe"]);
    assert_eq!(code, 2, "{stderr}");
    for sub in [
        &["--help"][..],
        &["test", "--help"],
        &["predict", "--help"],
        &["embed", "--help"],
        &["export", "--help"],
        &["plan", "--help"],
        &["completions", "--help"],
    ] {
        let (code, stdout, stderr) = fsct(sub);
        assert_eq!(code, 0, "{sub:?}: {stderr}");
        assert!(stdout.contains("Example"), "{sub:?}: no example in\n{stdout}");
    }
}
