//! A synthetic few-shot dataset drawn in code ([`synthetic_splits`]): its classes are glyphs
//! ([`GlyphId`], drawn by the `glyph` module), its items are rendered when loaded, so no files are
//! needed.

use crate::dataset::{Class, Dataset, Item};
use crate::glyph::GlyphId;
use crate::splits::Splits;

/// Shape of the synthetic dataset (defaults in brackets).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of everything: the same seed gives the same classes and images. \[0\]
    pub seed: u64,
    /// Classes over all three splits, shared 64 / 16 / 20 % by [`synthetic_splits`]. \[100\]
    pub classes: usize,
    /// Images per class. \[60\]
    pub images_per_class: usize,
    /// Side in pixels of the rendered (square) images, before the transforms resize them as
    /// any image. Render near the training size to keep loading cheap. \[32\]
    pub native_size: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { seed: 0, classes: 100, images_per_class: 60, native_size: 32 }
    }
}

/// The synthetic dataset's base / val / novel splits: 64 / 16 / 20 % of `config.classes`
/// (rounded; novel takes the rest), disjoint. Nothing is rendered until an image is loaded.
///
/// Classes are numbered across the splits (base first, then val, then novel), so class `c` is
/// the same glyph whatever the split sizes. A `native_size` below 8 px is raised to 8.
pub fn synthetic_splits(config: &SyntheticConfig) -> Splits {
    let total = config.classes;
    let base = (total as f64 * 0.64).round() as usize;
    let val = ((total as f64 * 0.16).round() as usize).min(total - base);
    let size = config.native_size.clamp(8, 4096) as u32;
    let split = |name: &str, first: usize, count: usize| Dataset {
        name: name.to_string(),
        source: format!("synthetic(seed = {})", config.seed).into(),
        classes: (first..first + count)
            .map(|c| Class {
                name: format!("glyph_{c:03}"),
                items: (0..config.images_per_class)
                    .map(|i| {
                        Item::Synthetic(GlyphId {
                            seed: config.seed,
                            class: c as u32,
                            instance: i as u32,
                            size,
                        })
                    })
                    .collect(),
            })
            .collect(),
    };
    Splits::new(
        split("base", 0, base),
        split("val", base, val),
        split("novel", base + val, total - base - val),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_follow_the_config_and_are_disjoint() {
        let splits = synthetic_splits(&SyntheticConfig::default());
        let counts = [&splits.base, &splits.val, &splits.novel].map(|d| d.num_classes());
        assert_eq!(counts, [64, 16, 20]);
        let mut names: Vec<&str> = [&splits.base, &splits.val, &splits.novel]
            .iter()
            .flat_map(|d| d.classes.iter().map(|c| c.name.as_str()))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 100);
        assert!(splits.novel.classes.iter().all(|c| c.items.len() == 60));
        assert_eq!(splits.val.load(3, 5).unwrap().dimensions(), (32, 32));
    }
}
