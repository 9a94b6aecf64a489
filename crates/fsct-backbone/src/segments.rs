//! Segment checkpointing: a backbone cut into consecutive segments keeps only each segment's
//! input during the forward pass; the backward pass runs each segment again, last first, and
//! back-propagates through it. Activation memory grows with the number of segments instead of
//! the number of layers.
//!
//! This is PyTorch's `torch.utils.checkpoint.checkpoint_sequential` (after Chen et al., 2016,
//! "Training Deep Nets with Sublinear Memory Cost"), on Burn's public autodiff API, generic over
//! the backend:
//!
//! 1. [`SegmentTape::forward`] runs every segment on a copy of the backbone whose parameters are
//!    detached from the graph, so no operation records anything to keep: only the segments'
//!    inputs are held. Batch norms still see an autodiff backend, so they normalise with batch
//!    statistics and update their running statistics, once, here.
//! 2. The caller runs the head on [`SegmentTape::output`], a leaf of a new graph, and calls
//!    `backward` on its loss: the head's gradients and the gradient of the backbone's output.
//! 3. [`SegmentTape::backward`] takes each segment from the last: it runs the segment again on
//!    the real (tracked) parameters from its kept input made a leaf, calls `backward` on
//!    `⟨y, g⟩` (whose gradient with respect to the segment's output `y` is exactly the incoming
//!    gradient `g`), hands the parameter gradients to the caller and passes the input's
//!    gradient on to the segment before. Recomputation does not update running statistics again.
//!
//! Each backward pass is a graph of its own, one after the other: Burn 0.21's autodiff cannot run
//! a backward pass from inside another one's (its graph cleanup locks every graph, the running
//! one included), which rules out a custom autodiff node that recomputes inside the outer
//! backward pass; and its checkpointing strategies can recompute only operations with a
//! retro-forward, which convolutions and matmuls do not have.
//!
//! The recomputed forward pass runs the same operations on the same values as the first one, so
//! gradients equal those without checkpointing (held to 1e-5 relative by the tests, fused CPU
//! tails and composed ops alike).
//!
//! What it costs and saves: one more forward pass of the backbone per step; the peak becomes the
//! larger of "every segment's input" (at the start of the backward pass) and "the largest
//! segment's own forward and backward pass" (usually the stem, whose output is the largest map).
//! The README's memory table has the measured rows.

use std::cell::Cell;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::backbone::Backbone;

/// Where segment checkpointing cuts a backbone ([`Backbone::segment_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentLevel {
    /// Every block: a Conv block; a ResNet's stem and each of its BasicBlocks.
    Blocks,
    /// Every stage: a ResNet's stem and each of its four stages (fewer inputs kept, a larger
    /// segment recomputed at a time). The Conv backbones have no stages: each block is one.
    Stages,
}

thread_local! {
    static RECOMPUTING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running a segment again for its backward pass: batch norms then leave
/// their running statistics alone (they were updated by the first forward pass).
pub(crate) fn recomputing() -> bool {
    RECOMPUTING.with(Cell::get)
}

/// Marks this thread as recomputing until dropped.
struct Recomputing {
    was: bool,
}

impl Recomputing {
    fn enter() -> Self {
        Self { was: RECOMPUTING.with(|r| r.replace(true)) }
    }
}

impl Drop for Recomputing {
    fn drop(&mut self) {
        RECOMPUTING.with(|r| r.set(self.was));
    }
}

/// Detaches every float parameter (and running statistic, which stays shared): a module copy
/// whose operations record nothing for a backward pass. (`detach` alone keeps a leaf's
/// `require_grad`, and with it the recording.)
struct Detach;

impl<B: Backend> ModuleMapper<B> for Detach {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(untracked)
    }
}

fn untracked<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    tensor.detach().set_require_grad(false)
}

/// Draws every lazily initialised parameter's value: a copy of a module made before that would
/// draw values of its own.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// The forward pass of a backbone under segment checkpointing: the input of every segment and
/// the output, a leaf for the head's graph.
#[derive(Debug)]
pub struct SegmentTape<B: AutodiffBackend> {
    level: SegmentLevel,
    /// The input of each segment, detached, in order; the backward pass pops them.
    inputs: Vec<Tensor<B, 4>>,
    output: Tensor<B, 4>,
}

impl<B: AutodiffBackend> SegmentTape<B> {
    /// Runs `backbone` on `images` keeping only the segments' inputs.
    ///
    /// # Shapes
    /// - `images`: `[n, channels, height, width]`
    /// - [`Self::output`]: as [`Backbone::features`] of `images`
    pub fn forward<F: Backbone<B>>(
        backbone: &F,
        level: SegmentLevel,
        images: Tensor<B, 4>,
    ) -> Self {
        let count = backbone.segment_count(level).max(1);
        backbone.visit(&mut Materialise);
        let detached = backbone.clone().map(&mut Detach);
        let mut inputs = Vec::with_capacity(count);
        let mut x = untracked(images);
        for index in 0..count {
            let _span = tracing::trace_span!("segment.forward", index).entered();
            inputs.push(x.clone());
            x = detached.forward_segment(level, index, x);
        }
        Self { level, inputs, output: x.require_grad() }
    }

    /// The backbone's output: a leaf that requires gradients, for the head.
    pub fn output(&self) -> Tensor<B, 4> {
        self.output.clone()
    }

    /// Takes the gradient of [`Self::output`] out of the head's gradients (`None` when the loss
    /// does not depend on the backbone's output).
    pub fn output_grad(&self, grads: &mut B::Gradients) -> Option<Tensor<B::InnerBackend, 4>> {
        self.output.grad_remove(grads)
    }

    /// The backward pass through the segments, last first, from `grad` (the gradient of
    /// [`Self::output`]): each segment runs again on `backbone`'s tracked parameters, and
    /// `on_segment` receives the gradients of its backward pass (take the parameters' gradients
    /// out of them). `backbone` must hold the parameters the forward pass ran with (the same
    /// module, or the same half-precision copy).
    ///
    /// The first segment's input (the images) gets no gradient, so the first segment must hold a
    /// trainable parameter (every built-in backbone does when it is trainable); a backbone with no
    /// trainable parameter needs no backward pass and no checkpointing.
    ///
    /// # Shapes
    /// - `grad`: as [`Self::output`]
    pub fn backward<F: Backbone<B>>(
        self,
        backbone: &F,
        grad: Tensor<B::InnerBackend, 4>,
        mut on_segment: impl FnMut(&mut B::Gradients),
    ) {
        let _recomputing = Recomputing::enter();
        // The head's graph is gone: the leaf is not needed any more.
        let Self { level, mut inputs, output } = self;
        drop(output);
        let mut grad = grad;
        for index in (0..inputs.len()).rev() {
            let _span = tracing::trace_span!("segment.backward", index).entered();
            let Some(input) = inputs.pop() else { break };
            let x = if index == 0 { input } else { input.require_grad() };
            let y = backbone.forward_segment(level, index, x.clone());
            let mut grads = seeded_backward(y, grad);
            on_segment(&mut grads);
            if index == 0 {
                break;
            }
            match x.grad_remove(&mut grads) {
                Some(g) => grad = g,
                None => break,
            }
        }
    }
}

/// The backward pass of `y`'s graph from `grad`, the gradient of some loss with respect to `y`:
/// the backward pass of the scalar `⟨y, g⟩`, whose gradient with respect to `y` is exactly `g`.
///
/// As a `[1, n]·[n, 1]` product rather than `(y ⊙ g).sum()`: its backward pass allocates one
/// map of `y`'s size (`1·gᵀ`), where the sum's would add a map of ones and the product's a third.
fn seeded_backward<B: AutodiffBackend>(
    y: Tensor<B, 4>,
    grad: Tensor<B::InnerBackend, 4>,
) -> B::Gradients {
    let n = y.shape().num_elements();
    let g = Tensor::<B, 4>::from_inner(grad).reshape([n, 1]);
    y.reshape([1, n]).matmul(g).backward()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackboneName, BlockOps};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<Flex>;

    /// Every parameter's gradient, in visiting order, as f64 vectors.
    struct CollectGrads<'a> {
        grads: &'a mut <A as AutodiffBackend>::Gradients,
        out: Vec<(String, Vec<f64>)>,
    }

    impl ModuleVisitor<A> for CollectGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            if let Some(g) = param.val().grad_remove(self.grads) {
                let values = g.into_data().convert::<f64>().into_vec::<f64>().unwrap();
                self.out.push((format!("{:?}", param.id), values));
            }
        }
    }

    struct Ids(Vec<String>);

    impl ModuleVisitor<A> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            self.0.push(format!("{:?}", param.id));
        }
    }

    fn running_stats<M: Module<A>>(module: &M) -> Vec<f64> {
        struct Running(Vec<f64>);
        impl ModuleVisitor<A> for Running {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let t = param.val();
                if !t.is_require_grad() {
                    self.0.extend(t.into_data().convert::<f64>().into_vec::<f64>().unwrap());
                }
            }
        }
        let mut r = Running(Vec::new());
        module.visit(&mut r);
        r.0
    }

    /// [`compare_segments`] with Flex running `ops` (its fused block tails, or the composed ops
    /// every other backend runs).
    fn compare(name: &str, level: SegmentLevel, side: usize, ops: BlockOps) {
        crate::with_block_ops(ops, || compare_segments(name, level, side));
    }

    /// The gradients of every parameter and of the loss `Σ features ⊙ w` without and with
    /// segment checkpointing, and the running statistics after each.
    fn compare_segments(name: &str, level: SegmentLevel, side: usize) {
        let device = Default::default();
        let build = || name.parse::<BackboneName>().unwrap().with_feti(true).init::<A>(&device);
        // The same weights, and running statistics of their own (a clone would share them).
        let plain = build();
        plain.visit(&mut Materialise); // a lazy parameter's clone would draw values of its own
        let checkpointed = build().load_record(plain.clone().into_record());
        let images =
            Tensor::<A, 4>::random([6, 3, side, side], Distribution::Normal(0., 1.), &device);
        let [c, h, w] = plain.feature_shape([3, side, side]);
        let weights = Tensor::<A, 4>::random([6, c, h, w], Distribution::Normal(0., 1.), &device);

        let features = plain.features(images.clone());
        let mut grads = features.clone().mul(weights.clone()).sum().backward();
        let mut expected = CollectGrads { grads: &mut grads, out: Vec::new() };
        plain.visit(&mut expected);

        let tape = SegmentTape::forward(&checkpointed, level, images.clone());
        tape.output()
            .to_data()
            .assert_approx_eq::<f32>(&features.to_data(), Tolerance::absolute(1e-5));
        assert_eq!(tape.inputs.len(), checkpointed.segment_count(level), "{name}");
        let mut head = tape.output().mul(weights).sum().backward();
        let g = tape.output_grad(&mut head).expect("the output is a leaf of the head's graph");
        let mut found = Vec::new();
        tape.backward(&checkpointed, g, |grads| {
            let mut collect = CollectGrads { grads, out: Vec::new() };
            checkpointed.visit(&mut collect);
            found.extend(collect.out);
        });

        assert_eq!(found.len(), expected.out.len(), "{name} {level:?}: every parameter once");
        // The two models' parameters have their own ids: match them by visiting order.
        let order = |model: &crate::BuiltinBackbone<A>| {
            let mut ids = Ids(Vec::new());
            model.visit(&mut ids);
            ids.0
        };
        let (plain_ids, checkpointed_ids) = (order(&plain), order(&checkpointed));
        for (id, want) in &expected.out {
            let position = plain_ids.iter().position(|i| i == id).unwrap();
            let twin = &checkpointed_ids[position];
            let got = &found.iter().find(|(i, _)| i == twin).expect("a gradient per parameter").1;
            let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(
                worst <= 1e-5 * scale,
                "{name} {level:?} {id} (#{position} of {}): {worst} vs scale {scale}",
                plain_ids.len()
            );
        }
        // Running statistics moved once (by the first forward pass), exactly as without.
        let (a, b) = (running_stats(&plain), running_stats(&checkpointed));
        assert!(!a.is_empty());
        TensorData::from(a.as_slice())
            .assert_approx_eq::<f64>(&TensorData::from(b.as_slice()), Tolerance::absolute(1e-6));
    }

    #[test]
    fn conv4_blocks_give_the_same_gradients_and_running_statistics() {
        compare("Conv4", SegmentLevel::Blocks, 28, BlockOps::Fused);
        compare("Conv6NP", SegmentLevel::Stages, 28, BlockOps::Composed);
    }

    #[test]
    fn resnet_blocks_and_stages_give_the_same_gradients_and_running_statistics() {
        compare("ResNet12", SegmentLevel::Blocks, 32, BlockOps::Fused);
        compare("ResNet18", SegmentLevel::Stages, 32, BlockOps::Fused);
        compare("ResNet12", SegmentLevel::Stages, 32, BlockOps::Composed);
        compare("ResNet18", SegmentLevel::Blocks, 32, BlockOps::Composed);
    }

    #[test]
    fn segment_counts() {
        let device = Default::default();
        let count = |name: &str, level| {
            name.parse::<BackboneName>().unwrap().init::<Flex>(&device).segment_count(level)
        };
        use SegmentLevel::{Blocks, Stages};
        assert_eq!(
            [count("Conv4", Blocks), count("Conv4", Stages), count("Conv6", Blocks)],
            [4, 4, 6]
        );
        // The stem, then 8 or 16 BasicBlocks, or 4 stages.
        assert_eq!([count("ResNet18", Blocks), count("ResNet34", Blocks)], [9, 17]);
        assert_eq!([count("ResNet12", Stages), count("ResNet34", Stages)], [5, 5]);
        assert_eq!(count("ResNet12", Blocks), 6);
    }

    #[test]
    fn segments_compose_to_the_features() {
        let device = Default::default();
        for name in ["Conv4", "Conv6NP", "Conv4S", "ResNet12", "ResNet18", "ResNet34"] {
            for feti in [true, false] {
                let net =
                    name.parse::<BackboneName>().unwrap().with_feti(feti).init::<Flex>(&device);
                let x = Tensor::<Flex, 4>::random([2, 3, 40, 40], Distribution::Default, &device);
                let want = net.features(x.clone());
                for level in [SegmentLevel::Blocks, SegmentLevel::Stages] {
                    let count = net.segment_count(level);
                    let got = (0..count).fold(x.clone(), |x, i| net.forward_segment(level, i, x));
                    want.to_data()
                        .assert_approx_eq::<f32>(&got.into_data(), Tolerance::absolute(1e-6));
                }
            }
        }
    }
}
