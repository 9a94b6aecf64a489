//! Using a trained model on image files (issue 17): the support set of `predict` from a class
//! folder, query and embedding images from files or folders, the eval transform of the model's
//! config, FS-CT/CTX scores for any number of queries, and backbone features.
//!
//! In evaluation mode the queries of an episode do not interact (each query row attends to the
//! prototypes only, batch norm uses its running statistics), so [`predict_scores`] runs any
//! number of queries in chunks of the model's training episode shape and a query's scores equal
//! its scores inside an episode. The exception is the reference's frozen torchvision ResNet,
//! whose batch norms always normalise with the batch's own statistics (spec §1.5): there every
//! image of a chunk shapes every other's features, as in the reference.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use fsct_backbone::Backbone;
use fsct_episodes::{Class, Dataset, Item, TransformConfig, TransformMode, IMAGE_EXTENSIONS};
use fsct_transformer::FewShotModel;
use rand::seq::index;

use crate::config::Config;
use crate::error::InputError;
use crate::model::AnyModel;

/// The labelled examples of `predict`: `k_shot` images of each class folder.
#[derive(Debug, Clone, PartialEq)]
pub struct SupportSet {
    /// Class names (the folder names, sorted).
    pub classes: Vec<String>,
    /// The chosen images, `[class][shot]`.
    pub images: Vec<Vec<PathBuf>>,
}

/// Reads `dir/<class>/<image>` and picks `k_shot` images per class: all of them when a class has
/// exactly `k_shot`, else a seeded sample (`seed`, the class's position).
///
/// # Errors
/// An [`InputError`] naming the folder when it has no class folder or a class has fewer than
/// `k_shot` images; image files that cannot be read are reported by fsct-episodes (exit 2).
pub fn support_set(dir: &Path, k_shot: usize, seed: u64) -> Result<SupportSet> {
    let dataset = Dataset::open_folder(dir, None)?;
    let mut classes = Vec::new();
    let mut images = Vec::new();
    for (position, class) in dataset.classes.iter().enumerate() {
        let files: Vec<PathBuf> = class.items.iter().filter_map(item_path).collect();
        if files.len() < k_shot {
            return Err(InputError::new(format!(
                "--support `{}`: class `{}` has {} image(s), the model takes {k_shot} per class \
                 (its k_shot); add images to `{}`",
                dir.display(),
                class.name,
                files.len(),
                dir.join(&class.name).display()
            ))
            .into());
        }
        let chosen = if files.len() == k_shot {
            files
        } else {
            let mut rng = fsct_episodes::stream(seed, &[position as u64]);
            index::sample(&mut rng, files.len(), k_shot)
                .into_iter()
                .map(|i| files[i].clone())
                .collect()
        };
        classes.push(class.name.clone());
        images.push(chosen);
    }
    Ok(SupportSet { classes, images })
}

fn item_path(item: &Item) -> Option<PathBuf> {
    match item {
        Item::File(path) => Some(path.clone()),
        _ => None,
    }
}

/// The image files of `paths`: files as given, folders searched recursively (sorted), each with
/// its name relative to the folder it was found in (a file given directly keeps its path).
///
/// # Errors
/// An [`InputError`] for a path that does not exist, a file without an image extension, or no
/// image at all.
pub fn image_files(paths: &[PathBuf], flag: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            collect_images(path, &mut found)?;
            found.sort();
            for file in found {
                let name = file.strip_prefix(path).unwrap_or(&file).to_string_lossy().into_owned();
                out.push((name, file));
            }
        } else if path.is_file() {
            if !has_image_extension(path) {
                return Err(InputError::new(format!(
                    "{flag} `{}` is not an image file (extensions: {})",
                    path.display(),
                    IMAGE_EXTENSIONS.join(", ")
                ))
                .into());
            }
            out.push((path.to_string_lossy().into_owned(), path.clone()));
        } else {
            return Err(InputError::new(format!(
                "{flag} `{}` does not exist; give image files or folders of images",
                path.display()
            ))
            .into());
        }
    }
    if out.is_empty() {
        return Err(InputError::new(format!(
            "{flag}: no image files found (extensions: {})",
            IMAGE_EXTENSIONS.join(", ")
        ))
        .into());
    }
    Ok(out)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        InputError::new(format!("cannot read the folder `{}` ({e})", dir.display()))
    })?;
    for entry in entries {
        let path = entry
            .map_err(|e| InputError::new(format!("cannot read `{}` ({e})", dir.display())))?
            .path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The eval transform of the model's config (the reference's, or its 2022 variant).
pub fn eval_transform(config: &Config) -> TransformConfig {
    let mode = if config.data.eval_reference_2022 {
        TransformMode::EvalReference2022
    } else {
        TransformMode::Eval
    };
    TransformConfig { image_size: config.image_size(), mode, single_channel: false }
}

/// Decodes `files` and applies `transform`: `[n, 3, s, s]` on `device`.
///
/// # Errors
/// A file that cannot be decoded (fsct-episodes' error names it; exit 2).
pub fn load_images<B: Backend>(
    files: &[PathBuf],
    transform: &TransformConfig,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let pipeline = transform.pipeline()?;
    let holder = Dataset {
        name: "images".into(),
        source: PathBuf::from("."),
        classes: vec![Class {
            name: "images".into(),
            items: files.iter().cloned().map(Item::File).collect(),
        }],
    };
    let side = transform.image_size;
    let mut values = Vec::with_capacity(files.len() * 3 * side * side);
    // The eval transform draws no random numbers; the generator is only the API's.
    let mut rng = fsct_episodes::stream(0, &[]);
    for item in 0..files.len() {
        values.extend(pipeline.apply(&holder.load(0, item)?, &mut rng));
    }
    Ok(Tensor::from_data(TensorData::new(values, [files.len(), 3, side, side]), device))
}

/// Scores of every query against the support set's classes, `[Q][N]`, computed in chunks of
/// `N·per_class` queries laid out as episodes `[N, K + per_class]` (the last chunk padded with
/// copies of its last query, whose scores are dropped).
///
/// # Shapes
/// - `support`: `[N, K, 3, s, s]`
/// - `queries`: `[Q, 3, s, s]`
pub fn predict_scores<B: Backend>(
    model: &AnyModel<B>,
    support: Tensor<B, 5>,
    queries: Tensor<B, 4>,
    per_class: usize,
) -> Vec<Vec<f32>> {
    let [n_way, _, c, h, w] = support.dims();
    let q = queries.dims()[0];
    let chunk = n_way * per_class.max(1);
    let mut scores = Vec::with_capacity(q);
    let mut start = 0;
    while start < q {
        let count = chunk.min(q - start);
        let mut part = queries.clone().narrow(0, start, count);
        if count < chunk {
            let last = part.clone().narrow(0, count - 1, 1);
            part = Tensor::cat(vec![part, last.repeat_dim(0, chunk - count)], 0);
        }
        // Query b of the chunk sits at class row b / per_class: FS-CT and CTX flatten queries in
        // that order, so score row b is query b.
        let part = part.reshape([n_way, per_class, c, h, w]);
        let episode = Tensor::cat(vec![support.clone(), part], 1);
        let out = model.forward_episode(episode).scores.into_data().convert::<f32>();
        let values = out.to_vec::<f32>().unwrap_or_default();
        scores.extend(values.chunks(n_way).take(count).map(<[f32]>::to_vec));
        start += count;
    }
    scores
}

/// Backbone features of `images`, flattened (`[n, d]`, d = c·h·w: what FS-CT's head sees), in
/// batches of `batch` images.
pub fn embed<B: Backend>(model: &AnyModel<B>, images: Tensor<B, 4>, batch: usize) -> Tensor<B, 2> {
    let n = images.dims()[0];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let count = batch.max(1).min(n - start);
        let maps = model.backbone().features(images.clone().narrow(0, start, count));
        parts.push(maps.flatten(1, 3));
        start += count;
    }
    Tensor::cat(parts, 0)
}
