//! Episode-accuracy statistics: the reference's 95% interval (spec §3.6) and the Student-t one
//! LibFewShot reports.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// How a 95% confidence half-width is computed from per-episode accuracies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CiKind {
    /// The reference's `1.96·σ/√n`, σ the population standard deviation (ddof = 0).
    Reference,
    /// `t₀.₉₇₅,ₙ₋₁·s/√n`, s the sample standard deviation (ddof = 1): LibFewShot's
    /// `mean_confidence_interval` (`scipy.stats.t.ppf` × `scipy.stats.sem`).
    StudentT,
}

impl CiKind {
    /// The name the `--ci` flag takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::StudentT => "student-t",
        }
    }

    /// Mean and 95% half-width of `accuracies` (both in the accuracies' unit).
    pub fn interval(self, accuracies: &[f64]) -> (f64, f64) {
        match self {
            Self::Reference => mean_ci95(accuracies),
            Self::StudentT => mean_ci95_student_t(accuracies),
        }
    }
}

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

/// Mean and 95% half-width `t₀.₉₇₅,ₙ₋₁·s/√n` with the sample standard deviation (ddof = 1), as
/// LibFewShot reports it. Fewer than two episodes: no spread (half-width 0).
pub fn mean_ci95_student_t(accuracies: &[f64]) -> (f64, f64) {
    let n = accuracies.len();
    if n < 2 {
        return (accuracies.first().copied().unwrap_or(0.0), 0.0);
    }
    let nf = n as f64;
    let mean = accuracies.iter().sum::<f64>() / nf;
    let sample_var = accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let t = StudentsT::new(0.0, 1.0, nf - 1.0).map(|dist| dist.inverse_cdf(0.975)).unwrap_or(1.96);
    (mean, t * sample_var.sqrt() / nf.sqrt())
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

    #[test]
    fn student_t_matches_scipy() {
        // scipy: t.ppf(0.975, 3) = 3.182446305284263; sem([40, 60, 40, 60]) = 5.773502691896258.
        let (mean, ci) = mean_ci95_student_t(&[40.0, 60.0, 40.0, 60.0]);
        assert!((mean - 50.0).abs() < 1e-12);
        assert!((ci - 3.182446305284263 * 5.773502691896258).abs() < 1e-6, "{ci}");
        // 600 episodes: t.ppf(0.975, 599) = 1.9639; the interval is wider than the reference's
        // also by √(n/(n−1)).
        let accs: Vec<f64> = (0..600).map(|i| if i % 2 == 0 { 40.0 } else { 60.0 }).collect();
        let (_, t_ci) = mean_ci95_student_t(&accs);
        let (_, ref_ci) = mean_ci95(&accs);
        let expected = ref_ci / 1.96 * 1.963939 * (600.0f64 / 599.0).sqrt();
        assert!((t_ci - expected).abs() < 1e-4, "{t_ci} vs {expected}");
        assert_eq!(mean_ci95_student_t(&[70.0]), (70.0, 0.0));
        assert_eq!(CiKind::StudentT.interval(&[70.0]), (70.0, 0.0));
        assert_eq!(CiKind::Reference.interval(&[40.0, 60.0]), mean_ci95(&[40.0, 60.0]));
    }
}
