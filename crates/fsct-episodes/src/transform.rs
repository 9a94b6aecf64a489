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
mod tests {
    use super::*;
    use crate::seed::stream;
    use image::Rgb;

    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];

    fn norm(v: u8, c: usize) -> f32 {
        (f32::from(v) / 255.0 - MEAN[c]) / STD[c]
    }

    /// Pixel (x, y) of a test pattern: every channel and position distinct.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                ((10 * x + y) % 256) as u8,
                ((40 + 7 * y) % 256) as u8,
                ((200 + 3 * x) % 256) as u8,
            ])
        })
    }

    fn eval(size: usize, mode: TransformMode) -> Transform {
        TransformConfig::new(size, mode).pipeline().unwrap()
    }

    #[test]
    fn eval_center_crops_and_normalizes_by_hand() {
        // 6×4 with S = 4: the shorter side is already 4, so Resize is the identity; CenterCrop
        // takes x in 1..5 (offset round((6 - 4) / 2) = 1).
        let img = pattern(6, 4);
        let t = eval(4, TransformMode::Eval);
        let out = t.apply(&img, &mut stream(0, &[]));
        assert_eq!(out.len(), 3 * 16);
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..4 {
                    let want = norm(img.get_pixel(x + 1, y).0[c], c);
                    let got = out[c * 16 + (y * 4 + x) as usize];
                    assert!((got - want).abs() < 1e-5, "c{c} ({x},{y}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn resize_keeps_aspect_like_torchvision_and_a_flat_image_flat() {
        let t = eval(84, TransformMode::Eval);
        // Shorter side → 84, longer side ⌊84 · 500 / 375⌋ = 112.
        assert_eq!(t.prepare(&pattern(500, 375)).dimensions(), (112, 84));
        assert_eq!(t.prepare(&pattern(375, 500)).dimensions(), (84, 112));
        let flat = RgbImage::from_pixel(50, 30, Rgb([120, 60, 30]));
        let out = t.apply(&flat, &mut stream(0, &[]));
        for (c, v) in [120u8, 60, 30].into_iter().enumerate() {
            let plane = &out[c * 84 * 84..(c + 1) * 84 * 84];
            assert!(plane.iter().all(|&p| (p - norm(v, c)).abs() < 1e-5));
        }
    }

    #[test]
    fn reference_2022_squashes_to_1_15_s_before_cropping() {
        // A horizontal ramp 0, 10, 20, … (20 px wide, S = 20). Squashing to ⌊23⌋ px is linear
        // interpolation, so output column j of the squash sits at source x = (j + 0.5)·20/23 − 0.5;
        // the centre crop then starts at column round(3 / 2) = 2.
        let img = RgbImage::from_fn(20, 20, |x, _| Rgb([(10 * x) as u8; 3]));
        let t = eval(20, TransformMode::EvalReference2022);
        let out = t.apply(&img, &mut stream(0, &[]));
        let plain = eval(20, TransformMode::Eval).apply(&img, &mut stream(0, &[]));
        for x in 2..18usize {
            let src = ((x + 2) as f32 + 0.5) * 20.0 / 23.0 - 0.5;
            let want = norm((10.0 * src).round() as u8, 0);
            let got = out[10 * 20 + x];
            assert!((got - want).abs() < 1.5 / 255.0 / STD[0], "x {x}: {got} vs {want}");
            // The plain eval pipeline keeps the ramp untouched.
            assert!((plain[10 * 20 + x] - norm((10 * x) as u8, 0)).abs() < 1e-5);
        }
    }

    #[test]
    fn flip_mirrors_rows() {
        let t = eval(3, TransformMode::Eval);
        let hwc: Vec<f32> = (0..27).map(|i| i as f32 / 27.0).collect();
        let (mut plain, mut flipped) = (vec![0.0; 27], vec![0.0; 27]);
        t.normalize_hwc(&hwc, 3, false, &mut plain);
        t.normalize_hwc(&hwc, 3, true, &mut flipped);
        for c in 0..3 {
            for y in 0..3 {
                for x in 0..3 {
                    assert_eq!(flipped[c * 9 + y * 3 + x], plain[c * 9 + y * 3 + 2 - x]);
                }
            }
        }
    }

    #[test]
    fn jitter_by_hand() {
        let px = vec![0.2f32, 0.4, 0.6, 1.0, 0.5, 0.0];
        for f in [adjust_brightness, adjust_contrast, adjust_saturation] {
            let mut same = px.clone();
            f(&mut same, 1.0);
            assert_eq!(same, px, "factor 1 is the identity");
        }
        let mut b = px.clone();
        adjust_brightness(&mut b, 1.5);
        assert_eq!(b, vec![0.3, 0.6, 0.90000004, 1.0, 0.75, 0.0]);
        // Saturation 0: every channel becomes the pixel's luma.
        let mut s = px.clone();
        adjust_saturation(&mut s, 0.0);
        let g0 = 0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6;
        let g1 = 0.2989 * 1.0 + 0.587 * 0.5;
        for (v, g) in s.iter().zip([g0, g0, g0, g1, g1, g1]) {
            assert!((v - g).abs() < 1e-6);
        }
        // Contrast 0.5: halfway to the mean luma of the whole image.
        let mut c = px.clone();
        adjust_contrast(&mut c, 0.5);
        let mean = (g0 + g1) / 2.0;
        for (v, p) in c.iter().zip(&px) {
            assert!((v - (0.5 * p + 0.5 * mean)).abs() < 1e-6);
        }
    }

    #[test]
    fn random_resized_crop_stays_in_range_and_falls_back_to_the_centre() {
        let mut rng = stream(5, &[]);
        let (scale, ratio) = ([0.08, 1.0], [0.75, 4.0 / 3.0]);
        for _ in 0..500 {
            let (l, t, w, h) = random_resized_crop_params(120, 90, scale, ratio, &mut rng);
            assert!(w > 0 && h > 0 && l + w <= 120 && t + h <= 90);
            let area = f64::from(w * h) / (120.0 * 90.0);
            assert!((0.06..=1.0).contains(&area), "area {area}");
        }
        // 100×1: no try can fit (h ≥ 2), so the fallback clamps the ratio and centres.
        assert_eq!(random_resized_crop_params(100, 1, scale, ratio, &mut rng), (49, 0, 1, 1));
        // A square image whose ratio is in range falls back to the whole image.
        let never = [2.0, 2.0];
        assert_eq!(random_resized_crop_params(10, 10, never, [1.0, 1.0], &mut rng), (0, 0, 10, 10));
    }

    #[test]
    fn train_augmentation_is_seeded_and_really_varies() {
        let img = pattern(40, 30);
        let t = eval(16, TransformMode::Train);
        let a = t.apply(&img, &mut stream(1, &[7]));
        assert_eq!(a, t.apply(&img, &mut stream(1, &[7])));
        assert!(a.iter().all(|v| v.is_finite()));
        let outputs: Vec<Vec<f32>> = (0..20).map(|i| t.apply(&img, &mut stream(1, &[i]))).collect();
        let distinct = outputs.iter().enumerate().all(|(i, o)| outputs[..i].iter().all(|p| p != o));
        assert!(distinct, "20 augmentations of one image should all differ");
        let e = eval(16, TransformMode::Eval);
        assert_ne!(a, e.apply(&img, &mut stream(1, &[7])));
    }

    #[test]
    fn single_channel_keeps_channel_zero() {
        let img = pattern(9, 9);
        let three = eval(8, TransformMode::Eval).apply(&img, &mut stream(0, &[]));
        let cfg = TransformConfig {
            single_channel: true,
            ..TransformConfig::new(8, TransformMode::Eval)
        };
        let one = cfg.pipeline().unwrap().apply(&img, &mut stream(0, &[]));
        assert_eq!(one.len(), 64);
        assert_eq!(one[..], three[..64]);
    }

    #[test]
    fn bad_size_is_a_config_error_and_defaults_follow_the_spec() {
        let err = TransformConfig::new(0, TransformMode::Eval).pipeline().unwrap_err().to_string();
        assert!(err.contains("`image_size` is 0"), "{err}");
        assert_eq!(default_image_size("CIFAR", true), 112);
        assert_eq!(default_image_size("cifar_fs", false), 64);
        assert_eq!(default_image_size("miniImagenet", true), 224);
        assert_eq!(default_image_size("Omniglot", false), 84);
    }
}
