//! `relu(batch_norm(x) + residual)` — the end of a ResNet BasicBlock — as one op on Flex: it
//! keeps `x` and a one-byte ReLU mask instead of the batch-norm intermediates and the sum.

use std::borrow::Cow;

use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::NodeId;
use burn::backend::Flex;
use burn::nn::BatchNorm;
use burn::prelude::*;

use super::kernels::{self, Decisions, Dims, Record, Saved};
use super::op::{self, FusedTail};
use super::storage::{flex_tensor, Stored};

/// Runs the fused residual tail when `B` is a Flex backend and both maps are float maps of one
/// dtype and shape; hands them back otherwise.
///
/// # Shapes
/// - `x`, `residual`: `[n, c, h, w]`
/// - output: `[n, c, h, w]`
pub(super) fn try_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>)> {
    op::try_forward::<B, _, 2, 4>(BatchNormAddRelu, bn, [x, residual])
        .map_err(|[x, residual]| (x, residual))
}

/// The op: parents `[x, residual, gamma, beta]`.
#[derive(Clone, Copy, Debug)]
struct BatchNormAddRelu;

impl FusedTail<4> for BatchNormAddRelu {
    fn output_dims(self, d: Dims) -> Dims {
        d
    }

    fn decisions(self) -> Decisions {
        Decisions::ReluMask
    }

    fn forward<E: Stored>(
        self,
        maps: &[Cow<'_, [E]>],
        d: Dims,
        scale: &[f32],
        shift: &[f32],
        record: Record,
    ) -> (Vec<E>, Vec<u8>) {
        kernels::forward_residual(&maps[0], &maps[1], d, scale, shift, record)
    }

    fn backward_span(self) -> tracing::Span {
        tracing::trace_span!("batch_norm_add_relu_backward")
    }

    /// The residual's gradient: the output gradient where the ReLU passed (the saved mask).
    fn register_map_gradients<E: Stored>(
        self,
        grad: &[E],
        saved: &Saved,
        parents: &[Option<NodeId>],
        grads: &mut Gradients,
    ) {
        if let [Some(residual)] = parents {
            let dr = kernels::residual_gradient(grad, &saved.codes);
            grads.register::<Flex>(*residual, flex_tensor(dr, saved.dims));
        }
    }
}
