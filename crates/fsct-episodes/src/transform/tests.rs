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
        Rgb([((10 * x + y) % 256) as u8, ((40 + 7 * y) % 256) as u8, ((200 + 3 * x) % 256) as u8])
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
    let cfg =
        TransformConfig { single_channel: true, ..TransformConfig::new(8, TransformMode::Eval) };
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
