//! The kernels against an f64 reference, element by element.

use super::*;

/// An f64 batch norm → ReLU → max-pool forward and its gradients, element by element.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn reference(
    x: &[f32],
    d: Dims,
    gamma: &[f32],
    beta: &[f32],
    grad: &[f32],
    pool: Pool,
) -> Reference {
    let o = d.output(pool);
    let n = (d.n * d.plane()) as f64;
    let idx = |i: usize, ch: usize, y: usize, xx: usize| ((i * d.c + ch) * d.h + y) * d.w + xx;
    let mut r = Reference {
        y: vec![0.0; o.len()],
        dx: vec![0.0; d.len()],
        dgamma: vec![0.0; d.c],
        dbeta: vec![0.0; d.c],
    };
    for ch in 0..d.c {
        let positions: Vec<usize> = (0..d.n)
            .flat_map(|i| (0..d.h).flat_map(move |y| (0..d.w).map(move |xx| idx(i, ch, y, xx))))
            .collect();
        let mean = positions.iter().map(|&p| x[p] as f64).sum::<f64>() / n;
        let var = positions.iter().map(|&p| (x[p] as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv_std = 1.0 / (var + 1e-5).sqrt();
        let xhat = |p: usize| (x[p] as f64 - mean) * inv_std;
        let z = |p: usize| xhat(p) * gamma[ch] as f64 + beta[ch] as f64;
        // dz: the gradient reaching the batch-norm output.
        let mut dz = vec![0.0; d.len()];
        for i in 0..d.n {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let k = ((i * d.c + ch) * o.h + oy) * o.w + ox;
                    let (p, v) = if pool == Pool::Max3x3Stride2 {
                        // Rows and columns 2·o − 1 ..= 2·o + 1 inside the plane, row-major.
                        let inside = |s: usize, n: usize| {
                            (0..3)
                                .filter_map(move |k| (2 * s + k).checked_sub(1).filter(|&v| v < n))
                        };
                        let window: Vec<usize> = inside(oy, d.h)
                            .flat_map(|y| inside(ox, d.w).map(move |xx| idx(i, ch, y, xx)))
                            .collect();
                        let mut best = window[0];
                        for &q in &window[1..] {
                            if z(q) > z(best) {
                                best = q;
                            }
                        }
                        (best, z(best))
                    } else if pool == Pool::Max2x2 {
                        let window = [
                            idx(i, ch, 2 * oy, 2 * ox),
                            idx(i, ch, 2 * oy, 2 * ox + 1),
                            idx(i, ch, 2 * oy + 1, 2 * ox),
                            idx(i, ch, 2 * oy + 1, 2 * ox + 1),
                        ];
                        let mut best = window[0];
                        for &q in &window[1..] {
                            if z(q) > z(best) {
                                best = q;
                            }
                        }
                        (best, z(best))
                    } else {
                        let p = idx(i, ch, oy, ox);
                        (p, z(p))
                    };
                    r.y[k] = v.max(0.0);
                    if v > 0.0 {
                        dz[p] += grad[k] as f64;
                    }
                }
            }
        }
        r.dbeta[ch] = positions.iter().map(|&p| dz[p]).sum();
        r.dgamma[ch] = positions.iter().map(|&p| dz[p] * xhat(p)).sum();
        for &p in &positions {
            r.dx[p] =
                gamma[ch] as f64 * inv_std * (dz[p] - r.dbeta[ch] / n - xhat(p) * r.dgamma[ch] / n);
        }
    }
    r
}

/// Deterministic pseudo-random values in [-1, 1) (no ties in practice).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn run(d: Dims, pool: Pool) {
    let x: Vec<f32> = values(d.len(), 1).iter().map(|v| 3.0 * v + 0.5).collect();
    let gamma: Vec<f32> =
        (0..d.c).map(|ch| if ch % 3 == 2 { -0.7 } else { 1.0 + 0.25 * ch as f32 }).collect();
    let beta: Vec<f32> = (0..d.c).map(|ch| 0.2 * ch as f32 - 0.3).collect();
    let grad = values(d.output(pool).len(), 2);
    let r = reference(&x, d, &gamma, &beta, &grad, pool);

    let (mean, var) = channel_moments(&x, d);
    let inv_std: Vec<f32> = var.iter().map(|v| (1.0 / (v + 1e-5).sqrt()) as f32).collect();
    let scale: Vec<f32> = (0..d.c).map(|ch| gamma[ch] * inv_std[ch]).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] as f32 * scale[ch]).collect();
    let (y, codes) = forward(&x, d, &scale, &shift, pool, Record::Decisions);
    assert_close(&y, &r.y, 1e-5, "output");
    let saved = Saved {
        dims: d,
        mean: mean.iter().map(|&m| m as f32).collect(),
        inv_std,
        gamma,
        scale,
        shift,
        decisions: match pool {
            Pool::Max2x2 => Decisions::PoolWindows,
            Pool::Max3x3Stride2 => Decisions::PoolWindows3x3,
            Pool::Off => Decisions::RecomputedRelu,
        },
        codes,
    };
    let (dx, dgamma, dbeta) = backward(&x, &grad, &saved);
    assert_close(&dx, &r.dx, 1e-5, "dx");
    assert_close(&dgamma, &r.dgamma, 1e-4, "dgamma");
    assert_close(&dbeta, &r.dbeta, 1e-4, "dbeta");
}

fn assert_close(ours: &[f32], reference: &[f64], tolerance: f64, what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        assert!((a as f64 - b).abs() <= tolerance * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn pooled_tail_matches_an_f64_reference_forward_and_backward() {
    run(Dims { n: 3, c: 4, h: 6, w: 8 }, Pool::Max2x2);
}

#[test]
fn odd_sizes_pool_with_floor_and_leave_the_last_row_and_column_out() {
    run(Dims { n: 2, c: 3, h: 7, w: 5 }, Pool::Max2x2);
}

#[test]
fn stem_pooled_tail_matches_an_f64_reference_forward_and_backward() {
    // Overlapping windows: an input that is the maximum of two windows gets both gradients.
    run(Dims { n: 2, c: 3, h: 8, w: 6 }, Pool::Max3x3Stride2);
    run(Dims { n: 3, c: 2, h: 7, w: 9 }, Pool::Max3x3Stride2);
}

#[test]
fn unpooled_tail_matches_an_f64_reference_forward_and_backward() {
    run(Dims { n: 2, c: 5, h: 5, w: 9 }, Pool::Off);
}

#[test]
fn moments_are_the_biased_per_channel_mean_and_variance() {
    let d = Dims { n: 2, c: 2, h: 1, w: 3 };
    // channel 0: 1, 2, 3, 4, 5, 6; channel 1: 10 × 6.
    let x = [1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 4.0, 5.0, 6.0, 10.0, 10.0, 10.0];
    let (mean, var) = channel_moments(&x, d);
    assert_eq!(mean, vec![3.5, 10.0]);
    assert!((var[0] - 17.5 / 6.0).abs() < 1e-12 && var[1] == 0.0, "{var:?}");
}

#[test]
fn ties_take_the_first_slot_and_non_positive_windows_are_inactive() {
    let d = Dims { n: 1, c: 1, h: 2, w: 4 };
    // window 0: [1, 2 / 2, 0] → slot 1 (first of the tied 2s); window 1: all ≤ 0 → inactive.
    let x = [1.0, 2.0, -1.0, 0.0, 2.0, 0.0, -3.0, -2.0];
    let (y, codes) = forward(&x, d, &[1.0], &[0.0], Pool::Max2x2, Record::Decisions);
    assert_eq!(y, vec![2.0, 0.0]);
    assert_eq!(codes, vec![1, INACTIVE]);
    let (y, _) = forward(
        &[f32::NAN, 1.0, 0.0, 0.0],
        Dims { n: 1, c: 1, h: 2, w: 2 },
        &[1.0],
        &[0.0],
        Pool::Max2x2,
        Record::Decisions,
    );
    assert!(y[0].is_nan(), "a NaN must not be hidden by the ReLU");
}

/// The stem's 3×3 stride-2 pool scanned window by window, tap by tap in row-major order: the
/// definition the separable kernel must reproduce (value and window code) on ties and NaNs.
#[test]
fn stem_pool_keeps_the_first_maximum_or_the_last_nan_of_each_window() {
    for (h, w) in [(1, 1), (1, 4), (2, 2), (3, 5), (4, 4), (5, 3), (6, 7), (7, 6), (9, 9)] {
        let d = Dims { n: 2, c: 2, h, w };
        let o = d.output(Pool::Max3x3Stride2);
        // Few distinct values (many ties), some NaNs, negatives that the ReLU stops.
        let x: Vec<f32> = values(d.len(), (h * 16 + w) as u64)
            .iter()
            .map(|v| if *v > 0.85 { f32::NAN } else { (v * 3.0).round() })
            .collect();
        let (scale, shift) = (vec![1.0, -0.5], vec![0.5, 0.25]);
        let (y, codes) = forward(&x, d, &scale, &shift, Pool::Max3x3Stride2, Record::Decisions);
        for p in 0..d.n * d.c {
            let (a, b) = (scale[p % d.c], shift[p % d.c]);
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let (mut best, mut slot) = (f32::NAN, u8::MAX);
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (Some(yy), Some(xx)) =
                                ((2 * oy + dy).checked_sub(1), (2 * ox + dx).checked_sub(1))
                            else {
                                continue;
                            };
                            if yy >= h || xx >= w {
                                continue;
                            }
                            let v = x[(p * h + yy) * w + xx] * a + b;
                            if slot == u8::MAX || v > best || v.is_nan() {
                                (best, slot) = (v, (3 * dy + dx) as u8);
                            }
                        }
                    }
                    let k = (p * o.h + oy) * o.w + ox;
                    let active = best > 0.0 || best.is_nan();
                    let (want, want_code) = if active { (best, slot) } else { (0.0, INACTIVE) };
                    let at = format!("{h}x{w} plane {p} output ({oy}, {ox})");
                    assert!(
                        y[k] == want || (y[k].is_nan() && want.is_nan()),
                        "{at}: {} vs {want}",
                        y[k]
                    );
                    assert_eq!(codes[k], want_code, "{at}: window code");
                }
            }
        }
    }
}
