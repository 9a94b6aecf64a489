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
use crate::dataset::Dataset;
use crate::episode::Episode;
use crate::error::EpisodeError;
use crate::image_file::load_item;
use crate::sampler::{EpisodePlan, EpisodeSampler};
use crate::seed::{stream, tag};
use crate::spec::EpisodeSpec;
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
mod tests;
