//! The binary's GPU backends (part of `fsct-train`, declared in `main.rs`; not in the library,
//! which stays generic over `B: Backend`).
//!
//! `Cuda` (`--features cuda`) and `Vulkan` (`--features vulkan`, wgpu compiling to SPIR-V) are
//! both cubecl runtimes: the same memory pools, the same kernels compiled at run time, the same
//! composed (non-fused) model ops. What is common is written once here over [`CubeGpu`]: the
//! backend type for each memory setting ([`train`]), and how a device failure ends the run
//! ([`stop_on_device_failure`]). What is specific to one runtime — opening its device — sits in
//! its own module ([`cuda`], [`vulkan`]).

// Without a GPU feature only `train_on` (which then explains how to get one) is used.
#![cfg_attr(not(any(feature = "cuda", feature = "vulkan")), allow(dead_code, unused_imports))]

use anyhow::Result;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::Autodiff;
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::FloatDType;
use fsct_train::config::{Checkpointing, Config, DeviceKind};
use fsct_train::error::InputError;
use fsct_train::train::{run_experiment, RunSummary};

/// The device type of a GPU runtime.
pub type Device<G> = <<G as CubeGpu>::F32 as BackendTypes>::Device;

/// A cubecl GPU runtime as the trainer uses it.
pub trait CubeGpu {
    /// As users know it: `CUDA`, `Vulkan`.
    const NAME: &'static str;
    /// The backend with f32 floats (f32 and mixed precisions).
    type F32: Backend;
    /// The backend with f16 floats (`memory.precision = "f16"`).
    type F16: Backend<Device = Device<Self>>;

    /// Opens the default device without creating a tensor on it (the first tensor fixes the
    /// device's float type, see [`start`]), or says what the machine lacks (an [`InputError`]).
    fn open() -> Result<Device<Self>>;

    /// What to say when the device cannot run a first operation.
    fn unusable(why: &str) -> String;

    /// Trains with pure bf16 (`memory.precision = "bf16"`) where the runtime has bf16 arithmetic.
    fn train_bf16(config: &Config, device: &Device<Self>) -> Result<RunSummary>;
}

/// Trains on `G`'s default device on the backend whose float type is the precision's master
/// dtype ([`fsct_train::config::Precision::master_dtype`]): `Autodiff<G::F32>` (f32, mixed
/// precision), `Autodiff<G::F16>` (pure f16) or `G`'s bf16 backend (pure bf16), with
/// `BalancedCheckpointing` when gradient checkpointing is on.
pub fn train<G: CubeGpu>(config: &Config) -> Result<RunSummary> {
    let device = G::open()?;
    let master = config.memory.precision.master_dtype();
    match master {
        FloatDType::F16 => start::<G, G::F16>(&device)?,
        FloatDType::BF16 => {}
        _ => start::<G, G::F32>(&device)?,
    }
    stop_on_device_failure(G::NAME, config);
    // Segment checkpointing runs on plain autodiff: it recomputes whole blocks itself.
    match (master, config.memory.gradient_checkpoint == Checkpointing::Balanced) {
        (FloatDType::F16, true) => {
            run_experiment::<Autodiff<G::F16, BalancedCheckpointing>>(config, &device)
        }
        (FloatDType::F16, false) => run_experiment::<Autodiff<G::F16>>(config, &device),
        (FloatDType::BF16, _) => G::train_bf16(config, &device),
        (_, true) => run_experiment::<Autodiff<G::F32, BalancedCheckpointing>>(config, &device),
        (_, false) => run_experiment::<Autodiff<G::F32>>(config, &device),
    }
}

/// Fixes the device's float type to `B`'s and runs a first operation on it.
///
/// Burn 0.21 keeps one default float type per device, set by the first tensor any backend
/// creates there: `Cuda` and `Cuda<f16>` (or `Vulkan` and `Vulkan<f16>`) share the device, so a
/// probe on the f32 backend would silently turn a pure-f16 run into an f32 one. And cubecl loads
/// the driver (CUDA: libcuda, NVRTC) at the first operation, panicking on its device thread when
/// it cannot: the probe runs with panics silenced and becomes an error.
pub fn start<G: CubeGpu + ?Sized, B: Backend<Device = Device<G>>>(
    device: &Device<G>,
) -> Result<()> {
    use burn::tensor::{get_device_settings, set_default_dtypes, DType, Element, Tensor};
    let float: DType = <B::FloatElem as Element>::dtype();
    let int: DType = <B::IntElem as Element>::dtype();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Already set (a second run in one process) is fine if it is the same type; checked below.
        let _ = set_default_dtypes::<B>(device, float, int);
        let settings = get_device_settings::<B>(device);
        Tensor::<B, 1>::zeros([1], device).into_data();
        settings.float_dtype
    }));
    std::panic::set_hook(hook);
    match probe {
        Ok(chosen) if DType::from(chosen) == float => Ok(()),
        Ok(chosen) => Err(anyhow::anyhow!(
            "internal error: the {} device already computes in {chosen:?}, not {float:?}",
            G::NAME
        )),
        Err(payload) => Err(InputError::new(G::unusable(&panic_text(&*payload))).into()),
    }
}

/// From here on, a panic that reports the device out of memory — on any thread: cubecl allocates
/// on its device thread — ends the process with one line of advice and exit code 1, and any
/// other panic on a cubecl device thread ends it with exit code 1 too (the training thread would
/// otherwise wait for that thread forever). A panic elsewhere goes to the hook installed before.
pub fn stop_on_device_failure(name: &'static str, config: &Config) {
    let advice = memory_advice(config);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = panic_text(info.payload());
        if is_out_of_memory(&message) {
            eprintln!(
                "error: out of memory on the {name} device ({}); {advice} (no result was written)",
                summary(&message)
            );
            exit_now(1);
        }
        previous(info);
        if std::thread::current().name().is_some_and(|n| n.starts_with("DS")) {
            exit_now(1);
        }
    }));
}

/// Ends the process from inside a panic hook, on whatever thread: without running exit handlers
/// or thread-local destructors, which other threads may still be using (`std::process::exit`
/// there aborts with "thread panicked while processing panic"). The run folder's lock is released
/// by the kernel; stdout is flushed first.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(target_os = "linux")]
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(target_os = "linux"))]
    std::process::exit(code)
}

/// The text of a panic's payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Whether a panic message reports an allocation the device could not make: cubecl's
/// `IoError::BufferTooBig` ("can't allocate buffer of size: N", which cubecl-cuda returns for
/// `CUDA_ERROR_OUT_OF_MEMORY`), the CUDA error itself, wgpu's and Vulkan's out-of-memory errors.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "can't allocate buffer",
        "out of memory",
        "out_of_memory",
        "outofmemory",
        "not enough memory",
        "buffertoobig",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The cause in a few words: the first line, without `unwrap`'s preamble; sizes in MiB.
fn summary(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    let line = line.rsplit("value: ").next().unwrap_or(line).trim();
    if let Some(size) = line
        .strip_prefix("can't allocate buffer of size: ")
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        return format!("a buffer of {:.1} MiB could not be allocated", size as f64 / 1048576.0);
    }
    line.chars().take(200).collect()
}

/// What to change, naming the switches that are not on yet and the current sizes.
fn memory_advice(config: &Config) -> String {
    let mut switches = Vec::new();
    if config.memory.gradient_checkpoint.segments().is_none() {
        switches.push("memory.gradient_checkpoint = \"blocks\"".to_string());
    }
    // A run computing in f32 can halve its activations with mixed precision.
    if config.memory.precision.compute_dtype() == FloatDType::F32 {
        switches.push(
            "memory.precision = \"mixed-f16\" (or \"f16\" for half the parameter memory too)"
                .to_string(),
        );
    }
    let e = &config.episodes;
    switches.push(format!("a smaller data.image_size (now {} px)", config.image_size()));
    switches.push(format!(
        "a smaller episode (now {} × ({} + {}) images: lower episodes.n_query first)",
        e.n_way, e.k_shot, e.n_query
    ));
    format!(
        "the run needs more memory than the device has: use {}; the README's memory features and \
         configs/low_8gb.toml show them together",
        switches.join(", ")
    )
}

#[cfg(feature = "cuda")]
pub mod cuda {
    use super::*;
    use burn::backend::Cuda;
    use burn::tensor::{bf16, f16};

    /// NVIDIA GPUs through CUDA.
    pub struct CudaGpu;

    impl CubeGpu for CudaGpu {
        const NAME: &'static str = "CUDA";
        type F32 = Cuda;
        type F16 = Cuda<f16>;

        /// cubecl-cuda loads the driver, NVRTC and the CUDA libraries at the first operation
        /// ([`start`] probes it): nothing to do here.
        fn open() -> Result<Device<Self>> {
            Ok(Device::<Self>::default())
        }

        fn unusable(why: &str) -> String {
            format!(
                "run.device = \"cuda\" but no usable CUDA GPU was found ({}): the NVIDIA driver's libcuda, NVRTC or \
                 the CUDA libraries are missing, or there is no GPU; use --device vulkan or --device cpu",
                why.lines().next().unwrap_or("the first operation failed")
            )
        }

        fn train_bf16(config: &Config, device: &Device<Self>) -> Result<RunSummary> {
            start::<Self, Cuda<bf16>>(device)?;
            if config.memory.gradient_checkpoint == Checkpointing::Balanced {
                run_experiment::<Autodiff<Cuda<bf16>, BalancedCheckpointing>>(config, device)
            } else {
                run_experiment::<Autodiff<Cuda<bf16>>>(config, device)
            }
        }
    }
}

#[cfg(feature = "vulkan")]
pub mod vulkan {
    use super::*;
    use burn::backend::wgpu::{
        graphics, init_setup, MemoryConfiguration, RuntimeOptions, WgpuDevice,
    };
    use burn::backend::Vulkan;
    use burn::tensor::f16;
    use cubecl_runtime::memory_management::{MemoryPoolOptions, PoolType};

    /// Caps the size of one device allocation (bytes): a run that needs a larger buffer fails
    /// as out of memory. For tests of the out-of-memory path on a device with plenty of memory
    /// (cubecl 0.10 can cap one allocation, not the total).
    pub const MAX_ALLOCATION_VAR: &str = "FSCT_VULKAN_MAX_ALLOCATION";

    /// Any Vulkan GPU through wgpu (SPIR-V kernels); also Mesa's software device.
    pub struct VulkanGpu;

    impl CubeGpu for VulkanGpu {
        const NAME: &'static str = "Vulkan";
        type F32 = Vulkan;
        type F16 = Vulkan<f16>;

        /// wgpu's best Vulkan adapter (`CUBECL_WGPU_DEFAULT_DEVICE`, e.g. `DiscreteGpu(1)`,
        /// picks another), opened on this thread so that a missing driver is an error here.
        fn open() -> Result<Device<Self>> {
            let device = WgpuDevice::DefaultDevice;
            let mut options = RuntimeOptions::default();
            if let Some(cap) = max_allocation()? {
                tracing::warn!(
                    "{MAX_ALLOCATION_VAR}={cap}: no device allocation may exceed {cap} bytes"
                );
                options.memory_config = MemoryConfiguration::Custom {
                    pool_options: vec![MemoryPoolOptions {
                        pool_type: PoolType::ExclusivePages { max_alloc_size: cap },
                        dealloc_period: None,
                    }],
                };
            }
            let setup = fsct_transformer::import::quietly(|| init_setup::<graphics::Vulkan>(&device, options)).map_err(|why| {
                InputError::new(format!(
                    "run.device = \"vulkan\" but no usable Vulkan device was found ({}): install the GPU's Vulkan \
                     driver (or Mesa's software device, Debian/Ubuntu package mesa-vulkan-drivers), or use --device cpu",
                    why.lines().next().unwrap_or_default()
                ))
            })?;
            let info = setup.adapter.get_info();
            tracing::info!(adapter = %info.name, driver = %info.driver, driver_info = %info.driver_info, "Vulkan device");
            if format!("{:?}", info.device_type) == "Cpu" {
                tracing::warn!(
                    "{} is a software Vulkan device: correct, but far slower than a GPU",
                    info.name
                );
            }
            Ok(device)
        }

        fn unusable(why: &str) -> String {
            format!(
                "run.device = \"vulkan\": the Vulkan device cannot run a first operation ({})",
                why.lines().next().unwrap_or("unknown cause")
            )
        }

        fn train_bf16(_config: &Config, _device: &Device<Self>) -> Result<RunSummary> {
            // `Config::validate` refuses bf16 on Vulkan first; kept as an error, not a panic.
            Err(InputError::new("memory.precision = \"bf16\" needs run.device = \"cuda\": Vulkan has no bf16 arithmetic").into())
        }
    }

    fn max_allocation() -> Result<Option<u64>> {
        let Ok(value) = std::env::var(MAX_ALLOCATION_VAR) else { return Ok(None) };
        match value.trim().parse::<u64>() {
            Ok(bytes) if bytes > 0 => Ok(Some(bytes)),
            _ => Err(InputError::new(format!(
                "{MAX_ALLOCATION_VAR}=`{value}`: expected a number of bytes above 0, or unset it"
            ))
            .into()),
        }
    }
}

/// Trains on the device `config.run.device` names (a GPU one), or says which feature the build lacks.
pub fn train_on(config: &Config) -> Result<RunSummary> {
    match config.run.device {
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => train::<cuda::CudaGpu>(config),
        #[cfg(feature = "vulkan")]
        DeviceKind::Vulkan => train::<vulkan::VulkanGpu>(config),
        other => Err(InputError::new(format!(
            "run.device = \"{0}\" but this build has no {0} support: rebuild with `cargo build --release --features {0}`, \
             or use --device cpu",
            other.name()
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsct_train::config::Precision;

    #[test]
    fn out_of_memory_messages_are_recognised() {
        let cubecl = "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 10485760\n   0: backtrace";
        assert!(is_out_of_memory(cubecl));
        assert_eq!(summary(cubecl), "a buffer of 10.0 MiB could not be allocated");
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(is_out_of_memory(
            "wgpu error: Validation Error\n\nCaused by:\n  Not enough memory left."
        ));
        assert!(!is_out_of_memory("index out of bounds: the len is 3 but the index is 7"));
    }

    #[test]
    fn the_advice_names_the_switches_not_yet_on() {
        let mut config = Config::default();
        let advice = memory_advice(&config);
        assert!(
            advice.contains("gradient_checkpoint = \"blocks\"") && advice.contains("mixed-f16"),
            "{advice}"
        );
        assert!(advice.contains("image_size") && advice.contains("n_query"), "{advice}");
        config.memory.gradient_checkpoint = Checkpointing::Blocks;
        config.memory.precision = Precision::MixedF16;
        let advice = memory_advice(&config);
        assert!(
            !advice.contains("gradient_checkpoint") && !advice.contains("mixed-f16"),
            "{advice}"
        );
    }
}
