use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::config::AttentionVariant;
use crate::precision::layer_norm;
use crate::rows::linear_rows;
use fsct_precision::{to_dtype, to_f32};

/// The reference's `CosineDistLinear(64, 1)` (spec §2.5): a weight-normed `Linear(64, 1)`
/// without bias, `w = g·v/‖v‖` (`torch.nn.utils.weight_norm`, dim 0), kept as the two
/// parameters the reference trains.
///
/// Its input is normalised along the **class axis** (dim 1 of `[Q, N, 64]`), not the feature
/// axis — a quirk of the reference that a faithful port keeps — then scored as `2·⟨w, ỹ⟩`.
///
/// Why two parameters and not the folded `w`: the forward function is the same, but AdamW
/// updates each parameter by its own normalised gradient, so (g, v) and w follow different
/// trajectories from the second step on (the training-trace fixture of
/// `crates/fsct-train/tests/trace.rs` shows a folded head drifting by 1e-3 in loss within ten
/// steps). Import and export map `linear.2.L.weight_g` / `weight_v` one to one.
#[derive(Module, Debug)]
pub struct CosineDistLinear<B: Backend> {
    /// The gain g, `[1]` (the reference's `weight_g`, `[1, 1]`).
    pub weight_g: Param<Tensor<B, 1>>,
    /// The direction v, `[in_features]` (the reference's `weight_v`, `[1, in_features]`).
    pub weight_v: Param<Tensor<B, 1>>,
}

impl<B: Backend> CosineDistLinear<B> {
    /// Scale of the reference for an output dimension ≤ 200.
    pub const SCALE: f64 = 2.0;
    /// Added to the class-axis norm.
    pub const EPS: f64 = 1e-5;

    fn new(in_features: usize, device: &B::Device) -> Self {
        // PyTorch's default Linear init for v; weight norm starts at g = ‖v‖, so w = v. g depends
        // on v's values, so both are drawn now rather than lazily.
        let bound = 1.0 / (in_features as f64).sqrt();
        let v = Tensor::<B, 1>::random(
            [in_features],
            burn::tensor::Distribution::Uniform(-bound, bound),
            device,
        );
        let g = v.clone().square().sum().sqrt();
        Self { weight_g: Param::from_tensor(g), weight_v: Param::from_tensor(v) }
    }

    /// The effective weight `g·v/‖v‖` in f32, `[in_features]`.
    pub fn weight(&self) -> Tensor<B, 1> {
        let v = to_f32(self.weight_v.val());
        let g = to_f32(self.weight_g.val());
        let norm = v.clone().square().sum().sqrt();
        v.mul(g.div(norm))
    }

    /// # Shapes
    /// - `y`: `[Q, N, in_features]`
    /// - output: `[Q, N]`
    pub fn forward(&self, y: Tensor<B, 3>) -> Tensor<B, 2> {
        let dtype = y.dtype();
        let y = to_f32(y);
        let norm = y.clone().square().sum_dim(1).sqrt().add_scalar(Self::EPS); // [Q, 1, 64]
        let y = y.div(norm);
        let [q, n, c] = y.dims();
        let w = self.weight().reshape([1, 1, c]);
        let scores = y.mul(w).sum_dim(2).mul_scalar(Self::SCALE).reshape([q, n]);
        to_dtype(scores, dtype)
    }
}

/// The last layer of the output head: cosine (FS-CT cosine) or a plain linear (FS-CT softmax).
#[derive(Module, Debug)]
pub enum HeadLast<B: Backend> {
    /// `linear.2.L.weight_{g,v}` in the reference.
    Cosine(CosineDistLinear<B>),
    /// `linear.2.{weight,bias}` in the reference.
    Linear(Linear<B>),
}

/// The reference's `linear` Sequential: LayerNorm(d) → Linear(d → Dh) → [`HeadLast`]
/// (`linear.0`, `linear.1`, `linear.2` map to `norm`, `fc`, `last`).
#[derive(Module, Debug)]
pub struct OutputHead<B: Backend> {
    /// LayerNorm(d).
    pub norm: LayerNorm<B>,
    /// Linear(d → dim_head) with bias.
    pub fc: Linear<B>,
    /// The scoring layer.
    pub last: HeadLast<B>,
}

impl<B: Backend> OutputHead<B> {
    pub(crate) fn new(
        dim: usize,
        dim_head: usize,
        variant: AttentionVariant,
        device: &B::Device,
    ) -> Self {
        let last = match variant {
            AttentionVariant::Cosine => HeadLast::Cosine(CosineDistLinear::new(dim_head, device)),
            AttentionVariant::Softmax => {
                HeadLast::Linear(LinearConfig::new(dim_head, 1).init(device))
            }
        };
        Self {
            norm: LayerNormConfig::new(dim).init(device),
            fc: LinearConfig::new(dim, dim_head).init(device),
            last,
        }
    }

    /// # Shapes
    /// - `x`: `[Q, N, d]`
    /// - output: `[Q, N]` scores
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let _span = tracing::trace_span!("fsct.head").entered();
        let y = linear_rows(&self.fc, layer_norm(&self.norm, x));
        match &self.last {
            HeadLast::Cosine(cos) => cos.forward(y),
            HeadLast::Linear(linear) => {
                let [q, n, _] = y.dims();
                linear_rows(linear, y).reshape([q, n])
            }
        }
    }
}
