use super::*;
use crate::image_file::{OpenOptions, Verify};
use crate::image_folder::open_image_folder_split;
use crate::synthetic::{synthetic_splits, SyntheticConfig};
use crate::test_util::{code, coded_folder};
use crate::transform::TransformMode;

fn config(threads: usize, seed: u64, cache: bool) -> LoaderConfig {
    LoaderConfig { threads, prefetch: 3, seed, cache }
}

fn synthetic() -> Arc<Dataset> {
    let splits = synthetic_splits(&SyntheticConfig {
        classes: 20,
        images_per_class: 12,
        native_size: 20,
        ..SyntheticConfig::default()
    });
    splits.base
}

fn collect(loader: EpisodeLoader) -> Vec<Episode> {
    loader.map(|e| e.unwrap()).collect()
}

#[test]
fn episodes_hold_the_planned_images_in_layout_order() {
    let dir = tempfile::tempdir().unwrap();
    coded_folder(dir.path(), 6, 8);
    let data = Arc::new(Dataset::open_folder(dir.path(), None).unwrap());
    let spec = EpisodeSpec { n_way: 3, k_shot: 2, n_query: 3 };
    let transform = TransformConfig::new(8, TransformMode::Eval);
    let loader =
        EpisodeLoader::new(data.clone(), spec, transform, config(2, 9, false), 10..16).unwrap();
    assert_eq!(loader.len(), 6);
    let sampler = EpisodeSampler::new(&data, spec, 9).unwrap();
    let episodes = collect(loader);
    assert_eq!(episodes.iter().map(|e| e.index).collect::<Vec<_>>(), (10..16).collect::<Vec<_>>());
    let mut seen_classes = std::collections::HashSet::new();
    for e in &episodes {
        assert_eq!(e.shape, [3, 5, 3, 8, 8]);
        assert_eq!(e.images.len(), 3 * 5 * 3 * 64);
        let plan = sampler.plan(e.index);
        assert_eq!(e.classes, plan.classes);
        for (n, (&class, items)) in plan.classes.iter().zip(&plan.items).enumerate() {
            seen_classes.insert(class);
            for (j, &item) in items.iter().enumerate() {
                // Folder classes are sorted c0…c5, files 00…07: class index = c, item = i.
                let rgb = code(class, item);
                let image = &e.images[(n * 5 + j) * 192..(n * 5 + j + 1) * 192];
                for c in 0..3 {
                    let want = (f32::from(rgb[c]) / 255.0 - [0.485, 0.456, 0.406][c])
                        / [0.229, 0.224, 0.225][c];
                    assert!(image[c * 64..(c + 1) * 64].iter().all(|v| (v - want).abs() < 1e-5));
                }
            }
        }
    }
    assert!(seen_classes.len() > 3, "different episodes draw different classes");
}

#[test]
fn bit_identical_for_any_thread_count_cache_and_range_split() {
    let data = synthetic();
    let spec = EpisodeSpec { n_way: 5, k_shot: 2, n_query: 3 };
    let transform = TransformConfig::new(16, TransformMode::Train);
    let run = |threads, cache, range| {
        collect(
            EpisodeLoader::new(
                data.clone(),
                spec,
                transform.clone(),
                config(threads, 4, cache),
                range,
            )
            .unwrap(),
        )
    };
    let one = run(1, false, 0..8);
    let two = run(2, false, 0..8);
    let three_cached = run(3, true, 0..8);
    assert_eq!(one, two);
    assert_eq!(one, three_cached);
    // A resumed run (a later range) reproduces the same episodes.
    assert_eq!(run(2, false, 5..8)[..], one[5..]);
    // Episodes differ from each other and from another seed.
    assert_ne!(one[0].images, one[1].images);
    let other = collect(
        EpisodeLoader::new(data.clone(), spec, transform, config(2, 5, false), 0..1).unwrap(),
    );
    assert_ne!(other[0].images, one[0].images);
}

#[test]
fn cache_keeps_decoded_images() {
    let data = synthetic();
    let spec = EpisodeSpec { n_way: 5, k_shot: 1, n_query: 1 };
    let transform = TransformConfig::new(16, TransformMode::Eval);
    let mut loader = EpisodeLoader::new(data, spec, transform, config(1, 0, true), 0..3).unwrap();
    assert!(loader.next().unwrap().is_ok());
    // Resize(16) of a 20-px glyph: 16 × 16 × 3 bytes each, at least the 10 images used.
    assert!(loader.cached_bytes() >= 10 * 16 * 16 * 3);
}

#[test]
fn a_corrupt_image_is_an_error_naming_the_file_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    coded_folder(dir.path(), 2, 3);
    std::fs::write(dir.path().join("c1/01.png"), b"garbage").unwrap();
    let exists_only = OpenOptions { verify: Verify::Exists, threads: 1 };
    let data = Arc::new(open_image_folder_split(dir.path(), "base", &exists_only).unwrap());
    let spec = EpisodeSpec { n_way: 2, k_shot: 1, n_query: 2 };
    let transform = TransformConfig::new(8, TransformMode::Eval);
    let results: Vec<_> =
        EpisodeLoader::new(data, spec, transform, config(2, 0, false), 0..3).unwrap().collect();
    assert_eq!(results.len(), 3);
    for r in results {
        let err = r.unwrap_err().to_string();
        assert!(err.contains("01.png: cannot decode image"), "{err}");
    }
}

#[test]
fn a_truncated_jpeg_is_an_error_naming_the_file_not_a_half_grey_image() {
    let dir = tempfile::tempdir().unwrap();
    coded_folder(dir.path(), 2, 3);
    let path = crate::test_util::save(dir.path(), "c0/01.jpg", &crate::test_util::noisy(32, 32));
    std::fs::remove_file(dir.path().join("c0/01.png")).unwrap();
    crate::test_util::cut_in_half(&path);
    let exists_only = OpenOptions { verify: Verify::Exists, threads: 1 };
    let data = Arc::new(open_image_folder_split(dir.path(), "base", &exists_only).unwrap());
    let spec = EpisodeSpec { n_way: 2, k_shot: 1, n_query: 2 };
    let transform = TransformConfig::new(8, TransformMode::Eval);
    let loader = EpisodeLoader::new(data, spec, transform, config(2, 0, true), 0..2).unwrap();
    for r in loader {
        let err = r.unwrap_err().to_string();
        assert!(err.contains("01.jpg: cannot decode image: the file is truncated"), "{err}");
    }
}

#[test]
fn bad_settings_are_rejected_before_starting() {
    let data = synthetic();
    let transform = TransformConfig::new(16, TransformMode::Eval);
    let err = EpisodeLoader::new(
        data.clone(),
        EpisodeSpec::default(),
        transform.clone(),
        LoaderConfig { prefetch: 0, ..LoaderConfig::default() },
        0..1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("`prefetch` is 0"), "{err}");
    let wide = EpisodeSpec { n_way: 50, k_shot: 1, n_query: 1 };
    let err = EpisodeLoader::new(data, wide, transform, LoaderConfig::default(), 0..1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("n_way = 50"), "{err}");
}

#[test]
fn dropping_early_stops_the_workers() {
    let data = synthetic();
    let spec = EpisodeSpec { n_way: 5, k_shot: 1, n_query: 1 };
    let transform = TransformConfig::new(16, TransformMode::Eval);
    let mut loader =
        EpisodeLoader::new(data, spec, transform, config(2, 0, false), 0..1_000_000).unwrap();
    assert_eq!(loader.next().unwrap().unwrap().index, 0);
    assert_eq!(loader.next().unwrap().unwrap().index, 1);
    drop(loader); // joins the workers; would hang if they ignored the stop flag
}
