//! Using a trained model (issue 17): `export` (the reference's key names, round trip through
//! `import-pytorch` to the same scores), `embed` (backbone features with names) and `predict`
//! (a query's scores equal its scores inside an episode), with their bad inputs.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use fsct_backbone::Backbone;
use fsct_train::infer::{eval_transform, load_images};
use fsct_train::weights::load_checkpoint_file;
use fsct_transformer::FewShotModel;

mod common;
use common::{run_binary, s, TINY};

fn fsct(args: &[&str]) -> (i32, String, String) {
    run_binary(args, Some("warn"))
}

/// Trains the tiny config (3-way 2-shot 2-query, 16 px) with `method`; returns (config, best).
fn train(dir: &Path, name: &str, method: &str) -> (PathBuf, PathBuf) {
    let config = dir.join(format!("{name}.toml"));
    let text = TINY
        .replace("backbone = \"Conv4\"", &format!("backbone = \"Conv4\"\nmethod = \"{method}\""));
    std::fs::write(&config, text).unwrap();
    let run = dir.join(name);
    let (code, _, stderr) = fsct(&["--config", s(&config), "--output", s(&run)]);
    assert_eq!(code, 0, "{stderr}");
    (config, run.join("best.ckpt"))
}

/// A random 20×20 RGB PNG (seeded), the shade depending on `shade`.
fn png(path: &Path, seed: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    let image = image::RgbImage::from_fn(20, 20, |_, _| {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        let noise = (state >> 24) as u8 / 2;
        image::Rgb([shade.wrapping_add(noise), noise, 255 - shade])
    });
    image.save(path).unwrap();
}

/// The episode-shaped scores of `model` for `support` `[N][K]` and `queries` (N·M files).
fn episode_scores(
    config: &fsct_train::config::Config,
    model: &fsct_train::model::AnyModel<Flex>,
    support: &[Vec<PathBuf>],
    queries: &[PathBuf],
) -> Vec<Vec<f32>> {
    let device = Default::default();
    let (n, k) = (support.len(), support[0].len());
    let m = queries.len() / n;
    let transform = eval_transform(config);
    let side = transform.image_size;
    let support_files: Vec<PathBuf> = support.iter().flatten().cloned().collect();
    let sup = load_images::<Flex>(&support_files, &transform, &device)
        .unwrap()
        .reshape([n, k, 3, side, side]);
    let qry =
        load_images::<Flex>(queries, &transform, &device).unwrap().reshape([n, m, 3, side, side]);
    let scores = model.forward_episode(Tensor::cat(vec![sup, qry], 1)).scores;
    let values = scores.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    values.chunks(n).map(<[f32]>::to_vec).collect()
}

#[test]
fn export_writes_the_reference_layout_and_imports_back_to_the_same_scores() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["FSCT_cosine", "FSCT_softmax", "CTX_cosine"] {
        let (config, best) = train(dir.path(), method, method);
        let exported = dir.path().join(format!("{method}.safetensors"));
        let (code, stdout, stderr) =
            fsct(&["export", "--checkpoint", s(&best), "--output", s(&exported)]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("load_state_dict"), "{stdout}");
        let bytes = std::fs::read(&exported).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let shape =
            |key: &str| file.tensor(key).unwrap_or_else(|_| panic!("{key}")).shape().to_vec();
        // The reference's names and layouts: aliases, batch counts, [out, in] Linear weights.
        assert_eq!(shape("feature.trunk.0.C.weight"), shape("feature.trunk.0.trunk.0.weight"));
        assert_eq!(shape("feature.trunk.3.trunk.1.running_var"), vec![64]);
        assert_eq!(
            file.tensor("feature.trunk.1.BN.num_batches_tracked").unwrap().dtype(),
            safetensors::Dtype::I64
        );
        if method.starts_with("FSCT") {
            assert_eq!(shape("linear.1.weight"), vec![64, 64]);
            assert_eq!(shape("FFN.1.weight"), vec![512, 64]);
            assert_eq!(shape("ATTN.input_linear.1.weight"), vec![512, 64]);
            assert_eq!(shape("proto_weight"), vec![3, 2, 1]);
        }
        if method == "FSCT_cosine" {
            assert_eq!(shape("linear.2.L.weight_g"), vec![1, 1]);
            assert_eq!(shape("linear.2.L.weight_v"), vec![1, 64]);
        }
        if method == "FSCT_softmax" {
            assert_eq!(shape("linear.2.weight"), vec![1, 64]);
        }
        // Back through import-pytorch (safetensors input): the same scores.
        let imported = dir.path().join(format!("{method}-imported.ckpt"));
        let (code, _, stderr) = fsct(&[
            "import-pytorch",
            "--input",
            s(&exported),
            "--config",
            s(&config),
            "--output",
            s(&imported),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let device = Default::default();
        let (cfg, original) = load_checkpoint_file::<Flex>(&best, &device).unwrap();
        let (_, round_trip) = load_checkpoint_file::<Flex>(&imported, &device).unwrap();
        let x = Tensor::<Flex, 5>::random(
            [3, 4, 3, 16, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let a = original.forward_episode(x.clone()).scores;
        let b = round_trip.forward_episode(x).scores;
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff == 0.0, "{method}: round trip changed the scores by {diff}");
        assert_eq!(cfg.model.method.name(), method);
        // Never replaced silently.
        let (code, _, stderr) =
            fsct(&["export", "--checkpoint", s(&best), "--output", s(&exported)]);
        assert_eq!(code, 2);
        assert!(stderr.contains("--overwrite"), "{stderr}");
    }
}

#[test]
fn predict_scores_equal_the_episode_scores_and_embed_equals_the_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let (_, best) = train(dir.path(), "fsct", "FSCT_cosine");
    // 3 classes × 2 images (the model's way and shot), 7 queries (one chunk of 6 and one of 1).
    let support_dir = dir.path().join("support");
    let classes = ["ant", "bee", "cow"];
    let mut support = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        let files: Vec<PathBuf> = (0..2)
            .map(|i| {
                let path = support_dir.join(name).join(format!("{i}.png"));
                png(&path, (c * 10 + i) as u32, 80 * c as u8);
                path
            })
            .collect();
        support.push(files);
    }
    let query_dir = dir.path().join("queries");
    let queries: Vec<PathBuf> = (0..7)
        .map(|i| {
            let path = query_dir.join(format!("q{i}.png"));
            png(&path, 100 + i, 40 * (i % 3) as u8);
            path
        })
        .collect();
    let out = dir.path().join("preds.json");
    let (code, stdout, stderr) = fsct(&[
        "predict",
        "--checkpoint",
        s(&best),
        "--support",
        s(&support_dir),
        "--query",
        s(&query_dir),
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("q6.png"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["classes"], serde_json::json!(classes));
    let predicted: Vec<Vec<f32>> = json["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        })
        .collect();
    assert_eq!(predicted.len(), 7);
    // The same queries inside episodes, in another order: q6 first, then q0..q4.
    let device = Default::default();
    let (config, model) = load_checkpoint_file::<Flex>(&best, &device).unwrap();
    let order = [6, 0, 1, 2, 3, 4];
    let files: Vec<PathBuf> = order.iter().map(|&i| queries[i].clone()).collect();
    let scores = episode_scores(&config, &model, &support, &files);
    for (row, &i) in order.iter().enumerate() {
        for (a, b) in scores[row].iter().zip(&predicted[i]) {
            assert!((a - b).abs() < 1e-5, "query {i}: {:?} vs {:?}", scores[row], predicted[i]);
        }
    }
    // The CSV form.
    let csv = dir.path().join("preds.csv");
    let (code, _, stderr) = fsct(&[
        "predict",
        "--checkpoint",
        s(&best),
        "--support",
        s(&support_dir),
        "--query",
        s(&queries[0]),
        "--output",
        s(&csv),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("file,predicted,score_ant,score_bee,score_cow\n"), "{text}");
    assert_eq!(text.lines().count(), 2);

    // embed: the backbone's features, flattened, with the names in order.
    let feats = dir.path().join("feats.safetensors");
    let (code, _, stderr) = fsct(&[
        "embed",
        "--checkpoint",
        s(&best),
        "--images",
        s(&query_dir),
        "--output",
        s(&feats),
        "--batch",
        "3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&feats).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let names: Vec<String> =
        serde_json::from_str(&metadata.metadata().as_ref().unwrap()["names"]).unwrap();
    assert_eq!(names, (0..7).map(|i| format!("q{i}.png")).collect::<Vec<_>>());
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("features").unwrap();
    assert_eq!(view.shape(), [7, 64]);
    let written: Vec<f32> =
        view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let images = load_images::<Flex>(&queries, &eval_transform(&config), &device).unwrap();
    let expected = model.backbone().features(images).flatten::<2>(1, 3);
    let expected = expected.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    for (a, b) in written.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn predict_and_embed_refuse_bad_inputs_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, best) = train(dir.path(), "fsct", "FSCT_cosine");
    let support = dir.path().join("support");
    for (c, name) in ["a", "b", "c"].iter().enumerate() {
        for i in 0..3 {
            png(&support.join(name).join(format!("{i}.png")), (c * 3 + i) as u32, 50);
        }
    }
    let query = dir.path().join("q.png");
    png(&query, 99, 10);
    let predict = |support: &Path, query: &Path| {
        fsct(&["predict", "--checkpoint", s(&best), "--support", s(support), "--query", s(query)])
    };
    // More images than k_shot: sampled, fine.
    let (code, _, stderr) = predict(&support, &query);
    assert_eq!(code, 0, "{stderr}");
    // FS-CT's way is fixed: a fourth class is refused.
    png(&support.join("d/0.png"), 7, 9);
    png(&support.join("d/1.png"), 8, 9);
    let (code, _, stderr) = predict(&support, &query);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("4 class folder") && stderr.contains("prototype weights"), "{stderr}");
    std::fs::remove_dir_all(support.join("d")).unwrap();
    // Fewer images than k_shot: the class folder is named.
    std::fs::remove_file(support.join("c/1.png")).unwrap();
    std::fs::remove_file(support.join("c/2.png")).unwrap();
    let (code, _, stderr) = predict(&support, &query);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("class `c` has 1 image") && stderr.contains("k_shot"), "{stderr}");
    png(&support.join("c/1.png"), 5, 9);
    // An unreadable query image and a missing path: named.
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let (code, _, stderr) = predict(&support, &broken);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.png"), "{stderr}");
    let (code, _, stderr) = predict(&support, &dir.path().join("missing.png"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.png") && stderr.contains("does not exist"), "{stderr}");
    let (code, _, stderr) = predict(&dir.path().join("nowhere"), &query);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
    // A support folder without class folders.
    let flat = dir.path().join("flat");
    png(&flat.join("0.png"), 3, 3);
    let (code, _, stderr) = predict(&flat, &query);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("flat"), "{stderr}");
    // export: a checkpoint that does not exist.
    let (code, _, stderr) = fsct(&[
        "export",
        "--checkpoint",
        s(&dir.path().join("none.ckpt")),
        "--output",
        s(&dir.path().join("x.safetensors")),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("none.ckpt"), "{stderr}");
    let (code, _, stderr) = fsct(&[
        "embed",
        "--checkpoint",
        s(&best),
        "--images",
        s(&broken),
        "--output",
        s(&dir.path().join("f.safetensors")),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.png"), "{stderr}");
}
