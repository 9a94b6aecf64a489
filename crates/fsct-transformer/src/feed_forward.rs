use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::precision::layer_norm;
use crate::rows::linear_rows;

/// The reference's `FFN` Sequential: LayerNorm → Linear(d→F) → GELU (exact, erf) → Linear(F→d).
/// Reference keys `FFN.0`, `FFN.1`, `FFN.3` map to `norm`, `fc1`, `fc2`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// LayerNorm(d).
    pub norm: LayerNorm<B>,
    /// Linear(d → mlp_dim).
    pub fc1: Linear<B>,
    /// Linear(mlp_dim → d).
    pub fc2: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub(crate) fn new(dim: usize, mlp_dim: usize, device: &B::Device) -> Self {
        Self {
            norm: LayerNormConfig::new(dim).init(device),
            fc1: LinearConfig::new(dim, mlp_dim).init(device),
            fc2: LinearConfig::new(mlp_dim, dim).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[..., d]`
    /// - output: `[..., d]` (without the residual)
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let _span = tracing::trace_span!("fsct.ffn").entered();
        linear_rows(&self.fc2, gelu(linear_rows(&self.fc1, layer_norm(&self.norm, x))))
    }
}
