//! One training step, exactly as the trainer takes it: forward (in half precision under mixed
//! precision), FS-CT/CTX loss plus VIC, loss scaling, backward, the scheduled learning rate and
//! the optimizer's update ([`crate::optim`]), VIC statistics, periodic memory cleanup. Public so that benches and researchers time and measure the code users run.

use anyhow::Result;
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use fsct_backbone::SegmentTape;
use fsct_transformer::{episode_accuracy, episode_loss, EpisodeForward, FewShotModel};
use fsct_vic::VicValues;

use crate::checkpoint::TrainerState;
use crate::config::Config;
use crate::model::AnyModel;
use crate::precision::{half_copy, LossScaler};

/// Moves the gradients of a module's parameters out of one backward pass's gradients into
/// `into` (what `GradientsParams::from_grads` does, adding to gradients already collected).
pub(crate) struct CollectGradients<'a, B: AutodiffBackend> {
    pub(crate) grads: &'a mut B::Gradients,
    pub(crate) into: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad_remove(self.grads) {
            self.into.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

pub use crate::optim::Optim;

/// What one step did, as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The unscaled loss (classification loss plus VIC's total when VIC is on).
    pub loss: f64,
    /// Query accuracy in [0, 1].
    pub accuracy: f64,
    /// The VIC terms of the step, when VIC is on.
    pub vic: Option<VicValues>,
    /// `false` when mixed precision's loss scaler skipped the update (inf/NaN gradients).
    pub applied: bool,
    /// The learning rate of the step (`optim.schedule` at this step; a skipped step has one too).
    pub learning_rate: f64,
}

/// Pure f16 (`memory.precision = "f16"`) keeps AdamW's (and Adam's) moments in f16, which cannot hold them as
/// they are: ε = 1e-8 rounds to 0, and (1 − β₂)·g² underflows for |g| below about 8e-3, so the
/// update m̂ / (√v̂ + ε) became m̂ / 0 = ±inf after the first step. AdamW's update does not depend
/// on the gradients' scale (only ε's relative size does), so the loss scaler hands it the
/// gradients multiplied by this factor, with [`HALF_ADAM_EPSILON`]: the same update as AdamW on
/// the true gradients with ε = 2⁻⁷ / 32 ≈ 2.4e-4, and every moment within f16's range for
/// |g| ≤ 8 (a larger gradient skips its update at the first step; at 250 its v̂ overflows).
pub const HALF_ADAM_GRADIENT_SCALE: f64 = 32.0;

/// AdamW's and Adam's ε under pure f16, at [`HALF_ADAM_GRADIENT_SCALE`]'s scale (a normal f16 value, above
/// the √v̂ of any gradient whose v̂ underflows).
pub const HALF_ADAM_EPSILON: f64 = 1.0 / 128.0;

/// Whether the optimizer's state is f16 (pure f16: the master dtype is f16), which needs
/// [`HALF_ADAM_GRADIENT_SCALE`] and [`HALF_ADAM_EPSILON`] for Adam and AdamW (see
/// [`crate::optim`] for SGD). (bf16 has f32's range: not needed.)
fn f16_optimizer_state(config: &Config) -> bool {
    config.memory.precision.master_dtype() == FloatDType::F16
}

/// The optimizer, gradient clipping and learning rate schedule `config.optim` asks for, with
/// PyTorch's ε for the Adams (under pure f16, [`HALF_ADAM_EPSILON`]): [`Optim::new`].
pub fn new_optimizer<B: AutodiffBackend>(config: &Config) -> Optim<B> {
    Optim::new(config)
}

/// The state of a run that has not taken a step yet.
pub fn new_trainer_state(config: &Config) -> TrainerState {
    TrainerState {
        epochs_done: 0,
        best_val_acc: 0.0,
        best_epoch: None,
        steps: 0,
        vic: config.model.use_vic.then(|| fsct_vic::VicState::new(&config.vic)),
        scaler: config.memory.precision.loss_scaling().then(|| {
            LossScaler::new(config.memory.loss_scale, config.memory.loss_scale_growth_interval)
        }),
    }
}

/// One training step on episode `x` (`[N, K+M, C, H, W]`, already on `device`). Returns the
/// updated model.
///
/// # Errors
/// An episode whose shape does not fit the model. A non-finite loss is reported in the outcome,
/// not as an error: under mixed precision the scaler has already skipped the update, and without
/// it the caller decides (the trainer stops with advice).
pub fn train_step<B: AutodiffBackend>(
    config: &Config,
    model: AnyModel<B>,
    optim: &mut Optim<B>,
    state: &mut TrainerState,
    x: Tensor<B, 5>,
    device: &B::Device,
) -> Result<(AnyModel<B>, StepOutcome)> {
    train_step_observed(config, model, optim, state, x, device, &mut |_| {})
}

/// Where [`train_step_observed`] calls its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPoint {
    /// The loss exists and the backward pass has not started: every activation the backward pass
    /// needs is alive (Burn frees them as the backward pass consumes the graph).
    BeforeBackward,
    /// The gradients exist and the optimizer has not consumed them.
    AfterBackward,
}

/// As [`train_step`], calling `observe` at each [`StepPoint`]. A GPU's memory usage (cubecl has no
/// peak counter) must be sampled there to come near the step's peak: before the backward pass for
/// the activations, after it for the gradients.
pub fn train_step_observed<B: AutodiffBackend>(
    config: &Config,
    model: AnyModel<B>,
    optim: &mut Optim<B>,
    state: &mut TrainerState,
    x: Tensor<B, 5>,
    device: &B::Device,
    observe: &mut dyn FnMut(StepPoint),
) -> Result<(AnyModel<B>, StepOutcome)> {
    let StepGradients { grads, loss, accuracy, vic_terms } =
        step_gradients(config, &model, state, x, observe)?;
    let (model, applied, learning_rate) = apply_gradients(config, model, optim, state, grads);
    let vic = match (state.vic.as_mut(), vic_terms) {
        (Some(vic), Some(terms)) => Some(vic.update(&terms, &config.vic)),
        _ => None,
    };
    finish_step::<B>(config, state, device);
    Ok((model, StepOutcome { loss, accuracy, vic, applied, learning_rate }))
}

/// The update of a step from its (loss-scaled) gradients: unscaling and the overflow check under
/// loss scaling (no update when a gradient is not finite), then the optimizer at the schedule's
/// rate for this step. Returns the model, whether the update was applied, and the rate. Shared by [`train_step_observed`] and the data-parallel
/// step (`crate::parallel`), which hands it the gradients averaged over every peer's episodes.
pub(crate) fn apply_gradients<B: AutodiffBackend>(
    config: &Config,
    model: AnyModel<B>,
    optim: &mut Optim<B>,
    state: &mut TrainerState,
    mut grads: GradientsParams,
) -> (AnyModel<B>, bool, f64) {
    let applied = match state.scaler.as_mut() {
        Some(scaler) if f16_optimizer_state(config) => {
            scaler.unscale_to(&model, &mut grads, optim.half_gradient_scale())
        }
        Some(scaler) => scaler.unscale(&model, &mut grads),
        None => true,
    };
    // The schedule's rate for this step (its position is the state's step count, so a resumed
    // run continues it exactly); a skipped step still uses up its rate.
    let learning_rate = optim.learning_rate_for_step(state.steps);
    let model = if applied { optim.step(learning_rate, model, grads) } else { model };
    (model, applied, learning_rate)
}

/// The end of every step: counts it, and frees cached memory every `memory.cleanup_every` steps.
pub(crate) fn finish_step<B: AutodiffBackend>(
    config: &Config,
    state: &mut TrainerState,
    device: &B::Device,
) {
    state.steps += 1;
    let every = config.memory.cleanup_every;
    if every > 0 && state.steps.is_multiple_of(every as u64) {
        B::memory_cleanup(device);
    }
}

/// What a step computes before its update.
pub struct StepGradients<B: AutodiffBackend> {
    /// The gradient of every trained parameter of the (master) model, multiplied by the loss
    /// scale when the step scales its loss (mixed precision).
    pub grads: GradientsParams,
    /// The unscaled loss.
    pub loss: f64,
    /// Query accuracy in [0, 1].
    pub accuracy: f64,
    /// The VIC terms, when VIC is on.
    pub vic_terms: Option<fsct_vic::VicTerms<B>>,
}

/// The forward and backward pass of one step on episode `x` (`[N, K+M, C, H, W]`), without the
/// update: the half copy under mixed precision, the loss (classification plus VIC), loss scaling,
/// and the backward pass, through the backbone's segments under segment checkpointing.
///
/// # Errors
/// An episode whose shape does not fit the model.
pub fn step_gradients<B: AutodiffBackend>(
    config: &Config,
    model: &AnyModel<B>,
    state: &TrainerState,
    x: Tensor<B, 5>,
    observe: &mut dyn FnMut(StepPoint),
) -> Result<StepGradients<B>> {
    model.check_episode(x.dims())?;
    let n_query = config.episodes.n_query;
    // Mixed precision: a fresh half copy each step; gradients flow back to the f32 master.
    let half = config.memory.precision.compute_copy().map(|dtype| (half_copy(model, dtype), dtype));
    let (runner, x) = match &half {
        Some((copy, dtype)) => (copy, x.cast(*dtype)),
        None => (model, x),
    };
    // Segment checkpointing: the backbone keeps only its segments' inputs (a frozen backbone
    // records nothing to begin with).
    let segments = config.memory.gradient_checkpoint.segments().filter(|_| model.trains_backbone());
    let (out, tape) = match segments {
        Some(level) => {
            let [n_way, per_class, c, h, w] = x.dims();
            let images = x.reshape([n_way * per_class, c, h, w]);
            let tape = SegmentTape::forward(runner.backbone(), level, images);
            (runner.forward_maps(tape.output(), n_way, per_class), Some(tape))
        }
        None => (runner.forward_episode(x), None),
    };
    let EpisodeForward { scores, support, query } = out;
    let ce = episode_loss(scores.clone(), n_query);
    let (loss, vic_terms) = match state.vic.as_ref() {
        Some(vic) => {
            let terms = fsct_vic::vic_terms(support, query, vic.lambdas(), &config.vic);
            (ce.add(terms.total.clone()), Some(terms))
        }
        None => {
            // Views of the backbone's output: not kept alive to the end of the step.
            drop((support, query));
            (ce, None)
        }
    };
    let accuracy = episode_accuracy(scores, n_query);
    let loss_value: f64 = loss.clone().into_scalar().elem();
    let scaled = match &state.scaler {
        Some(scaler) => loss.mul_scalar(scaler.scale),
        None => loss,
    };
    observe(StepPoint::BeforeBackward);
    let mut raw = scaled.backward();
    let backbone_grad = tape.as_ref().and_then(|tape| tape.output_grad(&mut raw));
    let mut grads = GradientsParams::from_grads(raw, model);
    if let (Some(tape), Some(grad)) = (tape, backbone_grad) {
        // The backbone's backward pass, segment by segment; its parameters' gradients reach the
        // master model through the half copy's casts, as without checkpointing.
        tape.backward(runner.backbone(), grad, |segment| {
            model.visit(&mut CollectGradients { grads: segment, into: &mut grads });
        });
    }
    drop(half);
    observe(StepPoint::AfterBackward);
    Ok(StepGradients { grads, loss: loss_value, accuracy, vic_terms })
}
