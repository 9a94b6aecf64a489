//! `pool?(relu(batch_norm(x)))` — the tail of every Conv* block — as one op on Flex: it keeps
//! the block's input and one byte per pooled output (none unpooled) instead of the batch-norm
//! intermediates, the ReLU output and the pool input.

use std::borrow::Cow;

use burn::nn::BatchNorm;
use burn::prelude::*;

use super::kernels::{self, Decisions, Dims, Pool, Record};
use super::op::{self, FusedTail};
use super::storage::Stored;

/// Runs the fused tail when `B` is a Flex backend and `x` a float map; hands `x` back otherwise.
///
/// # Shapes
/// - `x`: `[n, c, h, w]`
/// - output: `[n, c, h / 2, w / 2]` (floor) with [`Pool::Max2x2`], `[n, c, (h − 1) / 2 + 1,
///   (w − 1) / 2 + 1]` with [`Pool::Max3x3Stride2`], else `[n, c, h, w]`
pub(super) fn try_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    pool: Pool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    op::try_forward::<B, _, 1, 3>(BatchNormReluPool { pool }, bn, [x]).map_err(|[x]| x)
}

/// The op: parents `[x, gamma, beta]`.
#[derive(Clone, Copy, Debug)]
struct BatchNormReluPool {
    pool: Pool,
}

impl FusedTail<3> for BatchNormReluPool {
    fn output_dims(self, d: Dims) -> Dims {
        d.output(self.pool)
    }

    fn decisions(self) -> Decisions {
        match self.pool {
            Pool::Max2x2 => Decisions::PoolWindows,
            Pool::Max3x3Stride2 => Decisions::PoolWindows3x3,
            Pool::Off => Decisions::RecomputedRelu,
        }
    }

    fn forward<E: Stored>(
        self,
        maps: &[Cow<'_, [E]>],
        d: Dims,
        scale: &[f32],
        shift: &[f32],
        record: Record,
    ) -> (Vec<E>, Vec<u8>) {
        kernels::forward(&maps[0], d, scale, shift, self.pool, record)
    }

    fn backward_span(self) -> tracing::Span {
        tracing::trace_span!("batch_norm_relu_pool_backward")
    }
}
