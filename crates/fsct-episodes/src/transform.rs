//! Image transforms of the reference (spec §3.4), from a decoded RGB image to a normalised
//! `[3, S, S]` f32 array.
//!
//! Every pipeline starts with `Resize(S)` (shorter side to S, bilinear), which is deterministic
//! and therefore what the loader's cache keeps ([`Transform::prepare`]). The rest
//! ([`Transform::finish`]) is:
//! - eval: `CenterCrop(S)`, or with [`TransformMode::EvalReference2022`] first a squash to a
//!   ⌊1.15·S⌋ square as the published results had;
//! - train ([`TransformMode::Train`]): `RandomResizedCrop(S)` (torchvision's algorithm) → colour jitter
//!   (torchvision's `ColorJitter(brightness, contrast, saturation)`, in random order) →
//!   horizontal flip. Unlike the reference, whose `ColorJitter()` has no arguments and does
//!   nothing (spec §3.4), the jitter really applies; set its strengths to 0 in a [`Transform`]
//!   to reproduce that.
//!
//! and then `ToTensor` + `Normalize` (ImageNet mean and std by default).

use burn::config::Config;
use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::EpisodeError;

/// The deterministic resize of the eval pipeline.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum EvalResize {
    /// `Resize(S)` → `CenterCrop(S)` (the reference's HEAD).
    Standard,
    /// `Resize(S)` → squash to ⌊1.15·S⌋² → `CenterCrop(S)` (July 2022, the published results).
    Reference2022,
}

/// Strengths of the colour jitter, as torchvision's `ColorJitter`: each factor is drawn uniformly
/// from `[max(0, 1 - s), 1 + s]`; a strength of 0 disables that adjustment.
#[derive(Config, Debug)]
pub struct ColorJitterConfig {
    #[config(default = 0.4)]
    pub brightness: f32,
    #[config(default = 0.4)]
    pub contrast: f32,
    #[config(default = 0.4)]
    pub saturation: f32,
}

/// Which pipeline of spec §3.4 a [`TransformConfig`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformMode {
    /// `Resize(S)` → `CenterCrop(S)` → normalise (the reference's HEAD).
    Eval,
    /// `Resize(S)` → squash to ⌊1.15·S⌋² → `CenterCrop(S)` → normalise (July 2022: the
    /// pipeline of the published results).
    EvalReference2022,
    /// `Resize(S)` → `RandomResizedCrop(S)` (scale 0.08–1, ratio 3/4–4/3) → colour jitter
    /// (brightness, contrast, saturation 0.4) → horizontal flip (p = 0.5) → normalise.
    Train,
}

/// The transform of every image of an episode: output side, pipeline and channel count.
///
/// The output is `[C, S, S]` f32, normalised with the ImageNet mean and std; C = 3 (grayscale
/// images are replicated), or C = 1 with `single_channel`, which keeps channel 0 of the
/// normalised RGB output, exactly what the reference's 1-channel backbones (Conv*S*, spec §1)
/// see. For other strengths or constants build a [`Transform`] directly.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformConfig {
    /// Output side S in pixels; see [`default_image_size`].
    pub image_size: usize,
    pub mode: TransformMode,
    /// One output channel instead of three (default `false`).
    pub single_channel: bool,
}

impl TransformConfig {
    /// A 3-channel transform of side `image_size` in `mode`.
    pub fn new(image_size: usize, mode: TransformMode) -> Self {
        Self { image_size, mode, single_channel: false }
    }

    /// The pipeline with the reference's constants, after checking the size.
    pub fn pipeline(&self) -> Result<Transform, EpisodeError> {
        let image_size = u32::try_from(self.image_size)
            .ok()
            .filter(|&s| s > 0 && s <= 16_384)
            .ok_or_else(|| EpisodeError::Config {
                field: "image_size",
                problem: format!("is {}", self.image_size),
                fix: "use a size between 1 and 16384, such as 84 (see default_image_size)",
            })?;
        let t = Transform::new(image_size)
            .with_augment(self.mode == TransformMode::Train)
            .with_eval_resize(match self.mode {
                TransformMode::EvalReference2022 => EvalResize::Reference2022,
                _ => EvalResize::Standard,
            })
            .with_single_channel(self.single_channel);
        t.validate()?;
        Ok(t)
    }
}

/// The full transform of one image, every constant exposed. Most users want
/// [`TransformConfig`], which fills these in from the reference.
#[derive(Config, Debug)]
pub struct Transform {
    /// Output side S in pixels; see [`default_image_size`].
    pub image_size: u32,
    /// Train augmentation (random resized crop, colour jitter, flip) instead of the eval pipeline.
    #[config(default = false)]
    pub augment: bool,
    #[config(default = "EvalResize::Standard")]
    pub eval_resize: EvalResize,
    #[config(default = "ColorJitterConfig::new()")]
    pub jitter: ColorJitterConfig,
    #[config(default = 0.5)]
    pub flip_probability: f64,
    /// Area fraction range of the random resized crop.
    #[config(default = "[0.08, 1.0]")]
    pub crop_scale: [f64; 2],
    /// Aspect-ratio (w / h) range of the random resized crop.
    #[config(default = "[0.75, 1.3333333333333333]")]
    pub crop_ratio: [f64; 2],
    #[config(default = "[0.485, 0.456, 0.406]")]
    pub mean: [f32; 3],
    #[config(default = "[0.229, 0.224, 0.225]")]
    pub std: [f32; 3],
    /// Keep only channel 0 of the normalised output.
    #[config(default = false)]
    pub single_channel: bool,
}

/// The reference's image size for a dataset (spec §3.2): CIFAR 112 for ResNet backbones and 64
/// otherwise; every other dataset (Omniglot included) 224 for ResNets and 84 otherwise. The
/// dataset name is matched case-insensitively by prefix (`"CIFAR"`, `"cifar_fs"`, …).
pub fn default_image_size(dataset: &str, resnet: bool) -> usize {
    let cifar = dataset.to_ascii_lowercase().starts_with("cifar");
    match (cifar, resnet) {
        (true, true) => 112,
        (true, false) => 64,
        (false, true) => 224,
        (false, false) => 84,
    }
}

/// Python's `round` (ties to even), which torchvision uses for crop geometry.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2))`.
fn center_offset(size: u32, crop: u32) -> u32 {
    py_round((f64::from(size) - f64::from(crop)) / 2.0).max(0) as u32
}

/// `(left, top, width, height)` of torchvision's `RandomResizedCrop.get_params`: ten tries of a
/// random area and log-uniform aspect ratio, then a centre crop clamped to the ratio range.
pub fn random_resized_crop_params(
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let (w0, h0) = (i64::from(width), i64::from(height));
    let area = (w0 * h0) as f64;
    let log_ratio = [ratio[0].ln(), ratio[1].ln()];
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale[0], scale[1]);
        let aspect = uniform(rng, log_ratio[0], log_ratio[1]).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= w0 && 0 < h && h <= h0 {
            let top = rng.random_range(0..=h0 - h);
            let left = rng.random_range(0..=w0 - w);
            return (left as u32, top as u32, w as u32, h as u32);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (w0, py_round(w0 as f64 / ratio[0]))
    } else if in_ratio > ratio[1] {
        (py_round(h0 as f64 * ratio[1]), h0)
    } else {
        (w0, h0)
    };
    (((w0 - w) / 2) as u32, ((h0 - h) / 2) as u32, w as u32, h as u32)
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// ITU-R 601-2 luma, as torchvision's `rgb_to_grayscale`.
fn gray(p: &[f32]) -> f32 {
    0.2989 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// torchvision `adjust_brightness` on an HWC `[0, 1]` buffer: blend with black.
pub(crate) fn adjust_brightness(hwc: &mut [f32], factor: f32) {
    for v in hwc.iter_mut() {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// torchvision `adjust_contrast`: blend with the mean grey level of the whole image.
pub(crate) fn adjust_contrast(hwc: &mut [f32], factor: f32) {
    let pixels = (hwc.len() / 3).max(1);
    let mean = hwc.chunks_exact(3).map(gray).sum::<f32>() / pixels as f32;
    for v in hwc.iter_mut() {
        *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0);
    }
}

/// torchvision `adjust_saturation`: blend each pixel with its own grey level.
pub(crate) fn adjust_saturation(hwc: &mut [f32], factor: f32) {
    for p in hwc.chunks_exact_mut(3) {
        let g = gray(p);
        for v in p.iter_mut() {
            *v = (factor * *v + (1.0 - factor) * g).clamp(0.0, 1.0);
        }
    }
}

impl Transform {
    /// Rejects settings that cannot work (an image size of 0, a non-positive std, …).
    pub fn validate(&self) -> Result<(), EpisodeError> {
        let bad = |field, problem: String, fix| Err(EpisodeError::Config { field, problem, fix });
        if self.image_size == 0 {
            return bad("image_size", "is 0".into(), "use a positive size such as 84");
        }
        if self.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return bad("std", format!("is {:?}", self.std), "use positive values");
        }
        let [s0, s1] = self.crop_scale;
        if !(0.0 < s0 && s0 <= s1 && s1 <= 1.0) {
            return bad(
                "crop_scale",
                format!("is {:?}", self.crop_scale),
                "use 0 < min <= max <= 1, e.g. [0.08, 1.0]",
            );
        }
        let [r0, r1] = self.crop_ratio;
        if !(0.0 < r0 && r0 <= r1 && r1.is_finite()) {
            return bad(
                "crop_ratio",
                format!("is {:?}", self.crop_ratio),
                "use 0 < min <= max, e.g. [0.75, 1.3333]",
            );
        }
        if !(0.0..=1.0).contains(&self.flip_probability) {
            return bad(
                "flip_probability",
                format!("is {}", self.flip_probability),
                "use a probability in [0, 1]",
            );
        }
        let j = &self.jitter;
        if [j.brightness, j.contrast, j.saturation].iter().any(|&s| s < 0.0 || !s.is_finite()) {
            return bad("jitter", format!("is {j:?}"), "use strengths >= 0");
        }
        Ok(())
    }

    /// Output channels: 3, or 1 with `single_channel`.
    pub fn channels(&self) -> usize {
        if self.single_channel {
            1
        } else {
            3
        }
    }

    /// Number of f32 values one transformed image takes: `C · S · S`.
    pub fn output_len(&self) -> usize {
        self.channels() * self.image_size as usize * self.image_size as usize
    }

    /// `Resize(S)`: the shorter side becomes S (bilinear, antialiased when shrinking), the longer
    /// side `⌊S · long / short⌋` as torchvision. Deterministic, so its result may be cached.
    pub fn prepare(&self, image: &RgbImage) -> RgbImage {
        let (w, h) = image.dimensions();
        let s = u64::from(self.image_size);
        let (nw, nh) = if w <= h {
            (s, s * u64::from(h) / u64::from(w.max(1)))
        } else {
            (s * u64::from(w) / u64::from(h.max(1)), s)
        };
        imageops::resize(image, nw as u32, nh.max(1) as u32, FilterType::Triangle)
    }

    /// The rest of the pipeline on a [`prepare`](Self::prepare)d image, written to `out` as
    /// normalised CHW (`out.len() == self.output_len()`). `rng` drives the augmentation only.
    pub fn finish(&self, prepared: &RgbImage, rng: &mut impl Rng, out: &mut [f32]) {
        let s = self.image_size;
        assert_eq!(out.len(), self.output_len(), "output buffer of the wrong size");
        if !self.augment {
            match self.eval_resize {
                EvalResize::Standard => self.crop_normalize(prepared, out),
                EvalResize::Reference2022 => {
                    let side = (1.15 * f64::from(s)).floor() as u32;
                    let squashed = imageops::resize(prepared, side, side, FilterType::Triangle);
                    self.crop_normalize(&squashed, out);
                }
            }
            return;
        }

        let (w, h) = prepared.dimensions();
        let (left, top, cw, ch) =
            random_resized_crop_params(w, h, self.crop_scale, self.crop_ratio, rng);
        let view = imageops::crop_imm(prepared, left, top, cw, ch);
        let crop = imageops::resize(&*view, s, s, FilterType::Triangle);
        let mut hwc: Vec<f32> = crop.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();

        let j = &self.jitter;
        let mut order = [0usize, 1, 2];
        order.shuffle(rng);
        let factor = |rng: &mut dyn rand::RngCore, strength: f32| {
            (strength > 0.0).then(|| rng.random_range((1.0 - strength).max(0.0)..=1.0 + strength))
        };
        let factors =
            [factor(rng, j.brightness), factor(rng, j.contrast), factor(rng, j.saturation)];
        for i in order {
            match (i, factors[i]) {
                (0, Some(f)) => adjust_brightness(&mut hwc, f),
                (1, Some(f)) => adjust_contrast(&mut hwc, f),
                (2, Some(f)) => adjust_saturation(&mut hwc, f),
                _ => {}
            }
        }
        let flip = rng.random_bool(self.flip_probability);
        self.normalize_hwc(&hwc, s, flip, out);
    }

    /// Convenience: [`prepare`](Self::prepare) then [`finish`](Self::finish) into a new vector.
    pub fn apply(&self, image: &RgbImage, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = vec![0.0; self.output_len()];
        self.finish(&self.prepare(image), rng, &mut out);
        out
    }

    fn crop_normalize(&self, image: &RgbImage, out: &mut [f32]) {
        let s = self.image_size;
        let (w, h) = image.dimensions();
        let (left, top) = (center_offset(w, s), center_offset(h, s));
        let plane = (s * s) as usize;
        for c in 0..self.channels() {
            let (mean, inv_std) = (self.mean[c], 1.0 / self.std[c]);
            let dst = &mut out[c * plane..(c + 1) * plane];
            for y in 0..s {
                for x in 0..s {
                    // A source smaller than S (only possible for degenerate inputs) is padded by
                    // repeating its edge rather than panicking.
                    let sx = (left + x).min(w.saturating_sub(1));
                    let sy = (top + y).min(h.saturating_sub(1));
                    let v = f32::from(image.get_pixel(sx, sy).0[c]) / 255.0;
                    dst[(y * s + x) as usize] = (v - mean) * inv_std;
                }
            }
        }
    }

    fn normalize_hwc(&self, hwc: &[f32], s: u32, flip: bool, out: &mut [f32]) {
        let s = s as usize;
        let plane = s * s;
        for c in 0..self.channels() {
            let (mean, inv_std) = (self.mean[c], 1.0 / self.std[c]);
            for y in 0..s {
                for x in 0..s {
                    let sx = if flip { s - 1 - x } else { x };
                    out[c * plane + y * s + x] = (hwc[(y * s + sx) * 3 + c] - mean) * inv_std;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
