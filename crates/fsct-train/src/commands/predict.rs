//! `fsct-train predict`: query images classified against a labelled support folder, printed as a
//! table and, with `--output`, written as CSV or JSON (file, predicted class, a score per class).

use anyhow::Result;
use burn::backend::Flex;
use fsct_train::cli::PredictArgs;
use fsct_train::config::Method;
use fsct_train::error::InputError;
use fsct_train::infer::{eval_transform, image_files, load_images, predict_scores, support_set};
use fsct_train::model::build_model;
use fsct_train::outputs::write_new_file;
use fsct_train::test_report::csv_field;
use fsct_train::weights::load_checkpoint_file;
use serde::Serialize;

/// One query's line of the output.
#[derive(Debug, Serialize)]
struct Prediction {
    file: String,
    predicted: String,
    /// The model's score per class (FS-CT: the head's logits; CTX: negative distances).
    scores: Vec<f32>,
}

/// Classifies the queries of `args`.
pub fn predict(args: &PredictArgs) -> Result<()> {
    let device = Default::default();
    let (mut config, model) = load_checkpoint_file::<Flex>(&args.checkpoint, &device)?;
    let k_shot = config.episodes.k_shot;
    let support = support_set(&args.support, k_shot, args.seed)?;
    let n_way = support.classes.len();
    let fsct = matches!(config.model.method, Method::FsctCosine | Method::FsctSoftmax);
    let model = if n_way == config.episodes.n_way {
        model
    } else if fsct {
        return Err(InputError::new(format!(
            "--support `{}` holds {n_way} class folder(s), but the checkpoint is FS-CT trained \
             {}-way {k_shot}-shot: its learnable prototype weights are shaped [n_way, k_shot], so \
             the support set needs exactly {} classes (CTX models take any number)",
            args.support.display(),
            config.episodes.n_way,
            config.episodes.n_way
        ))
        .into());
    } else if n_way < 2 {
        return Err(InputError::new(format!(
            "--support `{}` holds {n_way} class folder: give at least 2 classes",
            args.support.display()
        ))
        .into());
    } else {
        // CTX's weights do not depend on the way: the same weights in a model for this way.
        config.episodes.n_way = n_way;
        let fresh = build_model::<Flex>(&config, &device)?;
        let bytes = fsct_train::weights::model_bytes(&model)?;
        fsct_train::weights::load_model_bytes(fresh, &bytes, "the checkpoint", &device)?
    };
    let queries = image_files(&args.query, "--query")?;
    let transform = eval_transform(&config);
    let support_files: Vec<_> = support.images.iter().flatten().cloned().collect();
    let side = transform.image_size;
    let support_images = load_images::<Flex>(&support_files, &transform, &device)?
        .reshape([n_way, k_shot, 3, side, side]);
    let query_paths: Vec<_> = queries.iter().map(|(_, p)| p.clone()).collect();
    let query_images = load_images::<Flex>(&query_paths, &transform, &device)?;
    let scores = predict_scores(&model, support_images, query_images, config.episodes.n_query);
    let predictions: Vec<Prediction> = queries
        .iter()
        .zip(scores)
        .map(|((name, _), scores)| {
            let best =
                scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
            Prediction { file: name.clone(), predicted: support.classes[best].clone(), scores }
        })
        .collect();
    let width = predictions.iter().map(|p| p.file.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  predicted", "file");
    for p in &predictions {
        println!("{:<width$}  {}", p.file, p.predicted);
    }
    if let Some(path) = &args.output {
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::to_string_pretty(&serde_json::json!({
                "classes": support.classes,
                "predictions": predictions,
            }))?,
            Some("csv") => csv(&support.classes, &predictions),
            _ => {
                return Err(InputError::new(format!(
                    "--output `{}`: name a `.csv` or a `.json` file",
                    path.display()
                ))
                .into())
            }
        };
        write_new_file(path, text.as_bytes(), args.overwrite, "--output")?;
        println!("written to {}", path.display());
    }
    Ok(())
}

fn csv(classes: &[String], predictions: &[Prediction]) -> String {
    let mut out = String::from("file,predicted");
    for class in classes {
        out.push_str(&format!(",score_{}", csv_field(class).trim_matches('"')));
    }
    out.push('\n');
    for p in predictions {
        out.push_str(&format!("{},{}", csv_field(&p.file), csv_field(&p.predicted)));
        for s in &p.scores {
            out.push_str(&format!(",{s}"));
        }
        out.push('\n');
    }
    out
}
