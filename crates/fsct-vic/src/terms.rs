//! The three VIC terms on live embeddings, and their weighted total.

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::VicConfig;
use crate::covariance::{bessel, covariance_term};
use crate::error::VicError;
use crate::precision::to_f32;
use crate::values::{VicValues, VicWeights};

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
    /// The weights used for `total`.
    pub weights: VicWeights,
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
            weights: self.weights,
        }
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_data().iter::<f64>().next().unwrap_or(f64::NAN)
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
/// I = 1/(N·K·d) · Σ_{n,k,j} (S[n,k,j] − mean_k' S[n,k',j])².
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
/// - invariance = I(support), see [`invariance_term`];
/// - covariance = (C(support rows) + C(query)) / 2, see
///   [`covariance_term`](crate::covariance_term); the form for each set comes from
///   `config.covariance` (Gram when rows < d under `auto`);
/// - total = λv·variance + λi·invariance + λc·covariance with `weights` as plain scalars.
///
/// Any float dtype is accepted; everything is computed and returned in f32.
///
/// # Shapes
/// - `support`: `[N, K, d]` (N ways, K shots), flattened to `[N·K, d]` for variance and covariance.
/// - `query`: `[Q, d]`.
/// - each output tensor: `[1]`.
///
/// # Errors
/// [`VicError::BadInput`] when a dimension is 0 or the two `d`s differ;
/// [`VicError::InvalidConfig`] when `config` or `weights` is invalid.
pub fn vic_terms<B: Backend>(
    support: Tensor<B, 3>,
    query: Tensor<B, 2>,
    weights: VicWeights,
    config: &VicConfig,
) -> Result<VicTerms<B>, VicError> {
    config.validate()?;
    for (field, value) in weights.named() {
        if !value.is_finite() || value < 0.0 {
            return Err(VicError::InvalidConfig {
                field,
                value: format!("{value}"),
                fix: "the running weights must be finite and >= 0; reset them from the config".into(),
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
        return Err(bad_input(format!("query embeddings have shape [Q, d] = [{queries}, {query_dim}]"), "pass at least one query"));
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
    let _span = tracing::debug_span!("vic_terms", ways, shots, queries, dim, ?support_form, ?query_form).entered();

    let support = to_f32(support);
    let query = to_f32(query);
    let flat = support.clone().reshape([support_rows, dim]);

    let variance = (variance_term(flat.clone(), config.gamma, config.epsilon)
        + variance_term(query.clone(), config.gamma, config.epsilon))
    .div_scalar(2.0);
    let invariance = invariance_term(support);
    let covariance = (covariance_term(flat, support_form) + covariance_term(query, query_form)).div_scalar(2.0);
    let total = variance.clone().mul_scalar(weights.variance)
        + invariance.clone().mul_scalar(weights.invariance)
        + covariance.clone().mul_scalar(weights.covariance);
    Ok(VicTerms { variance, invariance, covariance, total, weights })
}
