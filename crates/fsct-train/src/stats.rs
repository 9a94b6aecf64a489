//! Episode-accuracy statistics as the reference reports them (spec §3.6).

/// Mean and 95% confidence half-width of per-episode accuracies (in %): `1.96·σ/√n` with the
/// population standard deviation (ddof = 0), as the reference computes it.
pub fn mean_ci95(accuracies: &[f64]) -> (f64, f64) {
    if accuracies.is_empty() {
        return (0.0, 0.0);
    }
    let n = accuracies.len() as f64;
    let mean = accuracies.iter().sum::<f64>() / n;
    let var = accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.96 * var.sqrt() / n.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_interval() {
        // mean 50, population σ = 10 over 4 episodes: 1.96·10/2 = 9.8.
        let (mean, ci) = mean_ci95(&[40.0, 60.0, 40.0, 60.0]);
        assert!((mean - 50.0).abs() < 1e-12);
        assert!((ci - 9.8).abs() < 1e-12);
        // One episode: no spread.
        assert_eq!(mean_ci95(&[70.0]), (70.0, 0.0));
        assert_eq!(mean_ci95(&[]), (0.0, 0.0));
    }
}
