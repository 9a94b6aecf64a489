//! Linear layers applied to rows.

use burn::nn::Linear;
use burn::prelude::*;

/// `linear` over the last axis of `x`, with every leading axis folded into one.
///
/// Why: Burn 0.21's generic weight gradient of a linear layer on a `[a, b, d]` input computes
/// one `d × d_out` product per leading index `a` and then sums them (for the query rows of an
/// episode, 80 outer products of 1600 × 512). On `[a·b, d]` it is a single matrix product.
///
/// # Shapes
/// - `x`: `[..., d_in]`
/// - output: `[..., d_out]`
pub(crate) fn linear_rows<B: Backend, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if D <= 2 {
        return linear.forward(x);
    }
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let y = linear.forward(x.reshape([rows, dims[D - 1]]));
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}
