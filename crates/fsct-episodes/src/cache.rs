//! An in-memory cache of decoded, resized (`Resize(S)`, before augmentation) images, filled on
//! first use and bounded by a byte budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use image::RgbImage;

use crate::error::EpisodeError;
use crate::split::Dataset;

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
