//! The episodic loader: worker threads decode and transform whole episodes ahead of the consumer,
//! at most `prefetch` episodes ahead, and the iterator hands them out in episode order.
//!
//! Episode `i` depends only on (seed, i): its plan comes from the RNG of (seed, i) and image `t`
//! of it is augmented with the RNG of (seed, i, t). So the episodes are bit-identical whatever the
//! number of threads, the prefetch depth, the cache, or the order in which workers finish.

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::cache::{shared_cache, ImageCache};
use crate::episode::Episode;
use crate::error::EpisodeError;
use crate::sampler::{EpisodePlan, EpisodeSampler, EpisodeSpec};
use crate::seed::{stream, tag};
use crate::split::{load_item, Dataset};
use crate::transform::{Transform, TransformConfig};

/// Threads, prefetch depth, seed and cache of an [`EpisodeLoader`] (defaults in brackets).
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Worker threads decoding and transforming episodes; 0 = one per available core. \[2\]
    pub threads: usize,
    /// How many episodes the workers may prepare ahead of the consumer (at least 1). \[4\]
    pub prefetch: usize,
    /// Seed of the episode stream: episode `i` depends only on (seed, i). \[0\]
    pub seed: u64,
    /// Keep every decoded, resized image (`Resize(S)`, before augmentation) in memory after
    /// its first use. The cache is shared by every loader over the same `Arc<Dataset>` and image
    /// size (so it carries over from epoch to epoch) and freed with the dataset. An 84-px image takes about 25 KB (miniImageNet's 38 400 base images
    /// about 1 GB), a 32-px synthetic one 3 KB. \[false\]
    pub cache: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self { threads: 2, prefetch: 4, seed: 0, cache: false }
    }
}

struct Inner {
    dataset: Arc<Dataset>,
    sampler: EpisodeSampler,
    transform: Transform,
    cache: Option<Arc<ImageCache>>,
    prefetch: usize,
}

/// Episodes of a range of indices, built on worker threads ahead of the consumer and delivered
/// in index order: an `Iterator<Item = Result<Episode, EpisodeError>>`.
///
/// Episode `i` depends only on (seed, i) (see the module docs), so a range such as
/// `epoch * n..(epoch + 1) * n` gives every epoch fresh episodes, and a resumed run the same ones.
/// Dropping the loader stops and joins its workers.
pub struct EpisodeLoader {
    inner: Arc<Inner>,
    iter: EpisodeIter,
}

impl EpisodeLoader {
    /// Checks everything up front (the spec against the dataset, the transform, the settings),
    /// then starts the workers on `episodes`.
    pub fn new(
        dataset: Arc<Dataset>,
        spec: EpisodeSpec,
        transform: TransformConfig,
        config: LoaderConfig,
        episodes: Range<u64>,
    ) -> Result<EpisodeLoader, EpisodeError> {
        let transform = transform.pipeline()?;
        if config.prefetch == 0 {
            return Err(EpisodeError::Config {
                field: "prefetch",
                problem: "is 0".into(),
                fix: "use at least 1 (a few episodes, e.g. 4)",
            });
        }
        let sampler = EpisodeSampler::new(&dataset, spec, config.seed)?;
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let cache = config.cache.then(|| shared_cache(&dataset, transform.image_size));
        let inner =
            Arc::new(Inner { dataset, sampler, transform, cache, prefetch: config.prefetch });
        let iter = EpisodeIter::start(Arc::clone(&inner), episodes, threads);
        Ok(Self { inner, iter })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.inner.dataset
    }

    pub fn spec(&self) -> EpisodeSpec {
        self.inner.sampler.spec()
    }

    /// The pipeline every image goes through.
    pub fn transform(&self) -> &Transform {
        &self.inner.transform
    }

    /// Which classes and images episode `index` uses (no decoding).
    pub fn plan(&self, index: u64) -> EpisodePlan {
        self.inner.sampler.plan(index)
    }

    /// Bytes held by the image cache (0 without one).
    pub fn cached_bytes(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, |c| c.used_bytes())
    }

    /// Builds episode `index` (inside or outside the range) on the calling thread.
    pub fn episode(&self, index: u64) -> Result<Episode, EpisodeError> {
        self.inner.build(index)
    }
}

impl Iterator for EpisodeLoader {
    type Item = Result<Episode, EpisodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for EpisodeLoader {}

impl Inner {
    fn build(&self, index: u64) -> Result<Episode, EpisodeError> {
        let _span = tracing::debug_span!("episode", index).entered();
        let plan = self.sampler.plan(index);
        let spec = self.sampler.spec();
        let s = self.transform.image_size as usize;
        let per_image = self.transform.output_len();
        let per_class = spec.images_per_class();
        let mut images = vec![0.0f32; spec.images() * per_image];
        let mut chunks = images.chunks_exact_mut(per_image);
        for (n, (&class, items)) in plan.classes.iter().zip(&plan.items).enumerate() {
            for (j, &item) in items.iter().enumerate() {
                let t = (n * per_class + j) as u64;
                let load = || {
                    let decoded =
                        load_item(&self.dataset.classes[class].items[item], &self.dataset.source)?;
                    Ok(self.transform.prepare(&decoded))
                };
                let prepared = match &self.cache {
                    Some(cache) => cache.get_or_load(class, item, load)?,
                    None => Arc::new(load()?),
                };
                let mut rng = stream(self.sampler.seed(), &[tag::AUGMENT, index, t]);
                let out = chunks.next().ok_or(EpisodeError::WorkerLost)?;
                self.transform.finish(&prepared, &mut rng, out);
            }
        }
        Ok(Episode {
            index,
            shape: [spec.n_way, per_class, self.transform.channels(), s, s],
            k_shot: spec.k_shot,
            images,
            classes: plan.classes,
            items: plan.items,
        })
    }
}

struct Progress {
    /// Offset (within the range) of the next episode to hand to a worker.
    next: AtomicU64,
    /// Offset of the next episode the consumer will take; workers stay below it + prefetch.
    delivered: Mutex<u64>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The worker pool and reorder buffer behind [`EpisodeLoader`].
struct EpisodeIter {
    start: u64,
    len: u64,
    position: u64,
    progress: Arc<Progress>,
    receiver: Option<Receiver<(u64, Result<Episode, EpisodeError>)>>,
    pending: HashMap<u64, Result<Episode, EpisodeError>>,
    workers: Vec<JoinHandle<()>>,
}

impl EpisodeIter {
    fn start(inner: Arc<Inner>, range: Range<u64>, threads: usize) -> Self {
        let len = range.end.saturating_sub(range.start);
        let progress = Arc::new(Progress {
            next: AtomicU64::new(0),
            delivered: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (sender, receiver) = channel();
        let threads = (threads as u64).min(len).max(1) as usize;
        let workers = (0..threads)
            .map(|_| {
                let (inner, progress, sender) =
                    (Arc::clone(&inner), Arc::clone(&progress), sender.clone());
                let start = range.start;
                std::thread::spawn(move || loop {
                    let k = progress.next.fetch_add(1, Ordering::Relaxed);
                    if k >= len || progress.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    {
                        let mut delivered = match progress.delivered.lock() {
                            Ok(d) => d,
                            Err(_) => break,
                        };
                        while k >= *delivered + inner.prefetch as u64
                            && !progress.stop.load(Ordering::Relaxed)
                        {
                            delivered = match progress.wake.wait(delivered) {
                                Ok(d) => d,
                                Err(_) => return,
                            };
                        }
                    }
                    if progress.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A panic while building (a bug, or a decoder bug) becomes an error of this
                    // episode instead of leaving the consumer waiting for it forever.
                    let result = catch_unwind(AssertUnwindSafe(|| inner.build(start + k)))
                        .unwrap_or(Err(EpisodeError::WorkerLost));
                    if sender.send((k, result)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        Self {
            start: range.start,
            len,
            position: 0,
            progress,
            receiver: Some(receiver),
            pending: HashMap::new(),
            workers,
        }
    }

    fn advance(&mut self) {
        self.position += 1;
        if let Ok(mut delivered) = self.progress.delivered.lock() {
            *delivered = self.position;
        }
        self.progress.wake.notify_all();
    }
}

impl Iterator for EpisodeIter {
    type Item = Result<Episode, EpisodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.len {
            return None;
        }
        let want = self.position;
        let result = match self.pending.remove(&want) {
            Some(result) => result,
            None => loop {
                let received = self.receiver.as_ref().map(|r| r.recv());
                match received {
                    Some(Ok((k, result))) if k == want => break result,
                    Some(Ok((k, result))) => {
                        self.pending.insert(k, result);
                    }
                    Some(Err(_)) | None => {
                        // All workers are gone without delivering: stop here.
                        self.position = self.len;
                        return Some(Err(EpisodeError::WorkerLost));
                    }
                }
            },
        };
        debug_assert!(result.as_ref().map_or(true, |e| e.index == self.start + want));
        self.advance();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.len - self.position) as usize;
        (left, Some(left))
    }
}

impl Drop for EpisodeIter {
    fn drop(&mut self) {
        {
            // Under the lock, so no worker can miss the wake-up between its check and its wait.
            let _guard = self.progress.delivered.lock();
            self.progress.stop.store(true, Ordering::Relaxed);
        }
        self.progress.wake.notify_all();
        self.receiver = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_folder::open_image_folder_split;
    use crate::split::{OpenOptions, Verify};
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
        Arc::new(splits.base)
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
        assert_eq!(
            episodes.iter().map(|e| e.index).collect::<Vec<_>>(),
            (10..16).collect::<Vec<_>>()
        );
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
                        assert!(image[c * 64..(c + 1) * 64]
                            .iter()
                            .all(|v| (v - want).abs() < 1e-5));
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
        let mut loader =
            EpisodeLoader::new(data, spec, transform, config(1, 0, true), 0..3).unwrap();
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
        let path =
            crate::test_util::save(dir.path(), "c0/01.jpg", &crate::test_util::noisy(32, 32));
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
}
