//! The GPU table: the same configurations on a cubecl GPU runtime — CUDA (`--features cuda`) or
//! Vulkan (`--features vulkan`) — memory from cubecl's allocator (and NVML on CUDA).
//!
//! Written once over [`Gpu`]; each runtime only says how to open its device and name its card.
//! Burn 0.21 keeps one float type per device and process (the first tensor fixes it), so the rows
//! that train on the f16 backend (`memory.precision = "f16"`) run in a child process of this bench
//! (`FSCT_BENCH_CHILD`), which prints its measurement as one JSON line.

use std::process::Command;
use std::time::Instant;

use burn::cubecl::Runtime;
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{DType, Element};
use fsct_train::config::{Config, Precision};
use fsct_train::step::StepPoint;

use crate::measure::{measure, Measured, Probe, StepMemory, Steps};
use crate::report::{self, RunInfo};

/// A cubecl GPU runtime as the bench uses it.
pub trait Gpu {
    /// As users know it: `CUDA`, `Vulkan`.
    const NAME: &'static str;
    /// Its name in `FSCT_BENCH_DEVICES` and in the report's file name.
    const KEY: &'static str;
    /// The cubecl runtime (for the allocator's figures).
    type R: Runtime<Device = Self::Device>;
    /// Its device.
    type Device: Clone + Send + Sync + 'static;
    /// The backend with f32 floats.
    type F32: Backend + BackendTypes<Device = Self::Device>;
    /// The backend with f16 floats.
    type F16: Backend + BackendTypes<Device = Self::Device>;

    /// Opens the default device (no tensor created yet) and names the card; `Err` says what the
    /// machine lacks.
    fn open() -> Result<(Self::Device, String), String>;

    /// The card's used memory in bytes, from the driver, if it tells.
    fn driver_used_bytes() -> Option<u64> {
        None
    }
}

/// cubecl has no peak counter: the figures are sampled where the step comes nearest its peak —
/// when the loss exists and the backward pass has not started (every saved activation alive) and
/// once the gradients exist — and the larger is kept. Each sample needs a device sync (the queued
/// work is the step's own, so that wait counts in the step time); the queries after it are taken
/// off the step time. Inside the backward pass usage can rise somewhat above both samples;
/// "reserved", the pools' size, bounds it from above.
struct GpuProbe<G: Gpu, B: Backend + BackendTypes<Device = G::Device>> {
    device: G::Device,
    in_use_before: u64,
    sample: StepMemory,
    _b: std::marker::PhantomData<B>,
}

impl<G: Gpu, B: Backend + BackendTypes<Device = G::Device>> GpuProbe<G, B> {
    fn new(device: G::Device) -> Self {
        Self { device, in_use_before: 0, sample: StepMemory::default(), _b: Default::default() }
    }

    fn sync(&self) {
        // Queued work must run before its buffers show up in the allocator.
        let _ = B::sync(&self.device);
    }

    fn usage(&self) -> Option<(u64, u64)> {
        let usage = G::R::client(&self.device).memory_usage().ok()?;
        Some((usage.bytes_in_use, usage.bytes_reserved))
    }
}

impl<G: Gpu, B: Backend + BackendTypes<Device = G::Device>> Probe for GpuProbe<G, B> {
    fn step_start(&mut self) {
        self.sync();
        self.in_use_before = self.usage().map_or(0, |(in_use, _)| in_use);
        self.sample = StepMemory::default();
    }

    fn observe(&mut self, _point: StepPoint) {
        self.sync();
        let started = Instant::now();
        if let Some((in_use, reserved)) = self.usage() {
            self.sample.absolute = self.sample.absolute.max(in_use);
            self.sample.above_start =
                self.sample.above_start.max(in_use.saturating_sub(self.in_use_before));
            self.sample.reserved = Some(self.sample.reserved.unwrap_or(0).max(reserved));
        }
        if let Some(used) = G::driver_used_bytes() {
            self.sample.nvml = Some(self.sample.nvml.unwrap_or(0).max(used));
        }
        self.sample.overhead += started.elapsed();
    }

    fn step_end(&mut self) -> StepMemory {
        std::mem::take(&mut self.sample)
    }
}

/// Fixes the device's float type to `B`'s before any tensor is created there, and checks it.
fn pin<B: Backend>(device: &B::Device) -> Result<(), String> {
    let float: DType = <B::FloatElem as Element>::dtype();
    let _ = burn::tensor::set_default_dtypes::<B>(device, float, <B::IntElem as Element>::dtype());
    let chosen = DType::from(burn::tensor::get_device_settings::<B>(device).float_dtype);
    if chosen == float {
        Ok(())
    } else {
        Err(format!("the device already computes in {chosen:?}, not {float:?}"))
    }
}

/// Measures one configuration on `G`: the f32 backend here, the f16 one in a child process.
fn measure_on<G: Gpu>(
    config: &Config,
    device: &G::Device,
    steps: Steps,
) -> Result<Measured, String> {
    if config.memory.precision.is_pure_half() {
        return measure_in_child::<G>(config, steps);
    }
    let mut probe = GpuProbe::<G, G::F32>::new(device.clone());
    measure::<G::F32>(config, device, steps, &mut probe)
}

/// The environment variable that makes this bench a child measuring one configuration (JSON).
pub const CHILD: &str = "FSCT_BENCH_CHILD";
/// The runtime the child measures on ([`Gpu::KEY`]).
pub const CHILD_DEVICE: &str = "FSCT_BENCH_CHILD_DEVICE";

fn measure_in_child<G: Gpu>(config: &Config, steps: Steps) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let out = Command::new(exe)
        .env(CHILD, serde_json::to_string(config).map_err(|e| e.to_string())?)
        .env(CHILD_DEVICE, G::KEY)
        .env("FSCT_BENCH_WARMUP", steps.warmup.to_string())
        .env("FSCT_BENCH_STEPS", steps.measured.to_string())
        .output()
        .map_err(|e| format!("cannot start the child bench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find(|l| l.starts_with('{')) {
        Some(line) => Measured::from_json(line),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            Err(format!("the child bench failed ({}): {why}", out.status))
        }
    }
}

/// In a child (`FSCT_BENCH_CHILD` set): measures the configuration it holds on `G`'s f16
/// backend and prints the result as one JSON line.
pub fn run_child<G: Gpu>() {
    let text = std::env::var(CHILD).unwrap_or_default();
    let result = (|| {
        let config: Config = serde_json::from_str(&text).map_err(|e| format!("{CHILD}: {e}"))?;
        let (device, _) = G::open()?;
        let none = || crate::Defaults {
            backbones: &[],
            image_size: 0,
            steps: Steps { warmup: 1, measured: 1 },
            n_query: 1,
        };
        let steps = crate::plan(none(), none()).steps;
        match config.memory.precision {
            Precision::F16 => {
                pin::<G::F16>(&device)?;
                let mut probe = GpuProbe::<G, G::F16>::new(device.clone());
                measure::<G::F16>(&config, &device, steps, &mut probe)
            }
            other => Err(format!("{CHILD}: precision {other:?} runs in the parent")),
        }
    })();
    match result {
        Ok(m) => println!("{}", m.to_json()),
        Err(why) => eprintln!("[memory bench] child: {why}"),
    }
}

pub fn run<G: Gpu>() {
    let file = format!("fsct-memory-bench-{}.md", G::KEY);
    let (device, card) = match G::open() {
        Ok(opened) => opened,
        Err(why) => {
            eprintln!("[memory bench] no usable {} device ({why}): no GPU table", G::NAME);
            return;
        }
    };
    if let Err(why) = pin::<G::F32>(&device) {
        eprintln!("[memory bench] {} device: {why}", G::NAME);
        return;
    }
    let plan = crate::plan(
        crate::Defaults {
            backbones: &["ResNet18", "ResNet34"],
            image_size: 224,
            steps: Steps { warmup: 2, measured: 10 },
            n_query: 16,
        },
        crate::Defaults {
            backbones: &["Conv4"],
            image_size: 16,
            steps: Steps { warmup: 1, measured: 1 },
            n_query: 4,
        },
    );
    let load_before = report::load_average();
    let render = |tables: &str| {
        let info = RunInfo {
            device: format!("{card} ({})", G::NAME),
            image_size: plan.image_size,
            n_query: plan.n_query,
            steps: plan.steps,
            quick: plan.quick,
            load_before: load_before.clone(),
        };
        format!(
            "## Memory optimizations on {}\n\n{}\
             Peak memory in use: cubecl's allocator (bytes in live buffers), sampled when the loss exists \
             (every activation the backward pass needs alive) and after the backward pass (the gradients), the \
             larger kept; inside the backward pass usage can rise somewhat above it. \"reserved\" is what the \
             pools hold (their high-water mark unless memory_cleanup ran); \
             the driver's figure (nvidia-smi, CUDA only) is the whole card (context and other processes \
             included). Each sample syncs the device (that wait counts in the step time; the queries \
             after it do not). Pure f16 rows run in a child process (one float type per \
             device and process). Ratios are to the baseline of the same run.\n{tables}",
            G::NAME,
            report::header(&info)
        )
    };
    let mut tables = String::new();
    for backbone in &plan.backbones {
        let title = format!("{backbone}, {} px, {}", plan.image_size, G::NAME);
        let rows = crate::run_backbone(
            backbone,
            &plan,
            true,
            |config| measure_on::<G>(config, &device, plan.steps),
            |v| {
                v.name
                    .contains("pure f16")
                    .then_some("Autodiff<_<f16>>: parameters, gradients and AdamW state in f16")
            },
            &mut |rows| {
                crate::write_partial(
                    &file,
                    &render(&format!("{tables}{}", report::gpu_table(&title, rows))),
                )
            },
        );
        tables.push_str(&report::gpu_table(&title, &rows));
    }
    crate::write_report(&file, &render(&tables));
}

#[cfg(feature = "cuda")]
pub mod cuda {
    use super::*;
    use burn::backend::cuda::CudaDevice;
    use burn::backend::Cuda;
    use burn::cubecl::cuda::CudaRuntime;

    /// NVIDIA GPUs through CUDA.
    pub struct CudaGpu;

    impl Gpu for CudaGpu {
        const NAME: &'static str = "CUDA";
        const KEY: &'static str = "cuda";
        type R = CudaRuntime;
        type Device = CudaDevice;
        type F32 = Cuda;
        type F16 = Cuda<burn::tensor::f16>;

        /// cubecl-cuda loads the driver, NVRTC and the CUDA libraries at the first operation, and
        /// panics on its device thread when it cannot: probe with panics silenced. The probe's
        /// tensor is created on the backend that pins the device's float type next (f32 in the
        /// parent; a child pins f16 first, and probes through its first measured step instead).
        fn open() -> Result<(CudaDevice, String), String> {
            let device = CudaDevice::default();
            if std::env::var_os(super::CHILD).is_none() {
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let ok = std::panic::catch_unwind(|| {
                    let _ = super::pin::<Cuda>(&CudaDevice::default());
                    burn::tensor::Tensor::<Cuda, 1>::zeros([1], &CudaDevice::default()).into_data()
                })
                .is_ok();
                std::panic::set_hook(hook);
                if !ok {
                    return Err("the NVIDIA driver's libcuda, NVRTC or the CUDA libraries are missing, or there is no GPU".into());
                }
            }
            let card = nvidia_smi("name")
                .unwrap_or_else(|| "unnamed CUDA GPU (nvidia-smi not found)".into());
            Ok((device, card))
        }

        fn driver_used_bytes() -> Option<u64> {
            nvidia_smi("memory.used")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|mib| mib * 1024 * 1024)
        }
    }

    /// One field of the first GPU from nvidia-smi, if it is installed.
    fn nvidia_smi(field: &str) -> Option<String> {
        let out = Command::new("nvidia-smi")
            .args([&format!("--query-gpu={field}"), "--format=csv,noheader,nounits"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.lines().next().map(|l| l.trim().to_string())
    }
}

#[cfg(feature = "vulkan")]
pub mod vulkan {
    use super::*;
    use burn::backend::wgpu::{graphics, init_setup, WgpuDevice, WgpuRuntime};
    use burn::backend::Vulkan;

    /// Any Vulkan GPU through wgpu; also Mesa's software device (lavapipe).
    pub struct VulkanGpu;

    impl Gpu for VulkanGpu {
        const NAME: &'static str = "Vulkan";
        const KEY: &'static str = "vulkan";
        type R = WgpuRuntime;
        type Device = WgpuDevice;
        type F32 = Vulkan;
        type F16 = Vulkan<burn::tensor::f16>;

        /// wgpu's best Vulkan adapter, opened on this thread (a missing driver panics here).
        fn open() -> Result<(WgpuDevice, String), String> {
            let device = WgpuDevice::DefaultDevice;
            // wgpu panics on this thread, so the project's per-thread guard silences it (CUDA's
            // probe above silences every thread: cubecl-cuda panics on its device thread).
            let setup = fsct_transformer::import::quietly(|| {
                init_setup::<graphics::Vulkan>(&WgpuDevice::DefaultDevice, Default::default())
            });
            let info = setup
                .map_err(|_| {
                    "no Vulkan adapter: install the GPU's Vulkan driver, or mesa-vulkan-drivers"
                        .to_string()
                })?
                .adapter
                .get_info();
            let kind =
                if format!("{:?}", info.device_type) == "Cpu" { ", a software device" } else { "" };
            Ok((device, format!("{} ({}{kind})", info.name, info.driver_info)))
        }
    }
}
