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

/// The points of each curve of an SVG that `fsct_train::curves` drew: its 2-px polylines with
/// more than two points (the legend's samples have two; axes and ticks are 1 px).
fn curves_in(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline")
        .skip(1)
        .filter(|element| element.contains(r#"stroke-width="2""#))
        .map(|element| {
            let points = element.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
            points
                .split_whitespace()
                .map(|xy| {
                    let (x, y) = xy.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect::<Vec<(f64, f64)>>()
        })
        .filter(|points| points.len() > 2)
        .collect()
}

#[test]
fn metrics_and_curves_tell_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY).unwrap();
    let run = dir.path().join("vic");
    let (code, stdout, stderr) = fsct(&[
        "--config",
        s(&file),
        "--output",
        s(&run),
        "--epochs",
        "3",
        "--set",
        "model.use_vic=true",
        "--set",
        "optim.learning_rate=5e-4",
        "--set",
        "optim.schedule=step",
        "--set",
        "optim.step_size=2",
        "--set",
        "optim.gamma=0.5",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "three epochs and the test: {lines:?}");
    let number = |v: &serde_json::Value, key: &str| {
        v[key].as_f64().unwrap_or_else(|| panic!("`{key}` missing from {v}"))
    };
    for (i, line) in lines[..3].iter().enumerate() {
        assert_eq!(line["kind"], "epoch");
        assert_eq!(line["epoch"], i + 1, "epochs count from 1");
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        // The rate of the epoch's last step: steps 1, 3, 5 (2 per epoch), halved every 2 steps.
        let last_step = 2 * i + 1;
        assert_eq!(number(line, "learning_rate"), 5e-4 * 0.5f64.powi(last_step as i32 / 2));
        // One unit: every accuracy in percent (means over 2 episodes of 2 queries × 3 ways:
        // multiples of 100/12, which a fraction would not be).
        for key in ["train_acc", "val_acc"] {
            let acc = number(line, key);
            assert!((0.0..=100.0).contains(&acc), "{key} {acc}");
            let twelfths = acc / (100.0 / 12.0);
            assert!((twelfths - twelfths.round()).abs() < 1e-6, "{key} {acc}: not in percent");
        }
        // The loss is its cross-entropy and VIC parts.
        let (loss, ce, vic) = (
            number(line, "train_loss"),
            number(line, "train_ce_loss"),
            number(line, "train_vic_loss"),
        );
        assert!((ce + vic - loss).abs() < 1e-9 * loss.abs().max(1.0), "{ce} + {vic} vs {loss}");
        assert!(ce > 0.0 && vic > 0.0);
        let (epoch_s, step_s, wait_s) = (
            number(line, "epoch_seconds"),
            number(line, "step_seconds"),
            number(line, "data_wait_seconds"),
        );
        assert!(wait_s >= 0.0 && step_s > 0.0, "{line}");
        assert!(
            epoch_s >= 2.0 * step_s + wait_s,
            "the epoch holds its 2 steps and their waits: {line}"
        );
    }
    // The test's line: the result results.txt and stdout give.
    let test = &lines[3];
    assert_eq!(test["kind"], "test");
    assert_eq!(test["episodes"], 3);
    assert!(test["checkpoint"].as_str().unwrap().ends_with("best.ckpt"));
    let shown =
        format!("accuracy {:.2}% ± {:.2}%", number(test, "test_acc"), number(test, "test_ci95"));
    assert!(stdout.contains(&shown), "{shown} not in {stdout}");

    // curves.svg: loss, its cross-entropy part, validation and training accuracy, one point per
    // epoch each, at the same three x positions.
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    let curves = curves_in(&svg);
    assert_eq!(curves.len(), 4, "{curves:?}");
    assert!(curves.iter().all(|c| c.len() == 3), "{curves:?}");
    // Validation is the curve with a marker on each point; higher accuracy is higher up.
    let markers: Vec<(f64, f64)> = svg
        .split("<circle")
        .skip(1)
        .map(|c| {
            let attr = |name: &str| -> f64 {
                c.split(&format!("{name}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (attr("cx"), attr("cy"))
        })
        .collect();
    let val = curves.iter().find(|c| **c == markers).unwrap_or_else(|| panic!("{markers:?}"));
    let accs: Vec<f64> = lines[..3].iter().map(|l| number(l, "val_acc")).collect();
    for a in 0..3 {
        for b in 0..3 {
            if accs[a] > accs[b] + 1e-9 {
                assert!(val[a].1 < val[b].1, "{accs:?} drawn at {val:?}");
            }
        }
    }
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // plot: two runs overlaid (the second without VIC: no cross-entropy part), a legend entry
    // per run and curve.
    let plain = dir.path().join("plain");
    let (code, _, stderr) = fsct(&["--config", s(&file), "--output", s(&plain), "--epochs", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let out = dir.path().join("compare.svg");
    let (code, stdout, stderr) = fsct(&["plot", s(&run), s(&plain), "--output", s(&out)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("compare.svg") && stdout.contains("compare.png"), "{stdout}");
    let svg = std::fs::read_to_string(&out).unwrap();
    let lengths: Vec<usize> = curves_in(&svg).iter().map(Vec::len).collect();
    assert_eq!(lengths, [3, 3, 3, 3], "the 2-epoch run's curves have 2 points (not counted)");
    for label in
        ["vic validation (95% CI band)", "plain validation (95% CI band)", "plain training loss"]
    {
        assert!(svg.contains(label), "legend `{label}` missing");
    }
    assert!(dir.path().join("compare.png").exists());
    // Refusals: the output exists; a folder that holds no run.
    let (code, _, stderr) = fsct(&["plot", s(&run), "--output", s(&out)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("compare.svg") && stderr.contains("--overwrite"), "{stderr}");
    let (code, _, stderr) = fsct(&["plot", s(dir.path()), "--output", s(&out), "--overwrite"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("metrics.jsonl") && stderr.contains("run folders"), "{stderr}");
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
        &["plot", "--help"],
        &["completions", "--help"],
    ] {
        let (code, stdout, stderr) = fsct(sub);
        assert_eq!(code, 0, "{sub:?}: {stderr}");
        assert!(stdout.contains("Example"), "{sub:?}: no example in\n{stdout}");
    }
}
