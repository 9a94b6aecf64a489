//! The training recipe's optimizer side: [`Optim`], Burn's AdamW, Adam or SGD (with momentum or
//! Nesterov's) over [`AnyModel`] as `optim.optimizer` says, optional per-parameter gradient-norm
//! clipping, and [`LrSchedule`], the learning rate of each step (Burn's constant, cosine and step
//! schedulers after an optional linear warm-up).
//!
//! Nothing here is hand-written arithmetic: updates are Burn's `OptimizerAdaptor`s, clipping is
//! Burn's `GradientClippingConfig::Norm`, rates are Burn's `LrScheduler`s. What this module adds
//! is the choice between them and their composition:
//!
//! - **Warm-up then schedule.** Burn's `ComposedLrScheduler` multiplies or adds schedulers that
//!   all run from step 0 (and has no step schedule); a warm-up must run *before* the schedule, so
//!   [`LrSchedule`] steps a `LinearLrScheduler` for `warmup_steps` steps and then the schedule
//!   from its own step 0.
//! - **Position.** A schedule's position is the trainer's `steps` (every training step counts,
//!   including a step mixed precision skipped). [`Optim::learning_rate_for_step`] moves the
//!   schedule to the step it is asked for before stepping it, by replaying Burn's scheduler from
//!   its start when needed: Burn's schedulers hold only integer counters, so a replayed schedule
//!   gives bit-identical rates, and a resumed run (whose checkpoint holds `steps`) continues the
//!   uninterrupted run's sequence exactly without storing the scheduler.
//! - **Records.** [`Optim::record_bytes`] writes the chosen optimizer's Burn record exactly as the
//!   single AdamW of earlier versions did, so their checkpoints load unchanged.
//!
//! Pure f16 (`memory.precision = "f16"`): the Adams get the gradients at
//! [`HALF_ADAM_GRADIENT_SCALE`] with [`HALF_ADAM_EPSILON`] (see [`crate::step`]); their clipping
//! norm is multiplied by the same factor, so the clipped update is that of the true gradients.
//! SGD's update is proportional to the gradient, so it gets the true gradients (loss scale
//! divided out, factor 1) and its momentum buffer is f16 like the weights: plain f16 range
//! (gradients below ~6e-8 flush to zero) and rounding (an update below half an f16 ulp of its
//! weight is lost, e.g. lr·g < 2⁻¹² for a weight near 1). Use `mixed-f16` (f32 master weights and
//! momentum) for SGD when that matters.

use anyhow::{Context, Result};
use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::constant::ConstantLr;
use burn::lr_scheduler::cosine::{CosineAnnealingLrScheduler, CosineAnnealingLrSchedulerConfig};
use burn::lr_scheduler::linear::{LinearLrScheduler, LinearLrSchedulerConfig};
use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};
use burn::lr_scheduler::LrScheduler;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig,
};
use burn::record::{Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;

use crate::config::{Config, LrScheduleKind, OptimConfig, OptimizerKind};
use crate::model::AnyModel;
use crate::weights::ModelRecorder;

use crate::step::{HALF_ADAM_EPSILON, HALF_ADAM_GRADIENT_SCALE};

/// PyTorch's ε for Adam and AdamW.
const ADAM_EPSILON: f64 = 1e-8;

/// One of Burn's optimizers over [`AnyModel`].
enum Updater<B: AutodiffBackend> {
    AdamW(OptimizerAdaptor<AdamW, AnyModel<B>, B>),
    Adam(OptimizerAdaptor<Adam, AnyModel<B>, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, AnyModel<B>, B>),
}

/// The trainer's optimizer: the configured Burn optimizer (with its gradient clipping) and the
/// learning rate schedule.
pub struct Optim<B: AutodiffBackend> {
    updater: Updater<B>,
    schedule: LrSchedule,
}

impl<B: AutodiffBackend> Optim<B> {
    /// The optimizer `config` asks for (see the module docs for pure f16).
    pub fn new(config: &Config) -> Self {
        let o = &config.optim;
        let f16_state = config.memory.precision.master_dtype() == burn::tensor::FloatDType::F16;
        let adaptive_scale = if f16_state { HALF_ADAM_GRADIENT_SCALE } else { 1.0 };
        let epsilon = if f16_state { HALF_ADAM_EPSILON } else { ADAM_EPSILON };
        let clipping = |scale: f64| {
            o.grad_clip_norm.map(|norm| GradientClippingConfig::Norm((norm * scale) as f32))
        };
        let l2 = (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32));
        let updater = match o.optimizer {
            OptimizerKind::AdamW => Updater::AdamW(
                AdamWConfig::new()
                    .with_weight_decay(o.weight_decay as f32)
                    .with_epsilon(epsilon as f32)
                    .with_grad_clipping(clipping(adaptive_scale))
                    .init::<B, AnyModel<B>>(),
            ),
            OptimizerKind::Adam => Updater::Adam(
                AdamConfig::new()
                    .with_weight_decay(l2)
                    .with_epsilon(epsilon as f32)
                    .with_grad_clipping(clipping(adaptive_scale))
                    .init::<B, AnyModel<B>>(),
            ),
            OptimizerKind::Sgd => Updater::Sgd(
                SgdConfig::new()
                    .with_weight_decay(l2)
                    .with_momentum((o.momentum > 0.0).then_some(MomentumConfig {
                        momentum: o.momentum,
                        dampening: 0.0,
                        nesterov: o.nesterov,
                    }))
                    .with_gradient_clipping(clipping(1.0))
                    .init::<B, AnyModel<B>>(),
            ),
        };
        Self { updater, schedule: LrSchedule::new(o, config.episodes.train_episodes) }
    }

    /// Which optimizer this is.
    pub fn kind(&self) -> OptimizerKind {
        match self.updater {
            Updater::AdamW(_) => OptimizerKind::AdamW,
            Updater::Adam(_) => OptimizerKind::Adam,
            Updater::Sgd(_) => OptimizerKind::Sgd,
        }
    }

    /// The factor the gradients handed to [`Self::step`] must carry under pure f16 (the Adams:
    /// [`HALF_ADAM_GRADIENT_SCALE`]; SGD: 1, the true gradients).
    pub fn half_gradient_scale(&self) -> f64 {
        if self.kind().is_adaptive() {
            HALF_ADAM_GRADIENT_SCALE
        } else {
            1.0
        }
    }

    /// The learning rate of training step `step` (0-based, the trainer state's `steps` before
    /// the step), advancing the schedule past it.
    pub fn learning_rate_for_step(&mut self, step: u64) -> f64 {
        self.schedule.seek(step);
        self.schedule.step()
    }

    /// One update of `model` at learning rate `lr` with `grads` (Burn's `Optimizer::step`; the
    /// gradients are clipped first when `optim.grad_clip_norm` is set).
    pub fn step(&mut self, lr: f64, model: AnyModel<B>, grads: GradientsParams) -> AnyModel<B> {
        match &mut self.updater {
            Updater::AdamW(o) => o.step(lr, model, grads),
            Updater::Adam(o) => o.step(lr, model, grads),
            Updater::Sgd(o) => o.step(lr, model, grads),
        }
    }

    /// The optimizer's state (moments, momentum buffers) as checkpoint bytes: the chosen
    /// optimizer's Burn record, as earlier versions wrote AdamW's.
    ///
    /// # Errors
    /// The recorder's.
    pub fn record_bytes(&self) -> Result<Vec<u8>> {
        let recorder = ModelRecorder::default();
        let bytes = match &self.updater {
            Updater::AdamW(o) => recorder.record(o.to_record(), ()),
            Updater::Adam(o) => recorder.record(o.to_record(), ()),
            Updater::Sgd(o) => recorder.record(o.to_record(), ()),
        };
        bytes.context("serialising the optimizer")
    }

    /// Decodes bytes written by [`Self::record_bytes`] as this optimizer's record (the resume
    /// policy makes sure a checkpoint's optimizer is the configured one).
    ///
    /// # Errors
    /// Bytes that are not a record of this optimizer.
    pub fn decode_record(
        &self,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> Result<OptimRecord<B>, RecorderError> {
        let recorder = ModelRecorder::default();
        Ok(match &self.updater {
            Updater::AdamW(_) => OptimRecord::AdamW(recorder.load(bytes, device)?),
            Updater::Adam(_) => OptimRecord::Adam(recorder.load(bytes, device)?),
            Updater::Sgd(_) => OptimRecord::Sgd(recorder.load(bytes, device)?),
        })
    }

    /// Loads a record [`Self::decode_record`] returned.
    ///
    /// # Panics
    /// A record that does not fit the model's parameters (Burn's), or another optimizer's.
    pub fn load_record(self, record: OptimRecord<B>) -> Self {
        let Self { updater, schedule } = self;
        let updater = match (updater, record) {
            (Updater::AdamW(o), OptimRecord::AdamW(r)) => Updater::AdamW(o.load_record(r)),
            (Updater::Adam(o), OptimRecord::Adam(r)) => Updater::Adam(o.load_record(r)),
            (Updater::Sgd(o), OptimRecord::Sgd(r)) => Updater::Sgd(o.load_record(r)),
            _ => panic!("the record is another optimizer's"),
        };
        Self { updater, schedule }
    }
}

/// The record of one of Burn's optimizers over [`AnyModel`].
type RecordOf<O, B> = <OptimizerAdaptor<O, AnyModel<B>, B> as Optimizer<AnyModel<B>, B>>::Record;

/// An optimizer's state decoded from checkpoint bytes ([`Optim::decode_record`]).
pub enum OptimRecord<B: AutodiffBackend> {
    /// AdamW's moments.
    AdamW(RecordOf<AdamW, B>),
    /// Adam's moments.
    Adam(RecordOf<Adam, B>),
    /// SGD's momentum buffers.
    Sgd(RecordOf<Sgd<<B as AutodiffBackend>::InnerBackend>, B>),
}

/// The part of the schedule after the warm-up: one of Burn's schedulers.
#[derive(Clone)]
enum MainSchedule {
    Constant(ConstantLr),
    Cosine(CosineAnnealingLrScheduler),
    Step(StepLrScheduler),
}

/// The learning rate per optimizer step: `optim.warmup_steps` steps of Burn's
/// `LinearLrScheduler` (step s < W: lr·(s + 1)/(W + 1)), then Burn's scheduler for
/// `optim.schedule` from its own first step. See [`crate::config::LrScheduleKind`] for each
/// schedule's formula.
#[derive(Clone)]
pub struct LrSchedule {
    /// The schedule at step 0, to replay from.
    start: Box<(Option<LinearLrScheduler>, MainSchedule)>,
    warmup: Option<LinearLrScheduler>,
    warmup_steps: u64,
    main: MainSchedule,
    /// Steps taken: the step the next [`Self::step`] gives the rate of.
    position: u64,
}

impl LrSchedule {
    /// The schedule `optim` describes, for a run of `train_episodes` steps per epoch, at step 0.
    /// The config is validated ([`Config::validate`]): every value Burn's schedulers accept.
    ///
    /// # Panics
    /// A value [`Config::validate`] refuses (a learning rate above 1 with a warm-up or cosine
    /// schedule, `step` without `step_size`).
    pub fn new(optim: &OptimConfig, train_episodes: usize) -> Self {
        let lr = optim.learning_rate;
        let w = optim.warmup_steps;
        let warmup = (w > 0).then(|| {
            LinearLrSchedulerConfig::new(lr / (w + 1) as f64, lr, w as usize)
                .init()
                .expect("validated warm-up")
        });
        let main = match optim.schedule {
            LrScheduleKind::Constant => MainSchedule::Constant(ConstantLr::new(lr)),
            LrScheduleKind::Cosine => {
                let decay = optim.total_steps(train_episodes).saturating_sub(w).max(1);
                MainSchedule::Cosine(
                    CosineAnnealingLrSchedulerConfig::new(lr, decay as usize)
                        .with_min_lr(optim.min_learning_rate)
                        .init()
                        .expect("validated cosine schedule"),
                )
            }
            LrScheduleKind::Step => MainSchedule::Step(
                StepLrSchedulerConfig::new(
                    lr,
                    optim.step_size.expect("validated step_size") as usize,
                )
                .with_gamma(optim.gamma)
                .init()
                .expect("validated step schedule"),
            ),
        };
        Self { start: Box::new((warmup, main.clone())), warmup, warmup_steps: w, main, position: 0 }
    }

    /// The rate of the next step, advancing the schedule.
    pub fn step(&mut self) -> f64 {
        let lr = match (&mut self.warmup, self.position < self.warmup_steps) {
            (Some(warmup), true) => warmup.step(),
            _ => match &mut self.main {
                MainSchedule::Constant(s) => s.step(),
                MainSchedule::Cosine(s) => s.step(),
                MainSchedule::Step(s) => s.step(),
            },
        };
        self.position += 1;
        lr
    }

    /// Moves the schedule so that the next [`Self::step`] gives step `step`'s rate: forward by
    /// stepping, backward by replaying from step 0 (bit-identical: Burn's schedulers keep integer
    /// counters only).
    pub fn seek(&mut self, step: u64) {
        if step < self.position {
            let (warmup, main) = (*self.start).clone();
            (self.warmup, self.main, self.position) = (warmup, main, 0);
        }
        while self.position < step {
            self.step();
        }
    }

    /// The step the next [`Self::step`] gives the rate of.
    pub fn position(&self) -> u64 {
        self.position
    }
}
