//! Reference checkpoints in the variants they come in: legacy (pre-1.6) format, wrapper prefixes
//! (`module.` from DataParallel/DDP, `_orig_mod.` from torch.compile, both), state dicts nested
//! under `state`, `state_dict` or `model` beside optimizer state; and keys that are really missing.
//! Fixtures: `tools/make_variant_fixtures.py` (one micro FS-CT saved each way).

mod common;

use burn::backend::Flex;
use burn::prelude::*;
use burn_store::pytorch::reader::PickleValue;
use burn_store::pytorch::PytorchReader;
use common::torchfile::{f32_entry, write_legacy, write_zip};
use common::{local_fixture, max_abs_diff, read_safetensors};
use fsct_backbone::{ConvNet, ConvNetConfig};
use fsct_transformer::import::{import_reference, CheckpointFormat, ImportError, ImportOptions};
use fsct_transformer::{FewShotTransformer, FsctConfig};

type B = Flex;

/// The micro model of the fixtures: Conv1 on 2×2 images (d = 64), 2 heads of 8, FFN width 16.
fn micro() -> FewShotTransformer<B, ConvNet<B>> {
    let device = Default::default();
    let backbone = ConvNetConfig::conv(1).init::<B>(&device);
    FsctConfig::new(3, 2, 64)
        .with_heads(2)
        .with_dim_head(8)
        .with_mlp_dim(16)
        .init(backbone, &device)
}

struct Expect {
    file: &'static str,
    format: CheckpointFormat,
    epoch: Option<i64>,
    state_dict_key: Option<&'static str>,
    stripped_prefix: Option<&'static str>,
}

#[test]
fn every_variant_imports_to_the_same_scores() {
    use CheckpointFormat::{Legacy, Zip};
    let cases = [
        Expect {
            file: "micro_cosine_legacy.tar",
            format: Legacy,
            epoch: Some(11),
            state_dict_key: Some("state"),
            stripped_prefix: None,
        },
        Expect {
            file: "micro_cosine_legacy_plain.pt",
            format: Legacy,
            epoch: None,
            state_dict_key: None,
            stripped_prefix: None,
        },
        Expect {
            file: "micro_cosine_dataparallel.pt",
            format: Zip,
            epoch: None,
            state_dict_key: None,
            stripped_prefix: Some("module."),
        },
        Expect {
            file: "micro_cosine_compiled.pth",
            format: Zip,
            epoch: None,
            state_dict_key: None,
            stripped_prefix: Some("_orig_mod."),
        },
        Expect {
            file: "micro_cosine_ddp_compiled.tar",
            format: Zip,
            epoch: Some(5),
            state_dict_key: Some("state"),
            stripped_prefix: Some("module._orig_mod."),
        },
        Expect {
            file: "micro_cosine_lightning.ckpt",
            format: Zip,
            epoch: Some(6),
            state_dict_key: Some("state_dict"),
            stripped_prefix: Some("model."),
        },
        Expect {
            file: "micro_cosine_model_optimizer.pt",
            format: Zip,
            epoch: Some(8),
            state_dict_key: Some("model"),
            stripped_prefix: Some("module."),
        },
    ];
    let device = Default::default();
    let io = read_safetensors(&local_fixture("micro_cosine_io.safetensors"));
    for case in cases {
        let (model, report) =
            import_reference(micro(), local_fixture(case.file), &ImportOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_eq!(report.format, case.format, "{}", case.file);
        assert_eq!(report.epoch, case.epoch, "{}", case.file);
        assert_eq!(report.state_dict_key.as_deref(), case.state_dict_key, "{}", case.file);
        assert_eq!(report.stripped_prefix.as_deref(), case.stripped_prefix, "{}", case.file);
        // Conv1: 6 aliased float conv/BN keys (the int num_batches_tracked are skipped unread).
        assert!(
            report.ignored.iter().filter(|k| k.contains(".trunk.0.trunk.")).count() == 6,
            "{}",
            case.file
        );
        if case.file == "micro_cosine_legacy.tar" {
            assert!(
                report.ignored.iter().any(|k| k.starts_with("FCN.")),
                "legacy FCN keys are ignored"
            );
        }
        let scores = model.forward(Tensor::from_data(io["x"].clone(), &device));
        let diff = max_abs_diff(scores, &io["scores"]);
        assert!(diff < 1e-4, "{}: scores differ by {diff:e}", case.file);
    }
}

/// burn-store reads a legacy file's tensors but not its other entries: `read_pickle_data` parses
/// only the first pickle of the stream (the format's magic number), so the epoch of a legacy
/// training checkpoint comes from fsct's own reading of the pickles.
#[test]
fn burn_store_alone_misses_a_legacy_epoch() {
    let legacy = local_fixture("micro_cosine_legacy.tar");
    let from_burn = PytorchReader::read_pickle_data(&legacy, Some("epoch"));
    assert!(
        !matches!(from_burn, Ok(PickleValue::Int(11))),
        "burn-store now reads legacy metadata: {from_burn:?}"
    );
    let reader = PytorchReader::with_top_level_key(&legacy, "state").unwrap();
    assert!(reader.get("proto_weight").is_some(), "burn-store reads the legacy tensors");

    let (_, report) = import_reference(micro(), &legacy, &ImportOptions::default()).unwrap();
    assert_eq!(report.epoch, Some(11));
}

#[test]
fn a_missing_key_names_the_similar_keys_of_the_file() {
    let file = local_fixture("micro_cosine_renamed.pt");
    let err = import_reference(micro(), &file, &ImportOptions::default()).unwrap_err();
    match &err {
        ImportError::MissingKey { key, similar, .. } => {
            assert_eq!(key, "proto_weight");
            assert_eq!(similar, &["x.proto_weight"]);
        }
        other => panic!("expected MissingKey, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("micro_cosine_renamed.pt") && text.contains("did you mean `x.proto_weight`?"),
        "{text}"
    );
    assert!(text.contains("rename"), "the error says how to fix it: {text}");

    // Nothing alike: the error says so and keeps the old advice.
    let device = Default::default();
    let conv2 = FsctConfig::new(3, 2, 64)
        .with_heads(2)
        .with_dim_head(8)
        .with_mlp_dim(16)
        .init(ConvNetConfig::conv(2).init::<B>(&device), &device);
    let err = import_reference(
        conv2,
        local_fixture("micro_cosine_dataparallel.pt"),
        &ImportOptions::default(),
    )
    .unwrap_err();
    match &err {
        ImportError::MissingKey { key, similar, .. } => {
            assert!(key.starts_with("feature.trunk.1."), "{err}");
            assert!(similar.iter().all(|k| k.starts_with("feature.trunk.0.")), "{similar:?}");
        }
        other => panic!("expected MissingKey, got {other}"),
    }
    assert!(err.to_string().contains("different model"), "{err}");
}

/// Prefixes are stripped only when *every* key carries them, and only when that makes the keys
/// name the model's parameters; a nested dict is found under any name.
#[test]
fn prefixes_and_nesting_are_found_in_crafted_files() {
    let dir = std::env::temp_dir().join(format!("fsct-variants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Default::default();
    // A model with a single parameter: the prototype weights.
    #[derive(Module, Debug)]
    struct Proto<B: Backend> {
        proto_weight: burn::module::Param<Tensor<B, 3>>,
    }
    let model = || Proto::<B> {
        proto_weight: burn::module::Param::from_tensor(Tensor::zeros([2, 1, 1], &device)),
    };
    let values = [1.5f32, -2.0];
    for (name, key, legacy) in [
        ("plain", "proto_weight", false),
        ("ddp", "module.proto_weight", true),
        ("deep", "module._orig_mod.module.proto_weight", false),
        ("lightning", "model.proto_weight", true),
    ] {
        let file = dir.join(format!("{name}.pt"));
        let entries = [f32_entry(key, "0", &values, &[2, 1, 1])];
        if legacy {
            write_legacy(&file, &entries, Some(3));
        } else {
            write_zip(&file, &entries, None);
        }
        let (loaded, report) = import_reference::<B, _>(model(), &file, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let prefix = key.strip_suffix("proto_weight").unwrap();
        assert_eq!(
            report.stripped_prefix.as_deref(),
            (!prefix.is_empty()).then_some(prefix),
            "{name}"
        );
        assert_eq!(report.state_dict_key.as_deref(), legacy.then_some("state"), "{name}");
        assert_eq!(report.epoch, legacy.then_some(3), "{name}");
        assert_eq!(
            loaded.proto_weight.val().into_data().to_vec::<f32>().unwrap(),
            values,
            "{name}"
        );
    }
    // A prefix on only some keys is not stripped: the others would lose their names.
    let file = dir.join("partial.pt");
    write_zip(
        &file,
        &[
            f32_entry("module.proto_weight", "0", &values, &[2, 1, 1]),
            f32_entry("extra", "1", &[0.0], &[1]),
        ],
        None,
    );
    let err = import_reference::<B, _>(model(), &file, &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ImportError::MissingKey { similar, .. } if similar == &["module.proto_weight"]),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
