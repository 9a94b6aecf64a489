//! `model.pretrained` through the `fsct-train` binary. The config builds full-width ResNets only,
//! and a full-width ResNet18 file is 45 MB, too big to commit: the test writes one here, from a
//! seeded fsct ResNet18 saved under torchvision's key names with the hand-written `torch.save`
//! writer of fsct-transformer's tests (the zip layout PyTorch ≥ 1.6 writes). The numbers —
//! that fsct's features equal PyTorch's on a real torchvision/FETI file — are checked at library
//! level against PyTorch's own files (`fsct-transformer/tests/pretrained.rs`, base width 8).
//!
//! Checked here: a new run loads the file and keeps the frozen backbone as loaded (the trained
//! checkpoint's backbone weights equal the file's); a missing file, a Conv backbone and a file
//! missing a key each exit 2 naming what is wrong; a resumed run and `test` never read the file
//! (it may be gone).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use burn::prelude::*;
use burn_store::ModuleSnapshot;
use fsct_backbone::{BackboneName, BuiltinBackbone};
use fsct_train::checkpoint::Checkpoint;
use fsct_train::config::Config;
use fsct_train::model::{build_model, AnyModel};
use fsct_train::weights::load_checkpoint_model;

mod common;
use common::TINY;

#[allow(dead_code)]
#[path = "../../fsct-transformer/tests/common/torchfile.rs"]
mod torchfile;

type B = Flex;

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn fsct(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_fsct-train"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    Outcome { code: out.status.code(), stderr }
}

fn expect(args: &[&str], code: i32, needles: &[&str]) {
    let out = fsct(args);
    assert_eq!(out.code, Some(code), "{args:?}:\n{}", out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "{args:?}: `{needle}` missing from:\n{}", out.stderr);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The torchvision name of a fsct ResNet parameter path.
fn torchvision_key(fsct: &str) -> String {
    let key = fsct
        .replace("downsample.conv.", "downsample.0.")
        .replace("downsample.bn.", "downsample.1.");
    if let Some(stem) = key.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = key.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        key
    }
}

/// Every tensor of a seeded fsct torchvision ResNet18, by torchvision name, plus an `fc` head.
fn resnet18_state_dict() -> Vec<(String, Vec<f32>, Vec<usize>)> {
    let device = Default::default();
    B::seed(&device, 17);
    let net = BackboneName::ResNet { depth: 18, feti: false }.init::<B>(&device);
    let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> =
        ModuleSnapshot::<B>::collect(&net, None, None, true)
            .iter()
            .map(|snapshot| {
                let data = snapshot.to_data().unwrap().convert::<f32>();
                let mut values = data.to_vec::<f32>().unwrap();
                let key = torchvision_key(&snapshot.full_path());
                // Non-trivial BatchNorm statistics, so that the check below sees them.
                if key.ends_with("running_var") {
                    values
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = 0.5 + (i % 7) as f32 / 7.0);
                }
                (key, values, snapshot.shape.to_vec())
            })
            .collect();
    tensors.push(("fc.weight".into(), vec![0.01; 10 * 512], vec![10, 512]));
    tensors.push(("fc.bias".into(), vec![0.0; 10], vec![10]));
    tensors
}

fn write_torch(path: &Path, tensors: &[(String, Vec<f32>, Vec<usize>)]) {
    let entries: Vec<torchfile::Entry> = tensors
        .iter()
        .enumerate()
        .map(|(i, (key, values, shape))| {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            torchfile::f32_entry(key, &i.to_string(), values, &shape)
        })
        .collect();
    torchfile::write_zip(path, &entries, None);
}

fn config(dir: &Path, name: &str, model: &str) -> PathBuf {
    let tiny = TINY.replace("backbone = \"Conv4\"", model);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, tiny).unwrap();
    path
}

fn backbone_of(model: &AnyModel<B>) -> &fsct_backbone::ResNet<B> {
    match model.backbone() {
        BuiltinBackbone::ResNet(net) => net,
        BuiltinBackbone::Conv(_) => panic!("expected a ResNet"),
    }
}

#[test]
fn a_new_run_loads_the_file_and_resume_and_test_never_read_it() {
    let dir = std::env::temp_dir().join(format!("fsct-train-pretrained-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("resnet18-f37072fd.pth");
    let tensors = resnet18_state_dict();
    write_torch(&weights, &tensors);
    let model = format!(
        "backbone = \"ResNet18\"\ntrain_backbone = false\npretrained = \"{}\"",
        s(&weights)
    );
    let cfg = config(&dir, "tv", &model);
    let run = dir.join("run");
    let out = fsct(&["--config", s(&cfg), "--output", s(&run)]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("model.pretrained: backbone weights loaded"), "{}", out.stderr);
    assert!(
        out.stderr.contains("fc.bias, fc.weight"),
        "the unused keys are listed: {}",
        out.stderr
    );

    // The frozen backbone of the trained model is the file's (weights; the statistics of
    // BatchNorms on batch statistics are never used), the head trained.
    let best = run.join("best.ckpt");
    let ckpt = Checkpoint::load(&best).unwrap();
    let device = Default::default();
    let saved: Config = ckpt.header.config.clone();
    assert_eq!(saved.model.pretrained.as_deref(), Some(weights.as_path()));
    let model = build_model::<B>(&saved, &device).unwrap();
    let model = load_checkpoint_model(model, &ckpt, &best, &device).unwrap();
    let net = backbone_of(&model);
    let file = |key: &str| {
        let (_, values, shape) = tensors.iter().find(|(k, _, _)| k == key).unwrap();
        TensorData::new(values.clone(), shape.clone())
    };
    net.conv1.weight.val().into_data().assert_eq(&file("conv1.weight"), true);
    net.layer3[0]
        .downsample
        .as_ref()
        .unwrap()
        .conv
        .weight
        .val()
        .into_data()
        .assert_eq(&file("layer3.0.downsample.0.weight"), true);
    net.layer4[1].bn2.gamma.val().into_data().assert_eq(&file("layer4.1.bn2.weight"), true);

    // Resume (one more epoch) and test with the file gone: neither reads it.
    std::fs::rename(&weights, dir.join("moved.pth")).unwrap();
    let out = fsct(&["--config", s(&cfg), "--output", s(&run), "--resume", "--epochs", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("model.pretrained not read"), "{}", out.stderr);
    let out = fsct(&["test", "--checkpoint", s(&best), "--episodes", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // A new run with the file gone: exit 2 naming the config, the field, the file and the fix.
    expect(
        &["--config", s(&cfg), "--output", s(&dir.join("new"))],
        2,
        &["tv.toml", "model.pretrained", "resnet18-f37072fd.pth", "remove the line"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn conv_backbones_and_files_that_do_not_fit_exit_2_naming_the_problem() {
    let dir =
        std::env::temp_dir().join(format!("fsct-train-pretrained-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conv = config(&dir, "conv", "backbone = \"Conv4\"\npretrained = \"whatever.pth\"");
    expect(
        &["--config", s(&conv), "--output", s(&dir.join("conv"))],
        2,
        &["conv.toml", "model.pretrained", "Conv4", "no pretrained weights layout"],
    );

    // A torchvision file missing one BatchNorm statistic.
    let weights = dir.join("partial.pth");
    let tensors: Vec<_> = resnet18_state_dict()
        .into_iter()
        .filter(|(k, _, _)| k != "layer2.1.bn1.running_mean")
        .collect();
    write_torch(&weights, &tensors);
    let model = format!("backbone = \"ResNet18\"\npretrained = \"{}\"", s(&weights));
    let cfg = config(&dir, "partial", &model);
    expect(
        &["--config", s(&cfg), "--output", s(&dir.join("partial"))],
        2,
        &["partial.pth", "`layer2.1.bn1.running_mean`"],
    );

    // The same file into the FETI layout: refused on its 7×7 stem.
    let weights = dir.join("tv.pth");
    write_torch(&weights, &resnet18_state_dict());
    let model = format!("backbone = \"ResNet18\"\nfeti = true\npretrained = \"{}\"", s(&weights));
    let cfg = config(&dir, "feti", &model);
    expect(
        &["--config", s(&cfg), "--output", s(&dir.join("feti"))],
        2,
        &["tv.pth", "`conv1.weight`", "model.feti = false"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
