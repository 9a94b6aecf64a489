//! Pretrained ResNet backbones (`import::import_backbone`) against the fixtures of
//! `tools/make_pretrained_fixtures.py`: base-width-8 ResNet18s in torchvision's layout (a plain
//! state dict with `fc.*`) and the reference's FETI layout (`{'state_dict': {'module.resnet.' + k}}`),
//! and the features PyTorch computes with them on a fixed input.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn_store::ModuleSnapshot;
use common::torchfile::{f32_entry, write_zip, Entry};
use common::{local_fixture, max_abs_diff, read_safetensors};
use fsct_backbone::{Backbone, BatchNormMode, ResNet, ResNetConfig};
use fsct_transformer::import::{import_backbone, ImportError};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    local_fixture(&format!("pretrained/{name}"))
}

fn tv18(mode: BatchNormMode) -> ResNetConfig {
    ResNetConfig::resnet18_torchvision().with_base_width(8).with_batch_norm(mode)
}

fn feti(blocks: [usize; 4]) -> ResNetConfig {
    ResNetConfig::new(blocks).with_base_width(8)
}

/// ResNet18: stem conv + BN (1 + 5 keys), 8 blocks of two convs and two BNs (12 each), three
/// downsamples (1 + 5 each), `fc.{weight,bias}`.
const RESNET18_KEYS: usize = 6 + 8 * 12 + 3 * 6 + 2;

#[test]
fn torchvision_file_loads_every_key_and_gives_pytorchs_features() {
    let device = Default::default();
    let io = read_safetensors(&fixture("features_w8.safetensors"));
    let input = Tensor::<B, 4>::from_data(io["input"].clone(), &device);

    // Running statistics (PyTorch's eval mode).
    let net = tv18(BatchNormMode::Standard).init::<B>(&device);
    let (net, report) = import_backbone(net, fixture("tv_resnet18_w8.pth")).unwrap();
    assert_eq!(report.loaded.len() + report.ignored.len(), RESNET18_KEYS, "{report:?}");
    assert!(
        report.ignored.iter().all(|k| k.starts_with("fc.") || k.ends_with(".num_batches_tracked")),
        "{:?}",
        report.ignored
    );
    assert_eq!(report.ignored.iter().filter(|k| k.starts_with("fc.")).count(), 2);
    assert!(report.loaded.contains(&"layer4.0.downsample.1.running_var".to_string()));
    assert_eq!((report.state_dict_key.as_deref(), report.stripped_prefix.as_deref()), (None, None));
    let diff = max_abs_diff(net.features(input.clone()), &io["tv_eval"]);
    assert!(diff < 1e-4, "eval-mode features differ from PyTorch's by {diff}");

    // Batch statistics, frozen: the reference's torchvision backbone (spec §1.5).
    let net = tv18(BatchNormMode::BatchStatistics).init::<B>(&device).freeze();
    let (net, _) = import_backbone(net, fixture("tv_resnet18_w8.pth")).unwrap();
    let diff = max_abs_diff(net.features(input), &io["tv_batch_stats"]);
    assert!(diff < 1e-4, "batch-statistics features differ from PyTorch's by {diff}");
}

#[test]
fn feti_file_is_unwrapped_and_gives_pytorchs_features() {
    let device = Default::default();
    let io = read_safetensors(&fixture("features_w8.safetensors"));
    let net = feti([2, 2, 2, 2]).init::<B>(&device);
    let (net, report) = import_backbone(net, fixture("feti_resnet18_w8.pt.tar")).unwrap();
    assert_eq!(report.state_dict_key.as_deref(), Some("state_dict"));
    assert_eq!(report.stripped_prefix.as_deref(), Some("module.resnet."));
    assert_eq!(report.loaded.len() + report.ignored.len(), RESNET18_KEYS);
    assert!(report
        .ignored
        .iter()
        .all(|k| k.starts_with("fc.") || k.ends_with(".num_batches_tracked")));
    let input = Tensor::<B, 4>::from_data(io["input"].clone(), &device);
    let diff = max_abs_diff(net.features(input), &io["feti_eval"]);
    assert!(diff < 1e-4, "FETI features differ from PyTorch's by {diff}");
}

/// Whether the stem conv (and so, by construction, the backbone) still trains after a load.
fn trains(net: &ResNet<Autodiff<B>>) -> bool {
    net.conv1.weight.val().is_require_grad() && net.layer4[1].bn2.gamma.val().is_require_grad()
}

#[test]
fn loading_keeps_a_trained_backbone_trained_and_a_frozen_one_frozen() {
    let device = Default::default();
    let net = feti([2, 2, 2, 2]).init::<Autodiff<B>>(&device);
    assert!(trains(&net));
    let (net, _) = import_backbone(net, fixture("feti_resnet18_w8.pt.tar")).unwrap();
    assert!(trains(&net), "the FETI backbone must stay trainable");

    let net = tv18(BatchNormMode::BatchStatistics).init::<Autodiff<B>>(&device).freeze();
    let (net, _) = import_backbone(net, fixture("tv_resnet18_w8.pth")).unwrap();
    assert!(!net.conv1.weight.val().is_require_grad(), "the torchvision backbone must stay frozen");
    assert!(!net.layer4[1].bn2.gamma.val().is_require_grad());
}

#[test]
fn feti_file_fills_a_shallower_net_and_refuses_a_deeper_one() {
    let device = Default::default();
    // ResNet12 ([2,1,1,1]) takes what it has of the ResNet18 file; the rest is listed.
    let net = feti([2, 1, 1, 1]).init::<B>(&device);
    let (_, report) = import_backbone(net, fixture("feti_resnet18_w8.pt.tar")).unwrap();
    assert_eq!(report.loaded.len() + report.ignored.len(), RESNET18_KEYS);
    for key in ["layer2.1.conv1.weight", "layer4.1.bn2.running_mean", "fc.weight"] {
        assert!(report.ignored.contains(&key.to_string()), "{key}: {:?}", report.ignored);
    }
    // ResNet34 needs blocks the file lacks: the reference would leave them random; fsct refuses.
    let net = feti([3, 4, 6, 3]).init::<B>(&device);
    let err = import_backbone(net, fixture("feti_resnet18_w8.pt.tar")).unwrap_err();
    assert!(
        matches!(&err, ImportError::MissingKey { key, .. } if key == "layer1.2.conv1.weight"),
        "{err}"
    );
    assert_names(&err, "feti_resnet18_w8.pt.tar", "layer1.2.conv1.weight");
}

#[test]
fn a_file_of_the_other_layout_is_refused_on_its_stem() {
    let device = Default::default();
    let err = import_backbone(feti([2, 2, 2, 2]).init::<B>(&device), fixture("tv_resnet18_w8.pth"))
        .unwrap_err();
    assert!(matches!(err, ImportError::Layout { .. }), "{err}");
    assert_names(&err, "tv_resnet18_w8.pth", "conv1.weight");
    assert!(err.to_string().contains("model.feti = false"), "{err}");

    let net = tv18(BatchNormMode::Standard).init::<B>(&device);
    let err = import_backbone(net, fixture("feti_resnet18_w8.pt.tar")).unwrap_err();
    assert!(matches!(err, ImportError::Layout { .. }), "{err}");
    assert_names(&err, "feti_resnet18_w8.pt.tar", "conv1.weight");
    assert!(err.to_string().contains("model.feti = true"), "{err}");
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

/// `net` as a torchvision state dict, each tensor passed through `edit` (`None` drops it).
fn write_state_dict(
    net: &ResNet<B>,
    path: &Path,
    mut edit: impl FnMut(&str, Vec<f32>, Vec<i64>) -> Option<(Vec<f32>, Vec<i64>)>,
) {
    let entries: Vec<Entry> = ModuleSnapshot::<B>::collect(net, None, None, true)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let key = torchvision_key(&s.full_path());
            let values = s.to_data().unwrap().convert::<f32>().to_vec::<f32>().unwrap();
            let shape = s.shape.iter().map(|&d| d as i64).collect();
            let (values, shape) = edit(&key, values, shape)?;
            Some(f32_entry(&key, &i.to_string(), &values, &shape))
        })
        .collect();
    write_zip(path, &entries, None);
}

fn assert_names(err: &ImportError, file: &str, key: &str) {
    let text = err.to_string();
    assert!(text.contains(file), "the error does not name the file `{file}`: {text}");
    assert!(text.contains(&format!("`{key}`")), "the error does not name the key `{key}`: {text}");
}

#[test]
fn missing_keys_wrong_shapes_extra_keys_and_unreadable_files_name_the_file_and_key() {
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("fsct-pretrained-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = tv18(BatchNormMode::Standard).init::<B>(&device);
    let fresh = || tv18(BatchNormMode::Standard).init::<B>(&device);

    // The written file itself loads (the helper is honest).
    let whole = dir.join("whole.pth");
    write_state_dict(&source, &whole, |_, v, s| Some((v, s)));
    let (loaded, _) = import_backbone(fresh(), &whole).unwrap();
    let stem = |n: &ResNet<B>| n.conv1.weight.val().into_data();
    stem(&loaded).assert_eq(&stem(&source), true);

    let missing = dir.join("missing.pth");
    write_state_dict(&source, &missing, |k, v, s| {
        (k != "layer3.1.bn2.running_var").then_some((v, s))
    });
    let err = import_backbone(fresh(), &missing).unwrap_err();
    assert!(matches!(err, ImportError::MissingKey { .. }), "{err}");
    assert_names(&err, "missing.pth", "layer3.1.bn2.running_var");

    let shape = dir.join("shape.pth");
    write_state_dict(&source, &shape, |k, v, s| {
        Some(if k == "layer2.0.conv2.weight" {
            (v[..16 * 16 * 9 / 2].to_vec(), vec![8, 16, 3, 3])
        } else {
            (v, s)
        })
    });
    let err = import_backbone(fresh(), &shape).unwrap_err();
    assert!(matches!(err, ImportError::Shape { .. }), "{err}");
    assert_names(&err, "shape.pth", "layer2.0.conv2.weight");

    // A key no torchvision ResNet18 has (a ResNet34 file, say) is refused in that layout.
    let extra = dir.join("extra.pth");
    let mut entries = Vec::new();
    for (i, s) in ModuleSnapshot::<B>::collect(&source, None, None, true).iter().enumerate() {
        let values = s.to_data().unwrap().convert::<f32>().to_vec::<f32>().unwrap();
        let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        entries.push(f32_entry(&torchvision_key(&s.full_path()), &i.to_string(), &values, &shape));
    }
    entries.push(f32_entry("layer1.2.conv1.weight", "extra", &vec![0.0; 8 * 8 * 9], &[8, 8, 3, 3]));
    write_zip(&extra, &entries, None);
    let err = import_backbone(fresh(), &extra).unwrap_err();
    assert!(matches!(err, ImportError::UnexpectedKey { .. }), "{err}");
    assert_names(&err, "extra.pth", "layer1.2.conv1.weight");

    let absent = dir.join("absent.pth");
    let err = import_backbone(fresh(), &absent).unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.pth"), "{err}");
    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let err = import_backbone(fresh(), &garbage).unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }), "{err}");
    assert!(err.to_string().contains("garbage.pth"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
