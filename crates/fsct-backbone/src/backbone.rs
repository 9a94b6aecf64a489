use burn::module::ModuleDisplay;
use burn::prelude::*;

use crate::segments::SegmentLevel;

/// A feature extractor that FS-CT and CTX can be built around.
///
/// Implement it for your own [`Module`] to plug it into `fsct-transformer`: FS-CT flattens the
/// feature map to `d = c·h·w` per image, CTX keeps the `[c, h, w]` map. A backbone that produces
/// flat features returns them as `[n, d, 1, 1]`.
pub trait Backbone<B: Backend>: Module<B> + ModuleDisplay + core::fmt::Debug {
    /// Extracts features from a batch of images.
    ///
    /// # Shapes
    /// - `images`: `[n, channels, height, width]`
    /// - output: `[n, c, h, w]` with `[c, h, w] = self.feature_shape([channels, height, width])`
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4>;

    /// The `[c, h, w]` feature map one image of shape `[channels, height, width]` produces.
    ///
    /// Computed from the input size, never hard-coded: the transformer is sized from it.
    fn feature_shape(&self, input: [usize; 3]) -> [usize; 3];

    /// The flattened feature dimension `d = c·h·w` for an input of shape `input`.
    fn feature_dim(&self, input: [usize; 3]) -> usize {
        self.feature_shape(input).iter().product()
    }

    /// How many consecutive segments segment checkpointing ([`crate::segments`]) cuts the
    /// backbone into at `level`. The default, one segment (the whole backbone), still lets the
    /// head's graph go before the backbone's is built again; a backbone of blocks does better by
    /// overriding this and [`Self::forward_segment`].
    fn segment_count(&self, level: SegmentLevel) -> usize {
        let _ = level;
        1
    }

    /// Runs segment `index` (`0..segment_count(level)`): running every segment in order on the
    /// images is [`Self::features`].
    ///
    /// # Shapes
    /// - `x`: the images for segment 0, else the previous segment's output
    /// - output: the next segment's input; the features after the last segment
    fn forward_segment(&self, level: SegmentLevel, index: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let _ = (level, index);
        self.features(x)
    }
}
