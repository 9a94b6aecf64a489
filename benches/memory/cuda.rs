//! The GPU table: the same configurations on `Cuda`, memory from cubecl's allocator and NVML.

use std::process::Command;
use std::time::Instant;

use burn::backend::Cuda;
use burn::cubecl::Runtime;
use burn::cubecl::cuda::CudaRuntime;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::measure::{Probe, StepMemory, Steps, measure};
use crate::report::{self, RunInfo};

type Device = <Cuda as burn::tensor::backend::BackendTypes>::Device;

/// cubecl has no peak counter: the figures are sampled once the gradients exist, when the
/// activations are still alive. That needs a device sync inside the step (the queued forward and
/// backward work is the step's own, so its time counts); the queries after it are taken off the
/// step time.
struct CudaProbe {
    device: Device,
    in_use_before: u64,
    sample: StepMemory,
}

impl CudaProbe {
    fn sync(&self) {
        // Queued (fused) work must run before its buffers show up in the allocator.
        let _ = <Cuda as Backend>::sync(&self.device);
    }

    fn usage(&self) -> Option<(u64, u64)> {
        let usage = CudaRuntime::client(&self.device).memory_usage().ok()?;
        Some((usage.bytes_in_use, usage.bytes_reserved))
    }
}

impl Probe for CudaProbe {
    fn step_start(&mut self) {
        self.sync();
        self.in_use_before = self.usage().map_or(0, |(in_use, _)| in_use);
        self.sample = StepMemory::default();
    }

    fn after_backward(&mut self) {
        self.sync();
        let started = Instant::now();
        if let Some((in_use, reserved)) = self.usage() {
            self.sample.absolute = in_use;
            self.sample.above_start = in_use.saturating_sub(self.in_use_before);
            self.sample.reserved = Some(reserved);
        }
        self.sample.nvml = nvidia_smi("memory.used").and_then(|s| s.parse::<u64>().ok()).map(|mib| mib * 1024 * 1024);
        self.sample.overhead += started.elapsed();
    }

    fn step_end(&mut self) -> StepMemory {
        std::mem::take(&mut self.sample)
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

/// Burn 0.21 panics in a worker thread at the first CUDA op when no GPU can be used: probe once,
/// quietly.
fn usable_device() -> Option<Device> {
    let device = Device::default();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| Tensor::<Cuda, 1>::zeros([1], &Device::default()).into_data()).is_ok();
    std::panic::set_hook(hook);
    ok.then_some(device)
}

pub fn run() {
    const FILE: &str = "fsct-memory-bench-cuda.md";
    let Some(device) = usable_device() else {
        eprintln!("[memory bench] no usable CUDA GPU (driver or libcuda missing): no GPU table");
        return;
    };
    let plan = crate::plan(&["ResNet18", "ResNet34"], 224, Steps { warmup: 2, measured: 10 });
    let load_before = report::load_average();
    let card = nvidia_smi("name").unwrap_or_else(|| "unnamed CUDA GPU (nvidia-smi not found)".into());
    let render = |tables: &str| {
        let info = RunInfo {
            device: format!("{card} (CUDA)"),
            image_size: plan.image_size,
            steps: plan.steps,
            quick: plan.quick,
            load_before: load_before.clone(),
        };
        format!(
            "## Memory optimizations on CUDA\n\n{}\
             Peak memory in use: cubecl's allocator (bytes in live buffers) sampled after the backward pass, \
             where activations and gradients are all alive; \"reserved\" is what its pools hold at that moment; \
             nvidia-smi's figure is the whole card (CUDA context and other processes included). The sampling \
             syncs the device after the backward pass (that wait counts in the step time; the queries after it \
             do not). Ratios are to the baseline of the same run.\n{tables}",
            report::header(&info)
        )
    };
    let mut tables = String::new();
    for backbone in &plan.backbones {
        let title = format!("{backbone}, {} px, CUDA", plan.image_size);
        let rows = crate::run_backbone(
            backbone,
            &plan,
            |config| {
                let mut probe = CudaProbe { device: device.clone(), in_use_before: 0, sample: StepMemory::default() };
                measure::<Cuda>(config, &device, plan.steps, &mut probe)
            },
            |_| None,
            &mut |rows| crate::write_partial(FILE, &render(&format!("{tables}{}", report::gpu_table(&title, rows)))),
        );
        tables.push_str(&report::gpu_table(&title, &rows));
    }
    crate::write_report(FILE, &render(&tables));
}
