//! An in-memory cache of decoded, resized (`Resize(S)`, before augmentation) images, filled on
//! first use and bounded by a byte budget.
//!
//! A loader covers one range of episodes (typically one epoch), but the cache must outlive it to
//! be of any use, so caches live in a registry keyed by the dataset's `Arc` and the resize size:
//! every loader over the same `Arc<Dataset>` and image size shares one cache, which is freed once
//! the dataset itself is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use image::RgbImage;

use crate::dataset::Dataset;
use crate::error::EpisodeError;

pub(crate) struct ImageCache {
    /// First slot of each class.
    offsets: Vec<usize>,
    slots: Vec<OnceLock<Arc<RgbImage>>>,
    budget: usize,
    used: AtomicUsize,
}

impl ImageCache {
    pub(crate) fn new(split: &Dataset, budget: usize) -> Self {
        let mut offsets = Vec::with_capacity(split.classes.len());
        let mut total = 0;
        for class in &split.classes {
            offsets.push(total);
            total += class.items.len();
        }
        Self {
            offsets,
            slots: (0..total).map(|_| OnceLock::new()).collect(),
            budget,
            used: AtomicUsize::new(0),
        }
    }

    /// The cached image, or `load()`'s result, kept if it fits in the budget. Two threads may
    /// load the same image at once; both get equal images and one copy is kept.
    pub(crate) fn get_or_load(
        &self,
        class: usize,
        item: usize,
        load: impl FnOnce() -> Result<RgbImage, EpisodeError>,
    ) -> Result<Arc<RgbImage>, EpisodeError> {
        let slot = &self.slots[self.offsets[class] + item];
        if let Some(image) = slot.get() {
            return Ok(Arc::clone(image));
        }
        let image = Arc::new(load()?);
        let bytes = image.as_raw().len();
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.budget || slot.set(Arc::clone(&image)).is_err() {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
        Ok(image)
    }

    pub(crate) fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

struct Entry {
    dataset: Weak<Dataset>,
    image_size: u32,
    cache: Arc<ImageCache>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The cache shared by all loaders of `dataset` at `image_size` (created on first request).
pub(crate) fn shared_cache(dataset: &Arc<Dataset>, image_size: u32) -> Arc<ImageCache> {
    // A poisoned lock only means another thread panicked mid-update of this plain Vec; its
    // entries are still valid.
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    // Drop the caches of datasets that no longer exist (their memory is otherwise held forever).
    registry.retain(|e| e.dataset.strong_count() > 0);
    let weak = Arc::downgrade(dataset);
    if let Some(entry) =
        registry.iter().find(|e| e.image_size == image_size && Weak::ptr_eq(&e.dataset, &weak))
    {
        return Arc::clone(&entry.cache);
    }
    let cache = Arc::new(ImageCache::new(dataset, usize::MAX));
    registry.push(Entry { dataset: weak, image_size, cache: Arc::clone(&cache) });
    cache
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{synthetic_splits, SyntheticConfig};

    #[test]
    fn registry_shares_per_dataset_and_size_and_forgets_dropped_datasets() {
        let config =
            SyntheticConfig { classes: 5, images_per_class: 4, ..SyntheticConfig::default() };
        let a = synthetic_splits(&config).base;
        let b = synthetic_splits(&config).base;
        let cache = shared_cache(&a, 16);
        assert!(Arc::ptr_eq(&cache, &shared_cache(&a, 16)));
        assert!(!Arc::ptr_eq(&cache, &shared_cache(&a, 32)));
        assert!(!Arc::ptr_eq(&cache, &shared_cache(&b, 16)));

        let image = cache.get_or_load(1, 2, || a.load(1, 2)).expect("synthetic images load");
        assert_eq!(cache.used_bytes(), image.as_raw().len());
        // Served from the cache: the loader is not called again.
        let again =
            shared_cache(&a, 16).get_or_load(1, 2, || panic!("should be cached")).expect("cached");
        assert!(Arc::ptr_eq(&image, &again));

        let weak = Arc::downgrade(&cache);
        drop((cache, again, image, a));
        let _ = shared_cache(&b, 16); // any access prunes dead datasets
        assert!(weak.upgrade().is_none(), "cache of a dropped dataset is freed");
    }

    #[test]
    fn budget_limits_what_is_kept() {
        let config = SyntheticConfig {
            classes: 5,
            images_per_class: 4,
            native_size: 8,
            ..SyntheticConfig::default()
        };
        let data = synthetic_splits(&config).base;
        let cache = ImageCache::new(&data, 8 * 8 * 3); // room for one 8×8 image
        cache.get_or_load(0, 0, || data.load(0, 0)).expect("loads");
        cache.get_or_load(0, 1, || data.load(0, 1)).expect("loads");
        assert_eq!(cache.used_bytes(), 8 * 8 * 3);
        let mut calls = 0;
        cache
            .get_or_load(0, 1, || {
                calls += 1;
                data.load(0, 1)
            })
            .expect("loads");
        assert_eq!(calls, 1, "over-budget image was not kept");
    }
}
