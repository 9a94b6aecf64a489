//! Test-only naive f64 references (plain `Vec<f64>`, row-major), with analytic gradients, and
//! helpers shared by the tests of several modules.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};

pub type B = Flex;
pub type AD = Autodiff<Flex>;

/// SplitMix64: deterministic inputs without a `rand` dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `rows × dim` normal values; column j has std 0.3 + 1.7·j/dim and a non-zero mean, so the
    /// variance hinge (γ = 1) is active for some columns and not for others, and centring matters.
    pub fn matrix(&mut self, rows: usize, dim: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows * dim);
        for _ in 0..rows {
            for j in 0..dim {
                let std = 0.3 + 1.7 * j as f64 / dim as f64;
                out.push(0.5 - j as f64 / dim as f64 + std * self.normal());
            }
        }
        out
    }
}

pub fn tensor<Bk: burn::tensor::backend::Backend, const D: usize>(
    values: &[f64],
    shape: [usize; D],
) -> Tensor<Bk, D> {
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

pub fn to_vec<Bk: burn::tensor::backend::Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Asserts `actual ≈ expected` to `rel` times the largest |expected| (plus a tiny absolute floor).
pub fn assert_close(actual: &[f64], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = rel * scale + 1e-9;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "{what}[{i}]: got {a}, expected {e} (tolerance {tol:e})");
    }
}

fn centred(x: &[f64], rows: usize, dim: usize) -> Vec<f64> {
    let mut out = x.to_vec();
    for j in 0..dim {
        let mean = (0..rows).map(|r| x[r * dim + j]).sum::<f64>() / rows as f64;
        for r in 0..rows {
            out[r * dim + j] -= mean;
        }
    }
    out
}

fn divisor(rows: usize) -> f64 {
    if rows > 1 {
        (rows - 1) as f64
    } else {
        1.0
    }
}

/// mean_j relu(γ − sqrt(Var_j + ε)), unbiased Var; and d/dx.
pub fn variance(x: &[f64], rows: usize, dim: usize, gamma: f64, eps: f64) -> (f64, Vec<f64>) {
    let xc = centred(x, rows, dim);
    let m = divisor(rows);
    let mut value = 0.0;
    let mut grad = vec![0.0; rows * dim];
    for j in 0..dim {
        let var = (0..rows).map(|r| xc[r * dim + j].powi(2)).sum::<f64>() / m;
        let std = (var + eps).sqrt();
        if gamma > std {
            value += (gamma - std) / dim as f64;
            for r in 0..rows {
                // Column sums of xc are 0, so the centring's own derivative drops out.
                grad[r * dim + j] = -xc[r * dim + j] / (dim as f64 * m * std);
            }
        }
    }
    (value, grad)
}

/// mean over (n,k,j) of (S[n,k,j] − mean_k S[n,·,j])²; and d/dS.
pub fn invariance(s: &[f64], ways: usize, shots: usize, dim: usize) -> (f64, Vec<f64>) {
    let count = (ways * shots * dim) as f64;
    let mut value = 0.0;
    let mut grad = vec![0.0; s.len()];
    for n in 0..ways {
        for j in 0..dim {
            let at = |k: usize| (n * shots + k) * dim + j;
            let mean = (0..shots).map(|k| s[at(k)]).sum::<f64>() / shots as f64;
            for k in 0..shots {
                let diff = s[at(k)] - mean;
                value += diff * diff / count;
                grad[at(k)] = 2.0 * diff / count;
            }
        }
    }
    (value, grad)
}

/// Σ_{i≠j} Cov_ij² / d with the full d×d Cov = XcᵀXc/(n−1); and d/dx = 4·Xc·offdiag(Cov)/(d(n−1)).
pub fn covariance(x: &[f64], rows: usize, dim: usize) -> (f64, Vec<f64>) {
    let xc = centred(x, rows, dim);
    let m = divisor(rows);
    let mut cov = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            cov[i * dim + j] =
                (0..rows).map(|r| xc[r * dim + i] * xc[r * dim + j]).sum::<f64>() / m;
        }
    }
    let mut value = 0.0;
    for i in 0..dim {
        for j in 0..dim {
            if i != j {
                value += cov[i * dim + j].powi(2) / dim as f64;
            }
        }
    }
    let mut grad = vec![0.0; rows * dim];
    for r in 0..rows {
        for a in 0..dim {
            let s: f64 =
                (0..dim).filter(|&j| j != a).map(|j| xc[r * dim + j] * cov[j * dim + a]).sum();
            grad[r * dim + a] = 4.0 * s / (dim as f64 * m);
        }
    }
    (value, grad)
}

/// Central finite difference of `f` at coordinate `i`, in f64: checks the analytic gradients above.
pub fn finite_difference(f: impl Fn(&[f64]) -> f64, x: &[f64], i: usize) -> f64 {
    let h = 1e-5;
    let mut plus = x.to_vec();
    let mut minus = x.to_vec();
    plus[i] += h;
    minus[i] -= h;
    (f(&plus) - f(&minus)) / (2.0 * h)
}

#[test]
fn analytic_reference_gradients_match_finite_differences() {
    let mut rng = Rng(7);
    for (rows, dim) in [(6, 9), (12, 5)] {
        let x = rng.matrix(rows, dim);
        let (_, gv) = variance(&x, rows, dim, 1.0, 1e-4);
        let (_, gc) = covariance(&x, rows, dim);
        let (_, gi) = invariance(&x, 2, rows / 2, dim);
        for i in (0..rows * dim).step_by(7) {
            let fv = finite_difference(|x| variance(x, rows, dim, 1.0, 1e-4).0, &x, i);
            let fc = finite_difference(|x| covariance(x, rows, dim).0, &x, i);
            let fi = finite_difference(|x| invariance(x, 2, rows / 2, dim).0, &x, i);
            assert!((fv - gv[i]).abs() < 1e-6, "variance grad {i}: fd {fv} vs {}", gv[i]);
            assert!(
                (fc - gc[i]).abs() < 1e-6 * (1.0 + fc.abs()),
                "covariance grad {i}: fd {fc} vs {}",
                gc[i]
            );
            assert!((fi - gi[i]).abs() < 1e-6, "invariance grad {i}: fd {fi} vs {}", gi[i]);
        }
    }
}

/// Compares two states field by field. serde_json's default float parser can be one ulp off (its
/// `float_roundtrip` feature makes it exact), so a JSON round trip is checked to 1e-14 relative.
pub fn assert_state_close(a: &crate::VicState, b: &crate::VicState) {
    let flat = |s: &crate::VicState| {
        [
            s.lambda_v,
            s.lambda_i,
            s.lambda_c,
            s.ema_variance,
            s.ema_invariance,
            s.ema_covariance,
            s.ema_lambda_v,
            s.ema_lambda_i,
            s.ema_lambda_c,
        ]
    };
    assert_eq!(a.steps, b.steps);
    for (x, y) in flat(a).iter().zip(flat(b)) {
        assert!((x - y).abs() <= 1e-14 * y.abs().max(1e-300), "{a:?}\nvs\n{b:?}");
    }
}
