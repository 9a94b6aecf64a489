//! The three VIC terms on live embeddings, and their weighted total.

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::config::VicConfig;
use crate::covariance::{bessel, covariance_term};
use crate::error::VicError;
use crate::precision::to_f32;
use crate::values::VicValues;

/// One episode's VIC terms as live scalar tensors (shape `[1]`, f32): they stay attached to the
/// graph that produced the embeddings, so `total` sends gradients into the backbone.
#[derive(Debug, Clone)]
pub struct VicTerms<B: Backend> {
    /// Variance term, mean of the support and query values.
    pub variance: Tensor<B, 1>,
    /// Invariance term (support only).
    pub invariance: Tensor<B, 1>,
    /// Covariance term, mean of the support and query values.
    pub covariance: Tensor<B, 1>,
    /// λv·variance + λi·invariance + λc·covariance, to add to the classification loss.
    pub total: Tensor<B, 1>,
}

impl<B: Backend> VicTerms<B> {
    /// Reads the four scalars back as `f64`s. Works on clones, so the tensors (and their graph)
    /// stay usable for `backward`; the result holds no tensor at all.
    pub fn values(&self) -> VicValues {
        VicValues {
            variance: scalar(&self.variance),
            invariance: scalar(&self.invariance),
            covariance: scalar(&self.covariance),
            total: scalar(&self.total),
        }
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem()
}

/// Variance term of one set: mean over dimensions j of relu(γ − sqrt(Var_j + ε)).
///
/// Var_j is the **unbiased** (Bessel-corrected, ÷ (n − 1)) variance of column j, as in VICReg and
/// `torch.var`'s default: an episode has only 5–105 rows, where the biased estimate would
/// understate the spread by up to 20% (n = 5) and push the hinge to inflate the features. With a
/// single row the divisor is taken as 1, so Var_j = 0 and the term is the constant
/// relu(γ − sqrt(ε)) with zero gradient (one sample has no spread to regularize).
///
/// The input is cast to f32 first.
///
/// # Shapes
/// - `x`: `[n, d]`, n ≥ 1.
/// - output: `[1]`.
pub fn variance_term<B: Backend>(x: Tensor<B, 2>, gamma: f64, epsilon: f64) -> Tensor<B, 1> {
    let x = to_f32(x);
    let [rows, _] = x.dims();
    let xc = x.clone() - x.mean_dim(0);
    let var = xc.square().sum_dim(0).div_scalar(bessel(rows));
    let std = var.add_scalar(epsilon).sqrt();
    relu(std.neg().add_scalar(gamma)).mean()
}

/// Invariance term of the support set: the mean squared distance of each support embedding to
/// its class mean,
/// `I = 1/(N·K·d) · Σ_{n,k,j} (S[n,k,j] − mean_k' S[n,k',j])²`.
///
/// The class mean is the plain (unweighted) mean of the K shots, not FS-CT's learned prototype.
/// For 1-shot episodes (K = 1) every embedding is its own class mean, so the term is exactly 0
/// and contributes no gradient.
///
/// The input is cast to f32 first.
///
/// # Shapes
/// - `support`: `[N, K, d]`.
/// - output: `[1]`.
pub fn invariance_term<B: Backend>(support: Tensor<B, 3>) -> Tensor<B, 1> {
    let support = to_f32(support);
    let class_mean = support.clone().mean_dim(1);
    (support - class_mean).square().mean()
}

fn bad_input(what: String, fix: &str) -> VicError {
    VicError::BadInput { what, fix: fix.to_string() }
}

/// Computes the VIC terms of one episode from live backbone embeddings.
///
/// - variance = (V(support rows) + V(query)) / 2, see [`variance_term`];
/// - invariance = I(support), see [`invariance_term`] (0 for 1-shot);
/// - covariance = (C(support rows) + C(query)) / 2, see
///   [`covariance_term`](crate::covariance_term); the form for each set comes from
///   `config.covariance` (Gram when rows < d under `auto`);
/// - total = λv·variance + λi·invariance + λc·covariance, with `lambdas = [λv, λi, λc]` as plain
///   scalars (usually [`VicState::lambdas`](crate::VicState::lambdas)).
///
/// Any float dtype is accepted; everything is computed and returned in f32, so f16 embeddings
/// still reduce in f32. Nothing is detached: `total` sends gradients into whatever produced
/// `support` and `query`.
///
/// # Shapes
/// - `support`: `[N, K, d]` (N ways, K shots), flattened to `[N·K, d]` for variance and covariance.
/// - `query`: `[Q, d]`.
/// - each output tensor: `[1]`.
///
/// # Panics
/// With the message of [`try_vic_terms`]'s error when a dimension is 0, the two `d`s differ, or
/// `config` or `lambdas` is invalid. Shapes come from the model and the config is validated when
/// it is loaded, so this is a programming error; call [`try_vic_terms`] to get it as a `Result`.
pub fn vic_terms<B: Backend>(
    support: Tensor<B, 3>,
    query: Tensor<B, 2>,
    lambdas: [f64; 3],
    config: &VicConfig,
) -> VicTerms<B> {
    match try_vic_terms(support, query, lambdas, config) {
        Ok(terms) => terms,
        Err(err) => panic!("{err}"),
    }
}

/// [`vic_terms`], returning bad input as an error instead of panicking.
///
/// # Shapes
/// As [`vic_terms`].
///
/// # Errors
/// [`VicError::BadInput`] when a dimension is 0 or the two `d`s differ;
/// [`VicError::InvalidConfig`] when `config` or `lambdas` is invalid.
pub fn try_vic_terms<B: Backend>(
    support: Tensor<B, 3>,
    query: Tensor<B, 2>,
    lambdas: [f64; 3],
    config: &VicConfig,
) -> Result<VicTerms<B>, VicError> {
    config.validate()?;
    let [lambda_v, lambda_i, lambda_c] = lambdas;
    for (field, value) in [("lambda_v", lambda_v), ("lambda_i", lambda_i), ("lambda_c", lambda_c)] {
        if !value.is_finite() || value < 0.0 {
            return Err(VicError::InvalidConfig {
                field,
                value: format!("{value}"),
                fix: "the weights passed to vic_terms must be finite and >= 0; reset them from the config".into(),
            });
        }
    }
    let [ways, shots, dim] = support.dims();
    let [queries, query_dim] = query.dims();
    if ways == 0 || shots == 0 || dim == 0 {
        return Err(bad_input(
            format!("support embeddings have shape [N, K, d] = [{ways}, {shots}, {dim}]"),
            "pass at least one way, one shot and one feature dimension",
        ));
    }
    if queries == 0 {
        return Err(bad_input(
            format!("query embeddings have shape [Q, d] = [{queries}, {query_dim}]"),
            "pass at least one query",
        ));
    }
    if query_dim != dim {
        return Err(bad_input(
            format!("support [N, K, d] = [{ways}, {shots}, {dim}] and query [Q, d] = [{queries}, {query_dim}] differ in d"),
            "pass the same backbone's flattened features for both sets",
        ));
    }

    let support_rows = ways * shots;
    let support_form = config.covariance.resolve(support_rows, dim);
    let query_form = config.covariance.resolve(queries, dim);
    let _span =
        tracing::debug_span!("vic_terms", ways, shots, queries, dim, ?support_form, ?query_form)
            .entered();

    let support = to_f32(support);
    let query = to_f32(query);
    let flat = support.clone().reshape([support_rows, dim]);

    let variance = (variance_term(flat.clone(), config.gamma, config.epsilon)
        + variance_term(query.clone(), config.gamma, config.epsilon))
    .div_scalar(2.0);
    let invariance = invariance_term(support);
    let covariance =
        (covariance_term(flat, support_form) + covariance_term(query, query_form)).div_scalar(2.0);
    let total = variance.clone().mul_scalar(lambda_v)
        + invariance.clone().mul_scalar(lambda_i)
        + covariance.clone().mul_scalar(lambda_c);
    Ok(VicTerms { variance, invariance, covariance, total })
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{DType, FloatDType};

    use super::*;
    use crate::reference::{self, assert_close, tensor, to_vec, Rng, AD, B};

    const DIM: usize = 40;

    fn weights(v: f64, i: f64, c: f64) -> [f64; 3] {
        [v, i, c]
    }

    #[test]
    fn variance_matches_the_f64_reference_in_value_and_gradient() {
        let mut rng = Rng(10);
        for rows in [10, 60] {
            let x = rng.matrix(rows, DIM);
            let (expected, expected_grad) = reference::variance(&x, rows, DIM, 1.0, 1e-4);
            assert!(
                expected > 0.05 && expected_grad.iter().filter(|g| **g == 0.0).count() > 0,
                "the hinge is active for some columns only"
            );
            let input = tensor::<AD, 2>(&x, [rows, DIM]).require_grad();
            let term = variance_term(input.clone(), 1.0, 1e-4);
            assert_close(&to_vec(term.clone()), &[expected], 1e-5, &format!("variance n={rows}"));
            let grad = to_vec(input.grad(&term.backward()).unwrap());
            assert_close(&grad, &expected_grad, 1e-4, &format!("variance grad n={rows}"));
        }
        // γ and ε are honoured.
        let x = rng.matrix(10, DIM);
        let got = to_vec(variance_term(tensor::<B, 2>(&x, [10, DIM]), 2.5, 0.3))[0];
        assert_close(
            &[got],
            &[reference::variance(&x, 10, DIM, 2.5, 0.3).0],
            1e-5,
            "variance γ=2.5 ε=0.3",
        );
    }

    #[test]
    fn variance_of_a_single_row_is_the_constant_hinge() {
        let x = Rng(11).matrix(1, DIM);
        let input = tensor::<AD, 2>(&x, [1, DIM]).require_grad();
        let term = variance_term(input.clone(), 1.0, 1e-4);
        assert_close(&to_vec(term.clone()), &[1.0 - 1e-4f64.sqrt()], 1e-6, "one row");
        assert!(to_vec(input.grad(&term.backward()).unwrap()).iter().all(|&g| g == 0.0));
    }

    #[test]
    fn invariance_matches_the_f64_reference_and_is_zero_for_one_shot() {
        let mut rng = Rng(12);
        for (ways, shots) in [(5, 2), (4, 15)] {
            let s = rng.matrix(ways * shots, DIM);
            let (expected, expected_grad) = reference::invariance(&s, ways, shots, DIM);
            let input = tensor::<AD, 3>(&s, [ways, shots, DIM]).require_grad();
            let term = invariance_term(input.clone());
            assert_close(&to_vec(term.clone()), &[expected], 1e-5, "invariance");
            assert_close(
                &to_vec(input.grad(&term.backward()).unwrap()),
                &expected_grad,
                1e-4,
                "invariance grad",
            );
        }
        let s = rng.matrix(5, DIM);
        assert_eq!(to_vec(invariance_term(tensor::<B, 3>(&s, [5, 1, DIM]))), vec![0.0], "1-shot");
    }

    /// Full episode against the reference, with n < d in one set and n > d in the other.
    #[test]
    fn weighted_total_and_its_gradients_match_the_reference() {
        let mut rng = Rng(13);
        let w = weights(0.7, 1.3, 2.0);
        for (ways, shots, queries) in [(5, 2, 60), (4, 15, 10)] {
            let rows = ways * shots;
            let s = rng.matrix(rows, DIM);
            let q = rng.matrix(queries, DIM);
            let (vs, gvs) = reference::variance(&s, rows, DIM, 1.0, 1e-4);
            let (vq, gvq) = reference::variance(&q, queries, DIM, 1.0, 1e-4);
            let (is, gis) = reference::invariance(&s, ways, shots, DIM);
            let (cs, gcs) = reference::covariance(&s, rows, DIM);
            let (cq, gcq) = reference::covariance(&q, queries, DIM);
            let (v, c) = ((vs + vq) / 2.0, (cs + cq) / 2.0);
            let total = w[0] * v + w[1] * is + w[2] * c;
            let grad_s: Vec<f64> = (0..s.len())
                .map(|k| w[0] * gvs[k] / 2.0 + w[1] * gis[k] + w[2] * gcs[k] / 2.0)
                .collect();
            let grad_q: Vec<f64> =
                (0..q.len()).map(|k| w[0] * gvq[k] / 2.0 + w[2] * gcq[k] / 2.0).collect();

            let support = tensor::<AD, 3>(&s, [ways, shots, DIM]).require_grad();
            let query = tensor::<AD, 2>(&q, [queries, DIM]).require_grad();
            let terms = vic_terms(support.clone(), query.clone(), w, &VicConfig::default());
            let got = terms.values();
            assert_close(
                &[got.variance, got.invariance, got.covariance, got.total],
                &[v, is, c, total],
                1e-5,
                "terms",
            );
            let grads = terms.total.backward();
            assert_close(&to_vec(support.grad(&grads).unwrap()), &grad_s, 1e-4, "support grad");
            assert_close(&to_vec(query.grad(&grads).unwrap()), &grad_q, 1e-4, "query grad");
        }
    }

    #[test]
    fn covariance_modes_give_the_same_terms() {
        let mut rng = Rng(14);
        let (s, q) = (rng.matrix(10, DIM), rng.matrix(60, DIM));
        let run = |covariance| {
            let config = VicConfig { covariance, ..VicConfig::default() };
            let t = vic_terms(
                tensor::<B, 3>(&s, [5, 2, DIM]),
                tensor::<B, 2>(&q, [60, DIM]),
                weights(1.0, 1.0, 1.0),
                &config,
            );
            t.values().covariance
        };
        let auto = run(crate::CovarianceMode::Auto);
        assert_close(
            &[run(crate::CovarianceMode::Gram), run(crate::CovarianceMode::Naive)],
            &[auto, auto],
            1e-5,
            "modes",
        );
    }

    #[test]
    fn bad_shapes_and_weights_are_typed_errors() {
        let config = VicConfig::default();
        let w = weights(1.0, 1.0, 1.0);
        let zeros3 = |shape: [usize; 3]| Tensor::<B, 3>::zeros(shape, &Default::default());
        let zeros2 = |shape: [usize; 2]| Tensor::<B, 2>::zeros(shape, &Default::default());
        let message =
            |r: Result<VicTerms<B>, VicError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let m = message(try_vic_terms(zeros3([5, 2, 40]), zeros2([10, 41]), w, &config));
        assert!(
            m.contains("[5, 2, 40]") && m.contains("[10, 41]") && m.contains("differ in d"),
            "{m}"
        );
        let m = message(try_vic_terms(zeros3([5, 0, 40]), zeros2([10, 40]), w, &config));
        assert!(m.contains("[N, K, d] = [5, 0, 40]"), "{m}");
        let m = message(try_vic_terms(zeros3([5, 1, 40]), zeros2([0, 40]), w, &config));
        assert!(m.contains("at least one query"), "{m}");
        let m = message(try_vic_terms(
            zeros3([5, 1, 40]),
            zeros2([3, 40]),
            weights(1.0, f64::NAN, 1.0),
            &config,
        ));
        assert!(m.contains("lambda_i"), "{m}");
        let bad = VicConfig { epsilon: -1.0, ..config };
        assert!(message(try_vic_terms(zeros3([5, 1, 40]), zeros2([3, 40]), w, &bad))
            .contains("epsilon"));
    }

    #[test]
    #[should_panic(expected = "differ in d")]
    fn vic_terms_panics_with_the_error_message_on_mismatched_shapes() {
        let device = Default::default();
        vic_terms(
            Tensor::<B, 3>::zeros([5, 2, 40], &device),
            Tensor::<B, 2>::zeros([10, 41], &device),
            [1.0; 3],
            &VicConfig::default(),
        );
    }

    /// One row per set (a 1-way 1-shot support set, a single query): every term is finite, the
    /// invariance and covariance are 0 and the variance is the constant hinge, with zero gradient.
    #[test]
    fn single_row_sets_give_finite_terms_and_zero_gradients() {
        let mut rng = Rng(17);
        let support = tensor::<AD, 3>(&rng.matrix(1, DIM), [1, 1, DIM]).require_grad();
        let query = tensor::<AD, 2>(&rng.matrix(1, DIM), [1, DIM]).require_grad();
        let terms = vic_terms(support.clone(), query.clone(), [1.0; 3], &VicConfig::default());
        let v = terms.values();
        let hinge = 1.0 - 1e-4f64.sqrt();
        assert_close(
            &[v.variance, v.invariance, v.covariance, v.total],
            &[hinge, 0.0, 0.0, hinge],
            1e-6,
            "one row",
        );
        let grads = terms.total.backward();
        for grad in [to_vec(support.grad(&grads).unwrap()), to_vec(query.grad(&grads).unwrap())] {
            assert!(grad.iter().all(|g| *g == 0.0), "{grad:?}");
        }
    }

    /// VIC is computed on live embeddings: adding it changes the backbone's gradients, by exactly
    /// the gradient of VIC alone.
    #[test]
    fn vic_changes_the_backbone_gradients() {
        let device = Default::default();
        let backbone: Linear<AD> = LinearConfig::new(8, DIM).init(&device);
        let images = tensor::<AD, 2>(&Rng(15).matrix(25, 8), [25, 8]);
        let grads_of = |with_task: bool, with_vic: bool| {
            let embeddings = backbone.forward(images.clone());
            let task = embeddings.clone().tanh().mean();
            let support = embeddings.clone().slice(0..10).reshape([5, 2, DIM]);
            let query = embeddings.slice(10..25);
            let vic =
                vic_terms(support, query, weights(1.0, 1.0, 1.0), &VicConfig::default()).total;
            let loss = match (with_task, with_vic) {
                (true, true) => task + vic,
                (true, false) => task,
                _ => vic,
            };
            let grads = loss.backward();
            to_vec(backbone.weight.val().grad(&grads).expect("the backbone gets a gradient"))
        };
        let (plain, with_vic, vic_only) =
            (grads_of(true, false), grads_of(true, true), grads_of(false, true));
        let change: Vec<f64> = with_vic.iter().zip(&plain).map(|(a, b)| a - b).collect();
        let norm = change.iter().map(|c| c * c).sum::<f64>().sqrt();
        assert!(norm > 1e-3, "VIC must change the backbone's gradient (change norm {norm})");
        assert_close(&change, &vic_only, 1e-4, "grad(task + VIC) − grad(task) = grad(VIC)");
    }

    /// f16 embeddings are widened before any reduction: the terms equal the f32 computation on the
    /// same (f16-rounded) values to f32 precision, stay close to the unrounded f32 ones, come back
    /// as f32, and the gradient flows back to the f16 input.
    #[test]
    fn f16_input_is_computed_in_f32() {
        let mut rng = Rng(16);
        let (s, q) = (rng.matrix(10, DIM), rng.matrix(60, DIM));
        let w = weights(1.0, 1.0, 1.0);
        let config = VicConfig::default();
        let support16 = tensor::<AD, 3>(&s, [5, 2, DIM]).cast(FloatDType::F16).require_grad();
        let query16 = tensor::<AD, 2>(&q, [60, DIM]).cast(FloatDType::F16).require_grad();
        let terms16 = vic_terms(support16.clone(), query16.clone(), w, &config);
        assert_eq!(terms16.total.dtype(), DType::F32);
        let rounded_s = to_vec(support16.clone().cast(FloatDType::F32));
        let rounded_q = to_vec(query16.clone().cast(FloatDType::F32));
        let on_rounded = vic_terms(
            tensor::<B, 3>(&rounded_s, [5, 2, DIM]),
            tensor::<B, 2>(&rounded_q, [60, DIM]),
            w,
            &config,
        );
        let exact =
            vic_terms(tensor::<B, 3>(&s, [5, 2, DIM]), tensor::<B, 2>(&q, [60, DIM]), w, &config);
        let as_vec = |v: VicValues| vec![v.variance, v.invariance, v.covariance, v.total];
        let got = as_vec(terms16.values());
        assert_close(
            &got,
            &as_vec(on_rounded.values()),
            1e-6,
            "f16 input vs f32 on the same values",
        );
        assert_close(&got, &as_vec(exact.values()), 2e-3, "f16 input vs f32 input");
        let grads = terms16.total.backward();
        let grad = support16.grad(&grads).expect("gradient reaches the f16 support");
        assert_eq!(grad.dtype(), DType::F16);
        assert!(to_vec(grad).iter().any(|g| *g != 0.0));
        assert!(query16.grad(&grads).is_some());
    }
}
