//! Runs training steps of one configuration on a fresh model and measures each step.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use fsct_train::config::{Checkpointing, Config};
use fsct_train::model::build_model;
use fsct_train::step::{new_optimizer, new_trainer_state, train_step_observed, StepPoint};

use crate::counting_alloc;

/// At most this many warm-up steps are added while the loss scaler skips updates (65536 halved
/// 12 times is 16).
const MAX_EXTRA_WARMUP: usize = 12;

/// Warm-up and measured step counts.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub warmup: usize,
    pub measured: usize,
}

/// What a probe saw during one step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepMemory {
    /// Peak bytes above those held when the step started (activations, gradients, temporaries).
    pub above_start: u64,
    /// Peak bytes held in all (model, optimizer state and the episode included).
    pub absolute: u64,
    /// GPU: bytes the allocator had reserved at the peak.
    pub reserved: Option<u64>,
    /// GPU: device memory used according to nvidia-smi (NVML), whole card.
    pub nvml: Option<u64>,
    /// Time the probe itself spent inside the step, taken off the step time.
    pub overhead: Duration,
}

/// Where the memory figures come from.
pub trait Probe {
    fn step_start(&mut self);
    /// At each point of the step where a sampling probe looks (see `StepPoint`).
    fn observe(&mut self, point: StepPoint);
    fn step_end(&mut self) -> StepMemory;
}

/// The counting global allocator: exact heap peak, no sampling needed.
#[derive(Default)]
pub struct CpuProbe {
    before: usize,
}

impl Probe for CpuProbe {
    fn step_start(&mut self) {
        self.before = counting_alloc::reset_peak();
    }

    fn observe(&mut self, _point: StepPoint) {}

    fn step_end(&mut self) -> StepMemory {
        let peak = counting_alloc::peak();
        StepMemory {
            above_start: peak.saturating_sub(self.before) as u64,
            absolute: peak as u64,
            ..StepMemory::default()
        }
    }
}

/// One configuration's figures over the measured steps.
#[derive(Debug, Clone)]
pub struct Measured {
    pub median_seconds: f64,
    /// Median CPU time of the process (all threads) per step: unlike wall time, barely moved by
    /// other work on a shared machine.
    pub median_cpu_seconds: Option<f64>,
    /// Per-step maxima of the probe's figures.
    pub memory: StepMemory,
    /// Measured steps whose update the loss scaler skipped (inf/NaN gradients in f16).
    pub skipped_steps: u64,
    /// Warm-up steps added because the loss scaler skipped their update.
    pub extra_warmup: usize,
    /// Mixed precision's loss scale after the last step.
    pub loss_scale: Option<f64>,
    pub last_loss: f64,
}

/// Measures `config` on `Inner` (with or without checkpointing, as the config says). A panic
/// (e.g. out of GPU memory) becomes an error so the other rows still get measured.
pub fn measure<Inner: Backend>(
    config: &Config,
    device: &Inner::Device,
    steps: Steps,
    probe: &mut dyn Probe,
) -> Result<Measured, String> {
    let run = AssertUnwindSafe(|| {
        if config.memory.gradient_checkpoint == Checkpointing::Balanced {
            run_steps::<Autodiff<Inner, BalancedCheckpointing>>(config, device, steps, probe)
        } else {
            run_steps::<Autodiff<Inner>>(config, device, steps, probe)
        }
    });
    let result = catch_unwind(run).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(format!("panicked: {why}"))
    });
    // Give the previous configuration's cached blocks back before the next one (CUDA).
    Inner::memory_cleanup(device);
    result
}

fn run_steps<B: AutodiffBackend>(
    config: &Config,
    device: &B::Device,
    steps: Steps,
    probe: &mut dyn Probe,
) -> Result<Measured, String> {
    B::seed(device, config.run.seed);
    let model = build_model::<B>(config, device).map_err(|e| e.to_string())?;
    // `build_model` has materialised the lazily initialised parameters, in the same order for
    // every configuration, so all start from the same weights.
    let mut model = model;
    let e = &config.episodes;
    let side = config.image_size();
    // Random pixels: data loading is benched on its own (fsct-episodes' loader bench).
    let x = Tensor::<B, 5>::random(
        [e.n_way, e.k_shot + e.n_query, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let mut optim = new_optimizer::<B>(config);
    let mut state = new_trainer_state(config);
    let mut times = Vec::with_capacity(steps.measured);
    let mut cpu_times = Vec::with_capacity(steps.measured);
    let mut memory = StepMemory::default();
    let mut last_loss = f64::NAN;
    let mut skipped_steps = 0;
    let mut extra_warmup = 0;
    let mut step = 0;
    while times.len() < steps.measured {
        step += 1;
        probe.step_start();
        let cpu_started = process_cpu_seconds();
        let started = Instant::now();
        let (next, outcome) = train_step_observed(
            config,
            model,
            &mut optim,
            &mut state,
            x.clone(),
            device,
            &mut |point| probe.observe(point),
        )
        .map_err(|e| format!("{e:#}"))?;
        // GPU work is asynchronous: the step ends when the device is done with it.
        B::sync(device).map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let cpu = process_cpu_seconds().zip(cpu_started).map(|(end, start)| end - start);
        let seen = probe.step_end();
        model = next;
        last_loss = outcome.loss;
        if std::env::var_os("FSCT_BENCH_VERBOSE").is_some() {
            eprintln!(
                "[memory bench]     step {step}: {:.3} s, loss {:.4}{}{}",
                elapsed.as_secs_f64(),
                outcome.loss,
                outcome.vic.map_or(String::new(), |v| format!(
                    ", VIC v {:.4} i {:.4} c {:.4}",
                    v.variance, v.invariance, v.covariance
                )),
                if outcome.applied { "" } else { ", update skipped" }
            );
        }
        if step <= steps.warmup {
            continue;
        }
        // Mixed precision starts at a loss scale of 65536 and halves it after each step whose
        // gradients overflow f16; such a step has no optimizer update. Measure the steady state,
        // as a run reaches it after its first steps.
        if !outcome.applied && times.is_empty() && extra_warmup < MAX_EXTRA_WARMUP {
            extra_warmup += 1;
            continue;
        }
        skipped_steps += u64::from(!outcome.applied);
        times.push(elapsed.saturating_sub(seen.overhead).as_secs_f64());
        cpu_times.extend(cpu);
        memory.above_start = memory.above_start.max(seen.above_start);
        memory.absolute = memory.absolute.max(seen.absolute);
        memory.reserved = max_option(memory.reserved, seen.reserved);
        memory.nvml = max_option(memory.nvml, seen.nvml);
    }
    let median_cpu_seconds = (cpu_times.len() == times.len()).then(|| median(&mut cpu_times));
    Ok(Measured {
        median_seconds: median(&mut times),
        median_cpu_seconds,
        memory,
        skipped_steps,
        extra_warmup,
        loss_scale: state.scaler.as_ref().map(|s| s.scale),
        last_loss,
    })
}

impl Measured {
    /// One JSON line (a child bench's answer to its parent).
    #[cfg_attr(not(any(feature = "cuda", feature = "vulkan")), allow(dead_code))]
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "median_seconds": self.median_seconds,
            "median_cpu_seconds": self.median_cpu_seconds,
            "above_start": self.memory.above_start,
            "absolute": self.memory.absolute,
            "reserved": self.memory.reserved,
            "nvml": self.memory.nvml,
            "skipped_steps": self.skipped_steps,
            "extra_warmup": self.extra_warmup,
            "loss_scale": self.loss_scale,
            "last_loss": if self.last_loss.is_finite() { Some(self.last_loss) } else { None },
        })
        .to_string()
    }

    /// The inverse of [`Self::to_json`].
    #[cfg_attr(not(any(feature = "cuda", feature = "vulkan")), allow(dead_code))]
    pub fn from_json(line: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("the child's answer: {e}"))?;
        let f = |k: &str| v[k].as_f64();
        let u = |k: &str| v[k].as_u64();
        Ok(Self {
            median_seconds: f("median_seconds")
                .ok_or("the child's answer has no median_seconds")?,
            median_cpu_seconds: f("median_cpu_seconds"),
            memory: StepMemory {
                above_start: u("above_start").unwrap_or(0),
                absolute: u("absolute").unwrap_or(0),
                reserved: u("reserved"),
                nvml: u("nvml"),
                overhead: Duration::ZERO,
            },
            skipped_steps: u("skipped_steps").unwrap_or(0),
            extra_warmup: u("extra_warmup").unwrap_or(0) as usize,
            loss_scale: f("loss_scale"),
            last_loss: f("last_loss").unwrap_or(f64::NAN),
        })
    }
}

/// User + system time of the whole process (every thread), from /proc/self/stat (Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Clock ticks of USER_HZ, which the kernel ABI fixes at 100 per second.
    Some((utime + stime) / 100.0)
}

fn max_option(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
