//! Parity with the reference PyTorch FS-CT: after importing its checkpoints, every intermediate of
//! the forward pass and the scores match what PyTorch computed, within 1e-4 (spec fixtures).

mod common;

use burn::backend::Flex;
use burn::prelude::*;
use common::{local_fixture, max_abs_diff, read_safetensors, shared_fixture};
use fsct_backbone::ConvNetConfig;
use fsct_transformer::import::{import_reference, ImportOptions};
use fsct_transformer::{AttentionVariant, FsctConfig};

type B = Flex;
const TOLERANCE: f32 = 1e-4;

#[test]
fn conv4_cosine_matches_every_reference_intermediate() {
    let device = Default::default();
    let backbone = ConvNetConfig::conv(4).init::<B>(&device);
    let model = FsctConfig::new(5, 5, 1600).init(backbone, &device);
    let (model, report) =
        import_reference(model, shared_fixture("fsct_conv4_cosine.pt"), &ImportOptions::default())
            .unwrap();
    assert_eq!(report.epoch, None, "a plain state dict has no epoch");
    // 4 blocks × 7 aliased conv/BN keys, plus 8 num_batches_tracked (the int ones are skipped unread).
    assert_eq!(
        report
            .ignored
            .iter()
            .filter(|k| k.contains(".trunk.0.") || k.contains(".trunk.1."))
            .count(),
        24
    );

    let io = read_safetensors(&shared_fixture("fsct_conv4_cosine_io.safetensors"));
    let reference =
        read_safetensors(&shared_fixture("fsct_conv4_cosine_intermediates.safetensors"));
    let x = Tensor::<B, 5>::from_data(io["x"].clone(), &device);
    let out = model.forward_detailed(x);

    let checks: [(&str, f32); 7] = [
        ("features", max_abs_diff(out.features, &reference["features"])),
        ("proto_softmax", max_abs_diff(out.proto_softmax, &reference["proto_softmax"])),
        ("z_proto", max_abs_diff(out.z_proto, &reference["z_proto"])),
        ("z_query", max_abs_diff(out.z_query, &reference["z_query"])),
        ("after_attn", max_abs_diff(out.after_attn, &reference["after_attn"])),
        ("after_ffn", max_abs_diff(out.after_ffn, &reference["after_ffn"])),
        ("scores", max_abs_diff(out.scores.clone(), &reference["scores"])),
    ];
    for (name, diff) in checks {
        eprintln!("{name}: max |Δ| = {diff:.2e}");
        assert!(diff < TOLERANCE, "{name} differs from the reference by {diff:e}");
    }
    assert!(max_abs_diff(out.scores, &io["scores"]) < TOLERANCE);
}

/// A reference training checkpoint (`{'epoch', 'state'}` with legacy `FCN.*` keys) and the softmax
/// variant, both made by `tools/make_tiny_fixtures.py` at 16 px (d = 64).
#[test]
fn training_checkpoints_and_the_softmax_variant_match_the_reference() {
    let device = Default::default();
    for (file, variant, epoch) in [
        ("tiny_conv4_cosine.tar", AttentionVariant::Cosine, Some(7)),
        ("tiny_conv4_softmax.pt", AttentionVariant::Softmax, None),
    ] {
        let backbone = ConvNetConfig::conv(4).init::<B>(&device);
        let model = FsctConfig::new(3, 2, 64).with_variant(variant).init(backbone, &device);
        let (model, report) =
            import_reference(model, local_fixture(file), &ImportOptions::default()).unwrap();
        assert_eq!(report.epoch, epoch, "{file}");
        if epoch.is_some() {
            assert!(
                report.ignored.iter().any(|k| k.starts_with("FCN.")),
                "legacy FCN keys are ignored"
            );
        }
        let io = read_safetensors(&local_fixture(
            &file.replace(".tar", "_io.safetensors").replace(".pt", "_io.safetensors"),
        ));
        let scores = model.forward(Tensor::from_data(io["x"].clone(), &device));
        let diff = max_abs_diff(scores, &io["scores"]);
        assert!(diff < TOLERANCE, "{file}: scores differ by {diff:e}");
    }
}
