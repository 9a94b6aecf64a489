use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::config::AttentionVariant;
use crate::precision::layer_norm;
use crate::rows::linear_rows;
use fsct_precision::{to_dtype, to_f32};

/// LayerNorm followed by a bias-free projection: the reference's `input_linear` Sequential
/// (`input_linear.0` = `norm`, `input_linear.1` = `proj`).
#[derive(Module, Debug)]
pub struct PreNormLinear<B: Backend> {
    /// LayerNorm(d), eps 1e-5.
    pub norm: LayerNorm<B>,
    /// Linear(d → H·Dh), no bias.
    pub proj: Linear<B>,
}

/// FS-CT's attention (`ATTN`, spec §2.3): one projection shared by q, k and v.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Shared q/k/v projection.
    pub input_linear: PreNormLinear<B>,
    /// Linear(H·Dh → d) with bias.
    pub output_linear: Linear<B>,
    /// Number of heads H.
    #[module(skip)]
    pub heads: usize,
    /// Cosine or softmax.
    #[module(skip)]
    pub variant: AttentionVariant,
}

impl<B: Backend> Attention<B> {
    pub(crate) fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        variant: AttentionVariant,
        device: &B::Device,
    ) -> Self {
        let inner = heads * dim_head;
        Self {
            input_linear: PreNormLinear {
                norm: LayerNormConfig::new(dim).init(device),
                proj: LinearConfig::new(dim, inner).with_bias(false).init(device),
            },
            output_linear: LinearConfig::new(inner, dim).init(device),
            heads,
            variant,
        }
    }

    /// `[a, b, d]` → `[H, a, b, Dh]` through the shared projection.
    fn project(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [a, b, _] = x.dims();
        let y = linear_rows(&self.input_linear.proj, layer_norm(&self.input_linear.norm, x));
        y.reshape([a as i32, b as i32, self.heads as i32, -1]).permute([2, 0, 1, 3])
    }

    /// Attends from each (query, class) row to its query.
    ///
    /// Each pair gets the query's value vector, scaled per head by the cosine between the
    /// projected row and the projected query (cosine variant), or unscaled (softmax variant: the
    /// softmax runs over a single key, spec §2.3).
    ///
    /// # Shapes
    /// - `x`: `[1, N, d]` (prototypes) or `[Q, N, d]` (output of a previous block)
    /// - `query`: `[Q, 1, d]`
    /// - output: `[Q, N, d]`
    pub fn forward(&self, x: Tensor<B, 3>, query: Tensor<B, 3>) -> Tensor<B, 3> {
        let _span = tracing::trace_span!("fsct.attention").entered();
        let [q_count, _, _] = query.dims();
        let n_way = x.dims()[1];
        let u = self.project(x); // [H, 1|Q, N, Dh]
        let v = self.project(query); // [H, Q, 1, Dh]
        let dtype = v.dtype();
        let weights = match self.variant {
            AttentionVariant::Cosine => {
                // c[h,b,n] = <U,V> / (|U|·|V|), no epsilon, as the reference; in f32.
                let (u, v) = (to_f32(u), to_f32(v.clone()));
                let dots = u.clone().mul(v.clone()).sum_dim(3); // [H, Q, N, 1]
                let norms = u.square().sum_dim(3).sqrt().mul(v.square().sum_dim(3).sqrt());
                dots.div(norms)
            }
            AttentionVariant::Softmax => {
                let dim_head = v.dims()[3] as f64;
                let dots =
                    to_f32(u).mul(to_f32(v.clone())).sum_dim(3).mul_scalar(dim_head.powf(-0.5));
                // Softmax over the last axis, which has one element (the reference's shape).
                softmax(dots, 3)
            }
        };
        let out = to_dtype(weights, dtype).mul(v); // [H, Q, N, Dh]
        let [heads, _, _, dim_head] = out.dims();
        let out = out.permute([1, 2, 0, 3]).reshape([q_count, n_way, heads * dim_head]);
        linear_rows(&self.output_linear, out)
    }
}
