//! The measured part of the prediction: what the model's own forward and backward passes hold,
//! counted by [`crate::alloc_count`] on the CPU (Flex) at the config's true image size, on a few
//! images, through the code the training step runs (the half copy, segment checkpointing, the
//! head's loss and VIC, AdamW).
//!
//! Four measurements, each on a model built from the config:
//! - the backbone on `n₁` and `n₂` images: what its forward pass keeps for the backward pass
//!   (under the config's checkpointing), its forward peak, and its backward peak (from a gradient
//!   of the features' shape, as the head hands it back; parameter gradients included). Every
//!   activation has the images as its leading dimension, so these are straight lines in the image
//!   count, fitted through the two points;
//! - the head (FS-CT or CTX, loss, VIC) on feature maps of the episode's shape, at the config's
//!   `n_query` and at one query per class (a line in `n_query`, for the planner's smaller-query
//!   advice);
//! - AdamW's update (with the loss scaler's unscaling under mixed precision), in its steady state
//!   (the second update: the first creates the moments);
//! - an evaluation episode: the backbone and the head without autodiff.

use burn::backend::Flex;
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType};
use fsct_backbone::{Backbone, SegmentLevel, SegmentTape};
use fsct_transformer::{episode_accuracy, episode_loss, FewShotModel, ModelError};

use super::components::{count_params, feature_dim, ParamCounts};
use crate::alloc_count::{current, peak, reset_peak};
use crate::config::Config;
use crate::model::{build_model, AnyModel};
use crate::precision::{half_copy, LossScaler};
use crate::step::{new_optimizer, new_trainer_state, CollectGradients};

/// `y = at0 + per · x`, through two measured points.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Line {
    /// The value at x = 0.
    pub at0: f64,
    /// The slope.
    pub per: f64,
}

impl Line {
    /// The line through `(x1, y1)` and `(x2, y2)` (a constant when `x1 == x2`).
    pub fn through(x1: usize, y1: u64, x2: usize, y2: u64) -> Self {
        if x1 == x2 {
            return Self { at0: y1.max(y2) as f64, per: 0.0 };
        }
        let per = (y2 as f64 - y1 as f64) / (x2 as f64 - x1 as f64);
        Self { at0: y1 as f64 - per * x1 as f64, per }
    }

    /// The value at `x` (never below 0).
    pub fn at(&self, x: usize) -> u64 {
        (self.at0 + self.per * x as f64).max(0.0).round() as u64
    }
}

/// What the backbone holds, as lines in the number of images.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackboneLines {
    /// Bytes its forward pass keeps (saved activations and the features).
    pub kept: Line,
    /// Peak above the start during the forward pass.
    pub forward_peak: Line,
    /// Peak above the start during the backward pass (kept activations not yet freed, activation
    /// and parameter gradients, temporaries).
    pub backward_peak: Line,
}

/// What the head holds, as lines in `n_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadLines {
    /// Bytes its forward pass (with the loss and VIC) keeps for the backward pass.
    pub kept: Line,
    /// Peak above the start over its forward and backward passes (the features' gradient and
    /// the head's parameter gradients included).
    pub peak: Line,
}

/// Everything measured for one config.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The image counts the backbone was measured at.
    pub samples: (usize, usize),
    /// Training: the backbone.
    pub backbone: BackboneLines,
    /// Training: the head.
    pub head: HeadLines,
    /// Bytes of the mixed-precision half copy of the model (0 without one).
    pub half_copy: u64,
    /// Peak above the step's start during AdamW's update, the gradients included.
    pub optimizer_peak: u64,
    /// Evaluation: the backbone's peak (features included) without autodiff, per image count.
    pub eval_backbone: Line,
    /// Evaluation: the head's peak without autodiff, in `n_query`.
    pub eval_head: Line,
    /// Activations one image keeps in each backbone block without checkpointing (tracked
    /// forward, block by block): `(name, bytes per image)`.
    pub blocks: Vec<(String, u64)>,
    /// The built model's parameter counts.
    pub counts: ParamCounts,
    /// The feature dimension `d = c·h·w`.
    pub feature_dim: usize,
}

/// Bytes of a tensor of `numel` elements of `dtype`.
pub fn bytes_of(numel: usize, dtype: FloatDType) -> u64 {
    let size = match dtype {
        FloatDType::F64 => 8,
        FloatDType::F32 | FloatDType::Flex32 => 4,
        FloatDType::F16 | FloatDType::BF16 => 2,
    };
    (numel * size) as u64
}

fn above(start: usize, at: usize) -> u64 {
    at.saturating_sub(start) as u64
}

/// A zero gradient for every trained parameter (the optimizer's input, as after a backward pass).
struct ZeroGradients<'a> {
    into: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ZeroGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.into.register::<B::InnerBackend, D>(param.id, value.inner().zeros_like());
        }
    }
}

/// A model and the dtype the step computes in (mixed precision: a fresh half copy per pass, as
/// each step makes one: a copy's casts link it to the master model for one backward pass only).
struct Runner<B: AutodiffBackend> {
    model: AnyModel<B>,
    dtype: Option<FloatDType>,
}

impl<B: AutodiffBackend> Runner<B> {
    fn new(config: &Config, device: &B::Device) -> Result<(Self, u64), ModelError> {
        B::seed(device, config.run.seed);
        let model = build_model::<B>(config, device)?;
        let dtype = config.memory.precision.compute_copy();
        let before = current();
        let half = dtype.map(|d| half_copy(&model, d));
        let half_bytes = above(before, current());
        drop(half);
        Ok((Self { model, dtype }, half_bytes))
    }

    /// The model the step runs: a new half copy under mixed precision, else the model.
    fn runner(&self) -> AnyModel<B> {
        match self.dtype {
            Some(d) => half_copy(&self.model, d),
            None => self.model.clone(),
        }
    }

    fn cast<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.dtype {
            Some(d) => x.cast(d),
            None => x,
        }
    }
}

/// Backbone forward + backward on `n` random images: (kept, forward peak, backward peak).
fn backbone_once<B: AutodiffBackend>(
    config: &Config,
    run: &Runner<B>,
    n: usize,
    device: &B::Device,
) -> (u64, u64, u64) {
    let side = config.image_size();
    let images = run.cast(Tensor::<B, 4>::random(
        [n, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        device,
    ));
    let trains = run.model.trains_backbone();
    let segments = config.memory.gradient_checkpoint.segments().filter(|_| trains);
    let runner = run.runner();
    let backbone = runner.backbone();
    let start = reset_peak();
    let (out, tape) = match segments {
        Some(level) => {
            let tape = SegmentTape::forward(backbone, level, images);
            (tape.output(), Some(tape))
        }
        None => (backbone.features(images), None),
    };
    let forward_peak = above(start, peak());
    let kept = above(start, current());
    if !trains {
        return (kept, forward_peak, kept);
    }
    // The head hands back a gradient of the features' shape.
    let grad = run.cast(Tensor::<B, 4>::random(out.dims(), Distribution::Normal(0.0, 1.0), device));
    let mut raw = out.mul(grad).sum().backward();
    let mut grads = GradientsParams::new();
    if let Some(tape) = tape {
        if let Some(g) = tape.output_grad(&mut raw) {
            drop(raw);
            tape.backward(backbone, g, |segment| {
                run.model.visit(&mut CollectGradients { grads: segment, into: &mut grads });
            });
        }
    } else {
        grads = GradientsParams::from_grads(raw, &run.model);
    }
    let backward_peak = above(start, peak());
    drop(grads);
    (kept, forward_peak, backward_peak)
}

/// Head forward (loss, VIC) + backward on feature maps of an episode with `n_query` queries:
/// (kept, peak).
fn head_once<B: AutodiffBackend>(
    config: &Config,
    run: &Runner<B>,
    n_query: usize,
    device: &B::Device,
) -> (u64, u64) {
    let e = &config.episodes;
    let per_class = e.k_shot + n_query;
    let side = config.image_size();
    let [c, h, w] = run.model.backbone().feature_shape([3, side, side]);
    let maps = run.cast(Tensor::<B, 4>::random(
        [e.n_way * per_class, c, h, w],
        Distribution::Normal(0.0, 1.0),
        device,
    ));
    let maps = if run.model.trains_backbone() { maps.require_grad() } else { maps };
    let state = new_trainer_state(config);
    let runner = run.runner();
    let start = reset_peak();
    let out = runner.forward_maps(maps.clone(), e.n_way, per_class);
    let ce = episode_loss(out.scores.clone(), n_query);
    let loss = match state.vic.as_ref() {
        Some(vic) => {
            let terms = fsct_vic::vic_terms(out.support, out.query, vic.lambdas(), &config.vic);
            ce.add(terms.total)
        }
        None => ce,
    };
    let _ = episode_accuracy(out.scores, n_query);
    let kept = above(start, current());
    let scaled = if state.scaler.is_some() { loss.mul_scalar(1.0) } else { loss };
    let mut raw = scaled.backward();
    let maps_grad = maps.grad_remove(&mut raw);
    let grads = GradientsParams::from_grads(raw, &run.model);
    let head_peak = above(start, peak());
    drop((grads, maps_grad));
    (kept, head_peak)
}

/// AdamW's steady-state update: the peak above the step's start, the gradients included.
fn optimizer_once<B: AutodiffBackend>(
    config: &Config,
    device: &B::Device,
) -> Result<u64, ModelError> {
    B::seed(device, config.run.seed);
    let mut model = build_model::<B>(config, device)?;
    let mut optim = new_optimizer::<B>(config);
    let mut scaler = config.memory.precision.loss_scaling().then(|| LossScaler::new(1.0, 1 << 20));
    let mut measured = 0;
    for step in 0..2 {
        let start = reset_peak();
        let mut grads = GradientsParams::new();
        model.visit(&mut ZeroGradients { into: &mut grads });
        if let Some(scaler) = scaler.as_mut() {
            scaler.unscale(&model, &mut grads);
        }
        model = optim.step(config.optim.learning_rate, model, grads);
        if step == 1 {
            measured = above(start, peak());
        }
    }
    Ok(measured)
}

/// Activations per image kept by each backbone block of a tracked forward pass (no
/// checkpointing), the compute dtype's.
fn blocks_once<B: AutodiffBackend>(
    config: &Config,
    run: &Runner<B>,
    device: &B::Device,
) -> Vec<(String, u64)> {
    let side = config.image_size();
    let runner = run.runner();
    let backbone = runner.backbone();
    let level = SegmentLevel::Blocks;
    let count = backbone.segment_count(level).max(1);
    let mut x = run.cast(Tensor::<B, 4>::random(
        [1, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        device,
    ));
    let mut out = Vec::with_capacity(count);
    let mut held = Vec::with_capacity(count);
    for index in 0..count {
        let before = current();
        x = backbone.forward_segment(level, index, x);
        held.push(x.clone());
        out.push((format!("block {}", index + 1), above(before, current())));
    }
    out
}

/// Evaluation (no autodiff, the master model): the backbone's peak on `n` images.
fn eval_backbone_once(config: &Config, model: &AnyModel<Flex>, n: usize) -> u64 {
    let side = config.image_size();
    let device = Default::default();
    let images =
        Tensor::<Flex, 4>::random([n, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
    let start = reset_peak();
    let out = model.backbone().features(images);
    let p = above(start, peak());
    drop(out);
    p
}

/// Evaluation: the head's peak on feature maps of an episode with `n_query` queries.
fn eval_head_once(config: &Config, model: &AnyModel<Flex>, n_query: usize) -> u64 {
    let e = &config.episodes;
    let per_class = e.k_shot + n_query;
    let side = config.image_size();
    let device = Default::default();
    let [c, h, w] = model.backbone().feature_shape([3, side, side]);
    let maps = Tensor::<Flex, 4>::random(
        [e.n_way * per_class, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let start = reset_peak();
    let out = model.forward_maps(maps, e.n_way, per_class);
    let _ = episode_accuracy(out.scores, n_query);
    above(start, peak())
}

/// The image counts the backbone is measured at for an episode of `n` images: half of them and
/// all of them (the config's own figure is measured; the line through both serves the
/// smaller-`n_query` advice). When `quick`, `k` and `2k` images, `k` the images whose kept
/// activations weigh as much as the backbone's parameter gradients (`per_image` and
/// `gradients` bytes), extended along the line: at fewer images the gradients, alive at the end
/// of the backward pass, hide where the activations peak, and the line would miss it.
pub fn sample_counts(n: usize, quick: bool, per_image: u64, gradients: u64) -> (usize, usize) {
    if n < 2 {
        return (1, 2);
    }
    if quick {
        let k = (gradients as f64 / per_image.max(1) as f64).ceil() as usize;
        let k = k.clamp(1, (n / 2).max(1));
        return (k, (2 * k).min(n).max(k + 1));
    }
    ((n / 2).max(1), n)
}

/// Measures `config` on `Autodiff<Flex>`-like backend `B` (the config's checkpointing strategy
/// picks it).
pub fn measure_on<B: AutodiffBackend>(
    config: &Config,
    quick: bool,
    device: &B::Device,
) -> Result<Measured, ModelError> {
    let e = &config.episodes;
    let n = e.n_way * (e.k_shot + e.n_query);
    let (run, half_copy) = Runner::<B>::new(config, device)?;
    let counts = count_params(&run.model);
    let dim = feature_dim(config, &run.model);
    let _ = backbone_once(config, &run, 1, device);
    let blocks = blocks_once(config, &run, device);
    let per_image: u64 = blocks.iter().map(|(_, bytes)| bytes).sum();
    let master = config.memory.precision.master_dtype();
    let samples = sample_counts(n, quick, per_image, bytes_of(counts.backbone_trained, master));
    // A first pass makes the process's one-time buffers (thread pools, kernels' caches), which
    // must not count as the first point's.
    let _ = backbone_once(config, &run, samples.0, device);
    let _ = head_once(config, &run, 1, device);
    let (k1, f1, b1) = backbone_once(config, &run, samples.0, device);
    let (k2, f2, b2) = backbone_once(config, &run, samples.1, device);
    let backbone = BackboneLines {
        kept: Line::through(samples.0, k1, samples.1, k2),
        forward_peak: Line::through(samples.0, f1, samples.1, f2),
        backward_peak: Line::through(samples.0, b1, samples.1, b2),
    };
    let (hk, hp) = head_once(config, &run, e.n_query, device);
    let (hk1, hp1) = if e.n_query > 1 { head_once(config, &run, 1, device) } else { (hk, hp) };
    let head = HeadLines {
        kept: Line::through(1, hk1, e.n_query, hk),
        peak: Line::through(1, hp1, e.n_query, hp),
    };
    drop(run);
    let optimizer_peak = optimizer_once::<B>(config, device)?;
    let flex = Default::default();
    Flex::seed(&flex, config.run.seed);
    let eval_model = build_model::<Flex>(config, &flex)?;
    let eval_backbone = Line::through(
        samples.0,
        eval_backbone_once(config, &eval_model, samples.0),
        samples.1,
        eval_backbone_once(config, &eval_model, samples.1),
    );
    let eq = eval_head_once(config, &eval_model, e.n_query);
    let eq1 = if e.n_query > 1 { eval_head_once(config, &eval_model, 1) } else { eq };
    let eval_head = Line::through(1, eq1, e.n_query, eq);
    Ok(Measured {
        samples,
        backbone,
        head,
        half_copy,
        optimizer_peak,
        eval_backbone,
        eval_head,
        blocks,
        counts,
        feature_dim: dim,
    })
}
