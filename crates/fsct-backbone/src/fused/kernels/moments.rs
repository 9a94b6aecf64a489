//! Per-channel batch statistics of a map.

use rayon::prelude::*;

use super::{Dims, Element};

/// Per-channel mean and biased variance over the batch and both spatial axes (two passes, f64
/// accumulation of f32 partial sums).
pub(crate) fn channel_moments<E: Element>(x: &[E], d: Dims) -> (Vec<f64>, Vec<f64>) {
    debug_assert_eq!(x.len(), d.len());
    let count = (d.n * d.plane()).max(1) as f64;
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..d.n).map(move |i| channel_plane(x, d, i, ch));
            let mean = planes().map(|p| lane_sum(p, |v| v.to_f32())).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes()
                .map(|p| {
                    lane_sum(p, |v| {
                        let c = v.to_f32() - m;
                        c * c
                    })
                })
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// `Σ f(v)` over a slice with eight independent f32 lanes (vectorisable), returned in f64.
fn lane_sum<E: Element>(values: &[E], f: impl Fn(E) -> f32) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

fn channel_plane<E>(x: &[E], d: Dims, i: usize, ch: usize) -> &[E] {
    let plane = d.plane();
    &x[(i * d.c + ch) * plane..][..plane]
}
