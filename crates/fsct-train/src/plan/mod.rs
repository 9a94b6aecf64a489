//! The memory planner: the peak memory of one training step and of one evaluation episode of a
//! config, by component, before training (`fsct-train plan`, `memory.budget`).
//!
//! How a prediction is made:
//! - exact arithmetic from the built model and the config ([`components`]): parameters,
//!   gradients, AdamW's moments, the episode, the VIC buffers;
//! - activations measured on the CPU ([`measure`]): the model's own forward and backward passes
//!   at the config's image size, on a few images, counted by the process's counting allocator
//!   ([`crate::alloc_count`], which the `fsct-train` binary installs), and extended along straight
//!   lines in the number of images (every activation has the images as its leading dimension).
//!   Nothing comes from a table: a custom backbone is measured the same way;
//! - the step's phases composed ([`Prediction::compose`]): the forward pass, the head's backward
//!   pass (every kept backbone activation still alive), the backbone's backward pass (the head's
//!   gradients alive), AdamW's update; the step's peak is the largest;
//! - on a GPU, cubecl's pool rounding ([`components::allocator_overhead`]).
//!
//! [`budget`] picks the settings that fit a memory budget; [`report`] prints the tables.

pub mod budget;
pub mod components;
pub mod measure;
pub mod report;

use std::sync::Mutex;

use anyhow::{bail, Result};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use fsct_backbone::{with_block_ops, BlockOps};

use crate::config::{Checkpointing, Config, DeviceKind, Precision};
pub use budget::{Budget, Candidate};
pub use components::{ParamCounts, State};
pub use measure::{Line, Measured};

/// How to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// The device the run will use (a GPU adds its allocator's overhead).
    pub device: DeviceKind,
    /// Measure the backbone on 1 and 2 images instead of a quarter and a half of the episode's
    /// (seconds instead of about one training step; less exact where parameter gradients
    /// outweigh a few images' activations).
    pub quick: bool,
}

impl PlanOptions {
    /// The config's device, full measurements.
    pub fn for_config(config: &Config) -> Self {
        Self { device: config.run.device, quick: false }
    }
}

/// The phases of a training step, in bytes above the step's start (the model, AdamW's moments
/// and the episode exist before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepPhases {
    /// The backbone's forward pass.
    pub forward: u64,
    /// The head's forward and backward passes, every kept backbone activation alive.
    pub head: u64,
    /// The backbone's backward pass, the head's gradients alive.
    pub backbone_backward: u64,
    /// AdamW's update, every gradient alive.
    pub optimizer: u64,
}

impl StepPhases {
    /// The largest phase and its name.
    pub fn peak(&self) -> (&'static str, u64) {
        [
            ("forward pass", self.forward),
            ("head backward pass", self.head),
            ("backbone backward pass", self.backbone_backward),
            ("optimizer update", self.optimizer),
        ]
        .into_iter()
        .fold(("forward pass", 0), |best, p| if p.1 > best.1 { p } else { best })
    }
}

/// The predicted memory of one config.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The config predicted.
    pub config: Config,
    /// The device predicted for.
    pub device: DeviceKind,
    /// What was measured (lines in images and queries).
    pub measured: Measured,
    /// Factor applied to the measured figures: 0.5 for pure half (measured in f32 on the CPU,
    /// which has no pure-half training), else 1.
    pub scale: f64,
    /// Images per episode.
    pub images: usize,
    /// The run's state (exact).
    pub state: State,
    /// The step's phases.
    pub phases: StepPhases,
    /// The step's peak above its start.
    pub step_above_start: u64,
    /// The allocator's overhead at the step's peak (GPU).
    pub overhead: u64,
    /// Peak of one training step in all: state + step + overhead.
    pub step_total: u64,
    /// Peak of one evaluation episode during training (the optimizer state stays): state +
    /// evaluation + overhead.
    pub eval_total: u64,
    /// The evaluation episode's own peak above its start.
    pub eval_above_start: u64,
}

impl Prediction {
    /// Composes the prediction of `config` (whose `n_query` may differ from the measured one's)
    /// from measurements.
    pub fn compose(config: &Config, device: DeviceKind, measured: &Measured, scale: f64) -> Self {
        let e = &config.episodes;
        let q = e.n_query;
        let images = e.n_way * (e.k_shot + q);
        let state = components::state(config, measured.counts, q);
        let s = |bytes: u64| (bytes as f64 * scale).round() as u64;
        let bb = &measured.backbone;
        let base = s(measured.half_copy) + state.episode_half;
        let phases = StepPhases {
            forward: base + s(bb.forward_peak.at(images)),
            head: base + s(bb.kept.at(images)) + s(measured.head.peak.at(q)),
            backbone_backward: base + state.head_gradients + s(bb.backward_peak.at(images)),
            optimizer: s(measured.optimizer_peak),
        };
        let step_above_start = phases.peak().1;
        let held = state.params + state.optimizer + state.episode;
        let in_use = held + step_above_start;
        let overhead = components::allocator_overhead(device, in_use);
        let master = config.memory.precision.master_dtype();
        let maps = measure::bytes_of(images * measured.feature_dim, master);
        let eval_above_start =
            s(measured.eval_backbone.at(images)).max(maps + s(measured.eval_head.at(q)));
        let eval_in_use = held + eval_above_start;
        Self {
            config: config.clone(),
            device,
            measured: measured.clone(),
            scale,
            images,
            state,
            phases,
            step_above_start,
            overhead,
            step_total: in_use + overhead,
            eval_total: eval_in_use + components::allocator_overhead(device, eval_in_use),
            eval_above_start,
        }
    }

    /// The same prediction with `n_query` queries per class.
    pub fn with_n_query(&self, n_query: usize) -> Self {
        let mut config = self.config.clone();
        config.episodes.n_query = n_query;
        Self::compose(&config, self.device, &self.measured, self.scale)
    }

    /// The larger of the step's and the evaluation's peak.
    pub fn peak(&self) -> u64 {
        self.step_total.max(self.eval_total)
    }
}

/// One measurement at a time: the counting allocator counts every thread of the process.
static MEASURING: Mutex<()> = Mutex::new(());

/// Holds the measurement lock (tests that allocate much while a prediction runs take it too).
pub fn measurement_lock() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Predicts `config`'s memory.
///
/// # Errors
/// The model cannot be built for the config (exit 2), or the process does not count its
/// allocations (the planner needs [`crate::alloc_count::CountingAlloc`] as the global allocator).
pub fn predict(config: &Config, options: &PlanOptions) -> Result<Prediction> {
    if !crate::alloc_count::is_counting() {
        bail!(
            "the memory planner measures activations with a counting allocator, and this process \
             has none: install fsct_train::alloc_count::CountingAlloc as the #[global_allocator] \
             (the fsct-train binary does)"
        );
    }
    let mut measured_config = config.clone();
    measured_config.memory.cleanup_every = 0;
    let scale = match config.memory.precision {
        // The CPU has no pure-half training: measured in f32, halved.
        Precision::F16 | Precision::Bf16 => {
            measured_config.memory.precision = Precision::F32;
            0.5
        }
        // The same bytes as mixed f16.
        Precision::MixedBf16 => {
            measured_config.memory.precision = Precision::MixedF16;
            1.0
        }
        Precision::F32 | Precision::MixedF16 => 1.0,
    };
    let _lock = measurement_lock();
    let device = Default::default();
    // A GPU runs Burn's composed block ops, which keep more than Flex's fused nodes: measure
    // those for it.
    let block_ops = match options.device {
        DeviceKind::Cpu => BlockOps::Fused,
        DeviceKind::Cuda | DeviceKind::Vulkan => BlockOps::Composed,
    };
    let measured = with_block_ops(block_ops, || {
        if config.memory.gradient_checkpoint == Checkpointing::Balanced {
            measure::measure_on::<Autodiff<Flex, BalancedCheckpointing>>(
                &measured_config,
                options.quick,
                &device,
            )
        } else {
            measure::measure_on::<Autodiff<Flex>>(&measured_config, options.quick, &device)
        }
    })?;
    Ok(Prediction::compose(config, options.device, &measured, scale))
}
