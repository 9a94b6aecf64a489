//! The off-diagonal covariance penalty Σ_{i≠j} Cov_ij² / d, in the n×n Gram form or the d×d form.
//!
//! With Xc the column-centred rows and Cov = XcᵀXc / (n − 1):
//! ‖XcᵀXc‖_F² = ‖XcXcᵀ‖_F² (both are Σ over eigenvalues² of the same PSD spectrum), and the
//! diagonal of XcᵀXc is the column sums of squares. So
//! `Σ_{i≠j} Cov_ij² = (‖XcXcᵀ‖_F² − Σ_j (Σ_r Xc[r,j]²)²) / (n − 1)²`,
//! which needs only an n×n matrix. For ResNet features (d = 25088) and an episode's 25–105 rows,
//! that is the difference between kilobytes and a 2.5 GB d×d matrix.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::CovarianceMode;
use crate::precision::to_f32;

/// The form actually used for one set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CovarianceForm {
    /// ‖XcXcᵀ‖_F² on the n×n Gram matrix: O(n²d) time, O(n² + nd) memory.
    Gram,
    /// ‖XcᵀXc‖_F² on the d×d matrix: O(nd²) time, O(d²) memory.
    Naive,
}

impl CovarianceMode {
    /// The form to use for `rows` × `dim` input: `Auto` takes Gram when `rows < dim` (it is then
    /// cheaper in both time and memory) and the d×d form otherwise.
    pub fn resolve(self, rows: usize, dim: usize) -> CovarianceForm {
        match self {
            CovarianceMode::Gram => CovarianceForm::Gram,
            CovarianceMode::Naive => CovarianceForm::Naive,
            CovarianceMode::Auto if rows < dim => CovarianceForm::Gram,
            CovarianceMode::Auto => CovarianceForm::Naive,
        }
    }
}

/// Bessel's divisor n − 1, with 1 for a single row: a single row centres to zero, so every
/// covariance (and variance) is then 0 instead of 0/0.
pub(crate) fn bessel(rows: usize) -> f64 {
    rows.saturating_sub(1).max(1) as f64
}

/// Covariance penalty of one set: Σ_{i≠j} Cov_ij² / d, Cov = XcᵀXc / (n − 1) (unbiased).
///
/// The input is cast to f32 first so the reductions accumulate in f32. The result is a live
/// (differentiable) scalar. With one row the penalty is 0 (see the module docs for the forms).
///
/// # Shapes
/// - `x`: `[n, d]`, n ≥ 1 (an empty input gives NaN; [`vic_terms`](crate::vic_terms) rejects it).
/// - output: `[1]`.
pub fn covariance_term<B: Backend>(x: Tensor<B, 2>, form: CovarianceForm) -> Tensor<B, 1> {
    let x = to_f32(x);
    let [rows, dim] = x.dims();
    let xc = x.clone() - x.mean_dim(0);
    // Scaling by 1/sqrt(n − 1) up front makes every product below a covariance entry, which keeps
    // f32 magnitudes moderate and removes the (n − 1)² division at the end.
    let xs = xc.div_scalar(bessel(rows).sqrt());
    let diag_sq = xs.clone().square().sum_dim(0).square().sum();
    let product = match form {
        CovarianceForm::Gram => xs.clone().matmul(xs.transpose()),
        CovarianceForm::Naive => xs.clone().transpose().matmul(xs),
    };
    // Row sums first, then their sum: a flat f32 sum over the d² entries of the naive form loses
    // about 5e-3 relative at d = 2048; two levels keep it near f32 precision.
    let fro_sq = product.square().sum_dim(1).sum();
    (fro_sq - diag_sq).div_scalar(dim as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{self, assert_close, tensor, to_vec, Rng, AD, B};

    const DIM: usize = 40;

    #[test]
    fn auto_picks_gram_only_below_d() {
        assert_eq!(CovarianceMode::Auto.resolve(25, 25088), CovarianceForm::Gram);
        assert_eq!(CovarianceMode::Auto.resolve(40, 40), CovarianceForm::Naive);
        assert_eq!(CovarianceMode::Auto.resolve(60, 40), CovarianceForm::Naive);
        assert_eq!(CovarianceMode::Gram.resolve(60, 40), CovarianceForm::Gram);
        assert_eq!(CovarianceMode::Naive.resolve(10, 40), CovarianceForm::Naive);
    }

    #[test]
    fn both_forms_match_the_f64_reference_in_value_and_gradient() {
        let mut rng = Rng(1);
        for rows in [10, 60] {
            let x = rng.matrix(rows, DIM);
            let (expected, expected_grad) = reference::covariance(&x, rows, DIM);
            for form in [CovarianceForm::Gram, CovarianceForm::Naive] {
                let input = tensor::<AD, 2>(&x, [rows, DIM]).require_grad();
                let term = covariance_term(input.clone(), form);
                let value = to_vec(term.clone())[0];
                let grads = term.backward();
                let grad =
                    to_vec(input.grad(&grads).expect("covariance sends a gradient to its input"));
                assert_close(&[value], &[expected], 1e-5, &format!("covariance {form:?} n={rows}"));
                assert_close(
                    &grad,
                    &expected_grad,
                    1e-4,
                    &format!("covariance grad {form:?} n={rows}"),
                );
            }
        }
    }

    #[test]
    fn gram_and_naive_agree_on_correlated_features() {
        // Rank-3 features with a large shared component: the off-diagonal mass dominates.
        let mut rng = Rng(2);
        let rows = 30;
        let basis = rng.matrix(3, DIM);
        let coeffs = rng.matrix(rows, 3);
        let x: Vec<f64> = (0..rows * DIM)
            .map(|i| {
                (0..3).map(|b| coeffs[(i / DIM) * 3 + b] * basis[b * DIM + i % DIM]).sum::<f64>()
                    + 0.01 * rng.normal()
            })
            .collect();
        let gram =
            to_vec(covariance_term(tensor::<B, 2>(&x, [rows, DIM]), CovarianceForm::Gram))[0];
        let naive =
            to_vec(covariance_term(tensor::<B, 2>(&x, [rows, DIM]), CovarianceForm::Naive))[0];
        assert_close(&[gram], &[naive], 1e-5, "gram vs naive");
        assert_close(&[gram], &[reference::covariance(&x, rows, DIM).0], 1e-5, "gram vs reference");
    }

    #[test]
    fn one_row_gives_zero_penalty_and_zero_gradient() {
        let x = Rng(3).matrix(1, DIM);
        for form in [CovarianceForm::Gram, CovarianceForm::Naive] {
            let input = tensor::<AD, 2>(&x, [1, DIM]).require_grad();
            let term = covariance_term(input.clone(), form);
            assert_eq!(to_vec(term.clone()), vec![0.0]);
            let grad = to_vec(input.grad(&term.backward()).unwrap());
            assert!(grad.iter().all(|&g| g == 0.0), "{form:?}: {grad:?}");
        }
    }
}
