//! `fsct-train embed`: the backbone features of images (`[n, d]`, what FS-CT's head sees) with
//! their names, as safetensors, for users who fit their own heads.

use std::collections::HashMap;

use anyhow::Result;
use burn::backend::Flex;
use fsct_train::cli::EmbedArgs;
use fsct_train::error::InputError;
use fsct_train::infer::{embed as backbone_features, eval_transform, image_files, load_images};
use fsct_train::outputs::write_new_file;
use fsct_train::weights::load_checkpoint_file;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Embeds the images of `args`.
pub fn embed(args: &EmbedArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(InputError::new("--batch 0: give at least 1 image per forward pass").into());
    }
    let device = Default::default();
    let (config, model) = load_checkpoint_file::<Flex>(&args.checkpoint, &device)?;
    let files = image_files(&args.images, "--images")?;
    let paths: Vec<_> = files.iter().map(|(_, p)| p.clone()).collect();
    tracing::info!(images = paths.len(), "embedding");
    let images = load_images::<Flex>(&paths, &eval_transform(&config), &device)?;
    let features = backbone_features(&model, images, args.batch);
    let [n, d] = features.dims();
    let values = features.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let metadata = HashMap::from([
        ("names".to_string(), serde_json::to_string(&names)?),
        ("checkpoint".to_string(), args.checkpoint.display().to_string()),
        ("image_size".to_string(), config.image_size().to_string()),
    ]);
    let view = TensorView::new(Dtype::F32, vec![n, d], &bytes)?;
    let encoded = safetensors::serialize([("features", view)], Some(metadata))?;
    write_new_file(&args.output, &encoded, args.overwrite, "--output")?;
    println!("embedded {n} images ({d} features each) into {}", args.output.display());
    Ok(())
}
