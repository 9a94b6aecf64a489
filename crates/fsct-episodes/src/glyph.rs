//! One synthetic image, drawn in code ([`GlyphId`]): every class is a glyph made of a few random
//! strokes (lines, curves, arcs, polygons); every instance redraws it with its own jitter of the
//! stroke geometry, rotation, scale, shear, position, stroke width, colours and pixel noise.
//!
//! Nothing is stored: an image is rendered when loaded, deterministically from (dataset seed,
//! class, instance). Colours are drawn per instance, so only the shape tells classes apart.
//! Rendering is antialiased at the requested size, so glyphs stay legible at 28 px.

use std::f32::consts::PI;

use image::{Rgb, RgbImage};
use rand::Rng;

use crate::seed::{stream, tag, StreamRng};

/// One synthetic image: instance `instance` of glyph class `class`, rendered at `size`×`size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlyphId {
    pub seed: u64,
    pub class: u32,
    pub instance: u32,
    pub size: u32,
}

type P = [f32; 2];

#[derive(Clone, Debug)]
enum Stroke {
    Line([P; 2]),
    Curve([P; 3]),
    Arc { center: P, radius: f32, start: f32, sweep: f32 },
    Polygon(Vec<P>),
}

/// Roughly normal with unit variance (Irwin–Hall of 3), cheap and dependency-free.
fn gauss(rng: &mut StreamRng) -> f32 {
    (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0
}

fn point(rng: &mut StreamRng, extent: f32) -> P {
    [rng.random_range(-extent..extent), rng.random_range(-extent..extent)]
}

fn class_strokes(seed: u64, class: u32) -> Vec<Stroke> {
    let mut rng = stream(seed, &[tag::GLYPH_CLASS, u64::from(class)]);
    let count = rng.random_range(2..=4);
    (0..count)
        .map(|_| match rng.random_range(0..4) {
            0 => Stroke::Line([point(&mut rng, 0.7), point(&mut rng, 0.7)]),
            1 => Stroke::Curve([point(&mut rng, 0.7), point(&mut rng, 0.9), point(&mut rng, 0.7)]),
            2 => Stroke::Arc {
                center: point(&mut rng, 0.35),
                radius: rng.random_range(0.2..0.5),
                start: rng.random_range(0.0..2.0 * PI),
                sweep: rng.random_range(0.5 * PI..1.8 * PI),
            },
            _ => {
                let sides = rng.random_range(3..=5);
                let center = point(&mut rng, 0.3);
                let radius = rng.random_range(0.2..0.45);
                let phase = rng.random_range(0.0..2.0 * PI);
                Stroke::Polygon(
                    (0..sides)
                        .map(|k| {
                            let a = phase + 2.0 * PI * k as f32 / sides as f32;
                            [center[0] + radius * a.cos(), center[1] + radius * a.sin()]
                        })
                        .collect(),
                )
            }
        })
        .collect()
}

/// Per-instance geometric noise on the class strokes, then flattening into segments.
fn instance_segments(strokes: &[Stroke], rng: &mut StreamRng) -> Vec<[P; 2]> {
    const JITTER: f32 = 0.06;
    let jit = |p: P, rng: &mut StreamRng| [p[0] + JITTER * gauss(rng), p[1] + JITTER * gauss(rng)];
    let mut segments = Vec::new();
    let polyline = |pts: &[P], closed: bool, out: &mut Vec<[P; 2]>| {
        out.extend(pts.windows(2).map(|w| [w[0], w[1]]));
        if closed && pts.len() > 2 {
            out.push([pts[pts.len() - 1], pts[0]]);
        }
    };
    for stroke in strokes {
        match stroke {
            Stroke::Line([a, b]) => polyline(&[jit(*a, rng), jit(*b, rng)], false, &mut segments),
            Stroke::Curve([a, b, c]) => {
                let (a, b, c) = (jit(*a, rng), jit(*b, rng), jit(*c, rng));
                let pts: Vec<P> = (0..=8)
                    .map(|i| {
                        let t = i as f32 / 8.0;
                        let (u, v, w) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
                        [u * a[0] + v * b[0] + w * c[0], u * a[1] + v * b[1] + w * c[1]]
                    })
                    .collect();
                polyline(&pts, false, &mut segments);
            }
            Stroke::Arc { center, radius, start, sweep } => {
                let center = jit(*center, rng);
                let radius = radius * (1.0 + 0.08 * gauss(rng));
                let start = start + 0.15 * gauss(rng);
                let sweep = sweep * (1.0 + 0.08 * gauss(rng));
                let n = ((sweep / (PI / 8.0)).ceil() as usize).max(2);
                let pts: Vec<P> = (0..=n)
                    .map(|i| {
                        let a = start + sweep * i as f32 / n as f32;
                        [center[0] + radius * a.cos(), center[1] + radius * a.sin()]
                    })
                    .collect();
                polyline(&pts, false, &mut segments);
            }
            Stroke::Polygon(pts) => {
                let pts: Vec<P> = pts.iter().map(|p| jit(*p, rng)).collect();
                polyline(&pts, true, &mut segments);
            }
        }
    }
    segments
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn colours(rng: &mut StreamRng) -> ([f32; 3], [f32; 3], [f32; 3]) {
    let rgb = |rng: &mut StreamRng| [rng.random(), rng.random(), rng.random()];
    let bg: [f32; 3] = rgb(rng);
    let mut fg = rgb(rng);
    for _ in 0..16 {
        if (luminance(fg) - luminance(bg)).abs() >= 0.35 {
            break;
        }
        fg = rgb(rng);
    }
    if (luminance(fg) - luminance(bg)).abs() < 0.35 {
        fg = if luminance(bg) > 0.5 { [0.0; 3] } else { [1.0; 3] };
    }
    // A gentle background gradient, so the background is not one flat colour.
    let delta = [0.15 * gauss(rng), 0.15 * gauss(rng), 0.15 * gauss(rng)];
    (bg, fg, delta)
}

/// Short random strokes that belong to no class (clutter): 0, 1 or 2 per image, drawn like the
/// glyph, so a model must learn which strokes matter.
fn add_distractors(segments: &mut Vec<[P; 2]>, rng: &mut StreamRng) {
    let count = usize::from(rng.random::<f32>() < 0.5) + usize::from(rng.random::<f32>() < 0.2);
    for _ in 0..count {
        let mut prev = [rng.random_range(-0.8f32..0.8), rng.random_range(-0.8f32..0.8)];
        let length = rng.random_range(0.15f32..0.35);
        let direction = rng.random_range(0.0..2.0 * PI);
        let bend = rng.random_range(-0.8f32..0.8);
        for k in 1..=4 {
            let a = direction + bend * k as f32 / 4.0;
            let next = [prev[0] + length / 4.0 * a.cos(), prev[1] + length / 4.0 * a.sin()];
            segments.push([prev, next]);
            prev = next;
        }
    }
}

fn dist_to_segment(p: P, [a, b]: [P; 2]) -> f32 {
    let (abx, aby) = (b[0] - a[0], b[1] - a[1]);
    let (apx, apy) = (p[0] - a[0], p[1] - a[1]);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 { ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (dx, dy) = (apx - t * abx, apy - t * aby);
    (dx * dx + dy * dy).sqrt()
}

impl GlyphId {
    /// Draws the image. Coordinates: the image spans [-1, 1]² with y pointing down.
    pub fn render(&self) -> RgbImage {
        let strokes = class_strokes(self.seed, self.class);
        let mut rng = stream(
            self.seed,
            &[tag::GLYPH_INSTANCE, u64::from(self.class), u64::from(self.instance)],
        );
        let mut segments = instance_segments(&strokes, &mut rng);

        // Affine jitter: rotation ±~29°, scale, anisotropy, shear, translation. The ranges were
        // tuned so that a nearest-prototype classifier on raw grey pixels gets about 63 % of
        // 5-way 5-shot queries right: learnable, yet far from solved without learning
        // invariances (see the `raw_pixel_prototypes_are_informative_but_not_perfect` test).
        let angle = rng.random_range(-0.5f32..0.5);
        let scale = rng.random_range(0.75f32..1.1);
        let stretch = rng.random_range(0.9f32..1.1);
        let shear = rng.random_range(-0.15f32..0.15);
        let shift = [rng.random_range(-0.18f32..0.18), rng.random_range(-0.18f32..0.18)];
        let (s, c) = angle.sin_cos();
        let (sx, sy) = (scale * stretch, scale / stretch);
        let map = |p: P| {
            let (x, y) = (p[0] * sx + shear * p[1] * sy, p[1] * sy);
            [c * x - s * y + shift[0], s * x + c * y + shift[1]]
        };
        for seg in &mut segments {
            *seg = [map(seg[0]), map(seg[1])];
        }
        add_distractors(&mut segments, &mut rng);
        let half_width = rng.random_range(0.05f32..0.1);
        let (bg, fg, delta) = colours(&mut rng);
        let grad = rng.random_range(0.0..2.0 * PI);
        let (gs, gc) = grad.sin_cos();
        let noise = rng.random_range(0.02f32..0.08);

        let size = self.size;
        let pixel = 2.0 / size as f32;
        let mut img = RgbImage::new(size, size);
        for (x, y, px) in img.enumerate_pixels_mut() {
            let p = [(x as f32 + 0.5) * pixel - 1.0, (y as f32 + 0.5) * pixel - 1.0];
            let d =
                segments.iter().map(|&seg| dist_to_segment(p, seg)).fold(f32::INFINITY, f32::min);
            let cover = ((half_width - d) / pixel + 0.5).clamp(0.0, 1.0);
            let g = 0.5 * (p[0] * gc + p[1] * gs);
            let mut out = [0u8; 3];
            for ch in 0..3 {
                let back = bg[ch] + g * delta[ch];
                let v =
                    back + cover * (fg[ch] - back) + noise * 3.464 * (rng.random::<f32>() - 0.5);
                out[ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
            *px = Rgb(out);
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glyph(class: u32, instance: u32) -> GlyphId {
        GlyphId { seed: 0, class, instance, size: 32 }
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f32 {
        let sum: u64 =
            a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
        sum as f32 / a.as_raw().len() as f32
    }

    #[test]
    fn rendering_is_deterministic_and_seeded() {
        let a = glyph(7, 3).render();
        assert_eq!(a, glyph(7, 3).render());
        let other_seed = GlyphId { seed: 1, ..glyph(7, 3) }.render();
        assert!(mean_abs_diff(&a, &other_seed) > 5.0);
    }

    #[test]
    fn instances_vary_and_classes_differ_in_shape() {
        // Instances of one class: different pixels (pose, colours, noise) …
        for class in 0..10 {
            let (a, b) = (glyph(class, 0).render(), glyph(class, 1).render());
            assert!(mean_abs_diff(&a, &b) > 10.0, "class {class}: {}", mean_abs_diff(&a, &b));
        }
        // … and classes: different stroke sets.
        let shapes: Vec<String> = (0..50).map(|c| format!("{:?}", class_strokes(0, c))).collect();
        for i in 0..shapes.len() {
            for j in i + 1..shapes.len() {
                assert_ne!(shapes[i], shapes[j], "classes {i} and {j}");
            }
        }
    }
}

#[cfg(test)]
/// How hard the glyphs are: learnable, not trivial, legible at the quickstart's 28 px.
mod difficulty_tests {
    use super::*;
    use rand::seq::index;

    fn glyph(class: u32, instance: u32, size: u32) -> GlyphId {
        GlyphId { seed: 0, class, instance, size }
    }

    /// Grey pixels, centred, sign chosen so the (minority) strokes are positive whatever the
    /// colours, unit norm.
    fn raw_feature(image: &RgbImage) -> Vec<f32> {
        let grey: Vec<f32> = image
            .pixels()
            .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
            .collect();
        let mean = grey.iter().sum::<f32>() / grey.len() as f32;
        let mut v: Vec<f32> = grey.iter().map(|g| g - mean).collect();
        if v.iter().map(|x| x * x * x).sum::<f32>() < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter().map(|x| x / norm).collect()
    }

    /// The dataset must be learnable but not trivial: a nearest-prototype classifier on raw
    /// pixels (no learning at all) is well above chance (20 %) at 28 px, yet far from perfect,
    /// leaving room for a trained backbone to show its worth. (The renderer's jitter ranges were
    /// tuned to about 63 % on this measure.)
    #[test]
    fn raw_pixel_prototypes_are_informative_but_not_perfect() {
        let (way, shot, query, episodes) = (5, 5, 10, 30);
        let mut rng = stream(99, &[]);
        let (mut correct, mut total) = (0usize, 0usize);
        for _ in 0..episodes {
            let classes = index::sample(&mut rng, 100, way).into_vec();
            let mut prototypes = Vec::new();
            let mut queries = Vec::new();
            for (n, &class) in classes.iter().enumerate() {
                let items = index::sample(&mut rng, 600, shot + query).into_vec();
                let features: Vec<Vec<f32>> = items
                    .iter()
                    .map(|&i| raw_feature(&glyph(class as u32, i as u32, 28).render()))
                    .collect();
                let mut prototype = vec![0.0; features[0].len()];
                for f in &features[..shot] {
                    prototype.iter_mut().zip(f).for_each(|(p, x)| *p += x);
                }
                prototypes.push(prototype);
                queries.extend(features[shot..].iter().map(|f| (n, f.clone())));
            }
            for (target, q) in &queries {
                let dist = |p: &Vec<f32>| -> f32 {
                    let norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
                    -p.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() / norm
                };
                let best = (0..way)
                    .min_by(|&a, &b| dist(&prototypes[a]).total_cmp(&dist(&prototypes[b])))
                    .unwrap_or(0);
                correct += usize::from(best == *target);
                total += 1;
            }
        }
        let accuracy = correct as f32 / total as f32;
        assert!((0.4..0.85).contains(&accuracy), "raw-pixel prototype accuracy {accuracy}");
    }

    #[test]
    fn glyphs_are_visible_and_inside_the_frame_at_28_px() {
        // Coverage of the strokes: pixels far from the image's median grey level.
        for class in 0..30 {
            for instance in 0..4 {
                let image = glyph(class, instance, 28).render();
                let grey = raw_feature(&image);
                let mut sorted = grey.clone();
                sorted.sort_by(f32::total_cmp);
                let median = sorted[sorted.len() / 2];
                let spread = sorted[sorted.len() - 1] - sorted[0];
                let ink = grey.iter().filter(|&&g| g - median > 0.5 * spread).count();
                let fraction = ink as f32 / grey.len() as f32;
                assert!(
                    (0.02..0.5).contains(&fraction),
                    "class {class} instance {instance}: ink {fraction}"
                );
            }
        }
    }
}
