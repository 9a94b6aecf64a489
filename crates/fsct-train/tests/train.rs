//! End-to-end behaviour of the trainer: config errors, each memory switch, resume equivalence,
//! and the binary's error handling.

use std::path::Path;
use std::process::Command;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use fsct_train::checkpoint::Checkpoint;
use fsct_train::config::{Config, Precision};
use fsct_train::train::run_experiment;

type AB = Autodiff<Flex>;

/// Flex's random generator is global: tests that seed it and build models must not interleave.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run of a few seconds: 3-way 2-shot, 20 px synthetic glyphs.
fn tiny(output: &Path) -> Config {
    let text = r#"
        [data]
        kind = "synthetic"
        synthetic_classes = 20
        synthetic_images_per_class = 8
        synthetic_native_size = 24
        image_size = 20
        threads = 2
        [episodes]
        n_way = 3
        k_shot = 2
        n_query = 2
        train_episodes = 3
        val_episodes = 2
        test_episodes = 4
        [model]
        backbone = "Conv4"
        [optim]
        epochs = 2
    "#;
    let mut config = Config::parse(text, Path::new("tiny.toml")).unwrap();
    config.run.output = output.to_path_buf();
    config.validate(Path::new("tiny.toml")).unwrap();
    config
}

#[test]
fn config_errors_name_the_file_the_field_and_the_fix() {
    let path = Path::new("configs/broken.toml");
    let err =
        Config::parse("[model]\nbackbone = \"Conv4\"\nheadz = 8\n", path).unwrap_err().to_string();
    assert!(err.contains("configs/broken.toml") && err.contains("headz"), "{err}");
    let err = Config::parse("[model\nbackbone = ", path).unwrap_err().to_string();
    assert!(err.contains("configs/broken.toml"), "{err}");
    let err = Config::parse("[episodes]\nn_way = \"five\"\n", path).unwrap_err().to_string();
    assert!(err.contains("n_way"), "{err}");

    let check =
        |text: &str| Config::parse(text, path).unwrap().validate(path).unwrap_err().to_string();
    let err = check("[episodes]\nn_way = 1\n");
    assert!(err.contains("episodes.n_way") && err.contains("at least 2"), "{err}");
    // An unknown backbone fails as the file is read (the field is typed), with the line.
    let err = Config::parse("[model]\nbackbone = \"ResNet50\"\n", path).unwrap_err().to_string();
    assert!(
        err.contains("configs/broken.toml")
            && err.contains("model.backbone")
            && err.contains("ResNet34"),
        "{err}"
    );
    let err = check("[data]\nkind = \"json\"\n");
    assert!(err.contains("data.root"), "{err}");
    let err = check("[optim]\nlearning_rate = -1.0\n");
    assert!(err.contains("optim.learning_rate"), "{err}");
    // The training recipe: each value that cannot work names its field and the fix.
    for (text, needles) in [
        ("[optim]\noptimizer = \"lamb\"\n", &["optim", "lamb", "\"sgd\""][..]),
        ("[optim]\noptimizer = \"sgd\"\nmomentum = 1.0\n", &["optim.momentum", "[0, 1)"]),
        ("[optim]\noptimizer = \"sgd\"\nmomentum = -0.5\n", &["optim.momentum", "[0, 1)"]),
        (
            "[optim]\noptimizer = \"sgd\"\nmomentum = 0.0\nnesterov = true\n",
            &["optim.nesterov", "momentum"],
        ),
        ("[optim]\nnesterov = true\n", &["optim.nesterov", "\"sgd\""]),
        ("[optim]\nschedule = \"step\"\n", &["optim.step_size", "missing"]),
        ("[optim]\nschedule = \"step\"\nstep_size = 0\n", &["optim.step_size", "from 1"]),
        ("[optim]\nstep_size = 100\n", &["optim.step_size", "schedule = \"step\""]),
        ("[optim]\nschedule = \"step\"\nstep_size = 10\ngamma = 0.0\n", &["optim.gamma", "(0, 1)"]),
        (
            "[optim]\nschedule = \"cosine\"\nmin_learning_rate = 0.1\n",
            &["optim.min_learning_rate", "0 to"],
        ),
        ("[optim]\nmin_learning_rate = 1e-5\n", &["optim.min_learning_rate", "cosine"]),
        (
            "[optim]\nschedule = \"cosine\"\nlearning_rate = 2.0\n",
            &["optim.learning_rate", "at most 1"],
        ),
        ("[optim]\nwarmup_steps = 10\nlearning_rate = 2.0\n", &["optim.learning_rate", "warm-up"]),
        ("[optim]\ngrad_clip_norm = 0.0\n", &["optim.grad_clip_norm", "positive"]),
        (
            "[optim]\nearly_stopping_patience = 0\n",
            &["optim.early_stopping_patience", "at least 1"],
        ),
        ("[optim]\nschedule = \"linear\"\n", &["schedule", "linear"]),
        ("[optim]\nschedule = \"step\"\nstep_size = 10\ngamma = 1.0\n", &["optim.gamma", "(0, 1)"]),
    ] {
        let err = match Config::parse(text, path) {
            Ok(config) => config.validate(path).unwrap_err().to_string(),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("configs/broken.toml"), "{text}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{text}: `{needle}` not in: {err}");
        }
    }
    // The reference's spelling of its optimizers reads, and every recipe that can work validates.
    for text in [
        "[optim]\noptimizer = \"AdamW\"\n",
        "[optim]\noptimizer = \"Adam\"\n",
        "[optim]\noptimizer = \"SGD\"\nnesterov = true\n",
        "[optim]\noptimizer = \"sgd\"\nmomentum = 0.0\n",
        "[optim]\nschedule = \"cosine\"\nwarmup_steps = 500\nmin_learning_rate = 1e-5\n",
        "[optim]\nschedule = \"step\"\nstep_size = 2000\ngamma = 0.5\ngrad_clip_norm = 1.0\n",
        "[optim]\nearly_stopping_patience = 10\n",
    ] {
        Config::parse(text, path).unwrap().validate(path).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    let err = check("[data]\nsynthetic_images_per_class = 10\n");
    assert!(err.contains("k_shot + n_query = 21"), "{err}");
    let err = check("[model]\nuse_vic = true\n[vic]\nepsilon = -1.0\n");
    assert!(err.contains("vic") && err.contains("epsilon"), "{err}");
    let err = check("[memory]\nprecision = \"f16\"\n");
    assert!(
        err.contains("memory.precision") && err.contains("cuda") && err.contains("mixed-f16"),
        "{err}"
    );
    let cuda_f16 =
        Config::parse("[memory]\nprecision = \"bf16\"\n[run]\ndevice = \"cuda\"\n", path).unwrap();
    assert!(cuda_f16.validate(path).is_ok());
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
    }
    assert!(count >= 9, "quickstart, ci_smoke, three memory presets, four datasets");
}

#[test]
fn each_memory_switch_trains_a_step() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    type Variant = (&'static str, fn(&mut Config));
    let variants: [Variant; 4] = [
        ("f32", |_| {}),
        ("mixed-f16", |c| c.memory.precision = Precision::MixedF16),
        ("vic", |c| c.model.use_vic = true),
        ("cleanup", |c| c.memory.cleanup_every = 1),
    ];
    for (name, tweak) in variants {
        let mut config = tiny(&dir.path().join(name));
        config.optim.epochs = 1;
        tweak(&mut config);
        let summary = run_experiment::<AB>(&config, &Default::default()).unwrap();
        assert!(
            summary.test_acc.is_finite() && (0.0..=100.0).contains(&summary.test_acc),
            "{name}"
        );
        let ckpt = Checkpoint::load(&dir.path().join(name).join("last.ckpt")).unwrap();
        assert_eq!(ckpt.header.state.epochs_done, 1);
        assert_eq!(ckpt.header.state.vic.is_some(), name == "vic");
        let metrics = std::fs::read_to_string(dir.path().join(name).join("metrics.jsonl")).unwrap();
        let kinds: Vec<String> = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
            .collect();
        assert_eq!(kinds, ["\"epoch\"", "\"test\""], "one epoch, then the test");
    }
    // Gradient checkpointing runs on another autodiff backend and computes the same thing.
    let mut config = tiny(&dir.path().join("checkpointing"));
    config.optim.epochs = 1;
    let balanced =
        run_experiment::<Autodiff<Flex, BalancedCheckpointing>>(&config, &Default::default())
            .unwrap();
    let mut config = tiny(&dir.path().join("plain"));
    config.optim.epochs = 1;
    let plain = run_experiment::<AB>(&config, &Default::default()).unwrap();
    assert!(
        (balanced.test_acc - plain.test_acc).abs() < 1e-9,
        "{} vs {}",
        balanced.test_acc,
        plain.test_acc
    );
}

#[test]
fn resuming_gives_the_same_result_as_an_uninterrupted_run() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let straight = tiny(&dir.path().join("straight"));
    let full = run_experiment::<AB>(&straight, &Default::default()).unwrap();

    let mut first = tiny(&dir.path().join("resumed"));
    first.optim.epochs = 1;
    run_experiment::<AB>(&first, &Default::default()).unwrap();
    let mut second = tiny(&dir.path().join("resumed"));
    second.run.resume = true;
    let resumed = run_experiment::<AB>(&second, &Default::default()).unwrap();

    assert_eq!(full.best_val_acc, resumed.best_val_acc);
    assert_eq!(full.test_acc, resumed.test_acc);
    // Every epoch's loss, accuracy and validation accuracy agree exactly: the weights, BatchNorm
    // statistics and AdamW moments were restored. (The checkpoint bytes themselves differ: Burn
    // stores random parameter ids.)
    let epochs = |d: &str| -> Vec<(f64, f64, f64)> {
        std::fs::read_to_string(dir.path().join(d).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "epoch")
            .map(|v| {
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["train_acc"].as_f64().unwrap(),
                    v["val_acc"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(epochs("straight").len(), 2);
    assert_eq!(epochs("straight"), epochs("resumed"));
    let ckpt = Checkpoint::load(&dir.path().join("resumed/last.ckpt")).unwrap();
    assert_eq!(ckpt.header.state.epochs_done, 2);
    assert_eq!(ckpt.header.state.steps, 6);
}

#[test]
fn the_binary_reports_bad_input_with_exit_code_2_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[episodes]\nn_wya = 5\n").unwrap();
    let missing_data = dir.path().join("missing.toml");
    std::fs::write(&missing_data, "[data]\nkind = \"json\"\nroot = \"/nonexistent/miniImagenet\"\n[model]\nbackbone = \"Conv4\"\n").unwrap();
    let sgd = dir.path().join("sgd.toml");
    std::fs::write(&sgd, "[optim]\noptimizer = \"sgd\"\nmomentum = 1.5\n").unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "[optim]\noptimizer = \"sgd\"\n").unwrap();
    let cases: [(Vec<&str>, &str); 7] = [
        (
            vec!["--config", sgd.to_str().unwrap()],
            "`optim.momentum` is 1.5; use a factor in [0, 1)",
        ),
        (
            vec!["--config", plain.to_str().unwrap(), "--set", "optim.schedule=step"],
            "`optim.step_size` is missing",
        ),
        (vec!["--config", bad.to_str().unwrap()], "n_wya"),
        (vec!["--config", "/nonexistent/config.toml"], "/nonexistent/config.toml"),
        (vec![], "--config"),
        (
            vec![
                "--config",
                missing_data.to_str().unwrap(),
                "--output",
                dir.path().to_str().unwrap(),
            ],
            "/nonexistent/miniImagenet",
        ),
        (vec!["test", "--checkpoint", bad.to_str().unwrap()], "not a valid fsct checkpoint"),
    ];
    for (args, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_fsct-train")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_half_copy_of_a_fresh_model_carries_the_masters_weights() {
    use burn::module::Module;
    use burn::tensor::FloatDType;
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path());
    let device = Default::default();
    let model = fsct_train::model::build_model::<Autodiff<Flex>>(&config, &device).unwrap();
    // Before the fix the copy drew its own random weights at its first use.
    let copy = fsct_train::precision::half_copy(&model, FloatDType::F16);
    let flat = |m: &fsct_train::model::AnyModel<Autodiff<Flex>>| -> Vec<f32> {
        let bytes = fsct_train::weights::model_bytes(m).unwrap();
        let restored = fsct_train::weights::load_model_bytes(
            fsct_train::model::build_model::<Autodiff<Flex>>(&config, &device).unwrap(),
            &bytes,
            "the copy",
            &device,
        )
        .unwrap();
        let mut out = Vec::new();
        restored.visit(&mut Collect(&mut out));
        out
    };
    struct Collect<'a>(&'a mut Vec<f32>);
    impl<B: burn::prelude::Backend> burn::module::ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::prelude::Tensor<B, D>>,
        ) {
            self.0.extend(p.val().cast(FloatDType::F32).into_data().iter::<f32>());
        }
    }
    let (master, half) = (flat(&model), flat(&copy));
    assert_eq!(master.len(), half.len());
    let worst = master
        .iter()
        .zip(&half)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-3,
        "the half copy differs from the master by {worst} (f16 rounding is < 1e-3)"
    );
}
