//! What each memory optimization saves and costs: training steps of one configuration after
//! another, timed and measured, as the memory guide's "Performance Impact" and "Memory Usage
//! Comparison" tables (spec §4.3), with measured numbers.
//!
//! The configurations, in order: the f32 baseline, then Burn's op-level gradient checkpointing
//! (`Autodiff<_, BalancedCheckpointing>`), segment checkpointing by blocks and by stages
//! (`fsct_backbone::segments`), mixed f16, VIC with the naive d×d covariance, VIC with the Gram
//! form, cache clearing (`memory_cleanup` every step), and all of them combined (block
//! checkpointing, mixed f16, VIC Gram, cleanup). Each runs on its own fresh model through
//! `fsct_train::step::train_step_observed`, the code `fsct-train` runs (mixed-precision copy, VIC,
//! loss scaling, AdamW, cleanup). Episodes are 5-way 5-shot 16-query FS-CT cosine as spec §3,
//! with seeded random-normal pixels (the loader is benched in fsct-episodes). Warm-up steps
//! (which also create AdamW's moments) are not measured.
//!
//! - CPU (Flex): Conv4 and ResNet18 at 84 px. Memory from a counting global allocator: the peak
//!   of heap bytes during the step above those held when it started (activations, gradients,
//!   temporaries), and the absolute heap peak (model, optimizer state and episode included).
//! - GPU (`--features cuda` or `--features vulkan`: both cubecl runtimes, one code path in
//!   `gpu.rs`): ResNet18 and ResNet34 at 224 px, plus the GPU-only pure-f16 rows (`+ pure f16`,
//!   `all combined, pure f16`; those run in a child process, as Burn 0.21 keeps one float type per
//!   device and process). Memory from cubecl's allocator (bytes in use and reserved, sampled after
//!   the backward pass: the step's peak) and, on CUDA, the card's used memory from `nvidia-smi`.
//!
//! Run: `cargo bench --bench memory` (CPU; slow with stock Flex convolution: tens of minutes),
//! `cargo bench --bench memory --features cuda` (or `vulkan`). The tables are printed and written
//! to `target/fsct-memory-bench.md` (CPU) and `target/fsct-memory-bench-{cuda,vulkan}.md` (GPU).
//!
//! Environment:
//! - `FSCT_BENCH_QUICK=1` (or `--quick`): proves it runs (CI): on the CPU Conv4 at 28 px, 1 warm-up
//!   and 2 steps; on a GPU Conv4 at 16 px with 4 queries per class, 1 warm-up and 1 step (a
//!   software device is slow).
//! - `FSCT_BENCH_STEPS=N`, `FSCT_BENCH_WARMUP=N`: measured and warm-up steps (full mode: 3 and 1
//!   on the CPU, 10 and 2 on a GPU).
//! - `FSCT_BENCH_BACKBONES=Conv4,ResNet18`: the backbones; `FSCT_BENCH_SIZE=84`: the image side;
//!   `FSCT_BENCH_QUERIES=16`: query images per class (5-way 5-shot episodes).
//! - `FSCT_BENCH_DEVICES=cpu,vulkan`: where to run (default: the GPU the build has, else `cpu`).
//! - `FSCT_BENCH_CONFIGS=checkpointing,all`: only the configurations whose name contains one of
//!   these (the baseline always runs); `FSCT_BENCH_VERBOSE=1`: each step's time, loss and VIC terms.

// The counters of fsct-train's counting allocator, which the memory planner reads too (the
// predicted column): the same functions as the benches' shared counting_alloc.rs.
mod counting_alloc {
    pub use fsct_train::alloc_count::{peak, reset_peak};
}
#[cfg(any(feature = "cuda", feature = "vulkan"))]
mod gpu;
mod measure;
mod report;
mod variants;

use burn::backend::Flex;

use measure::{measure, CpuProbe, Steps};
use report::{Row, RunInfo};

// Counts the bytes that fsct-train's own allocator serves (huge pages, cached large blocks), so
// step times match the binary's: the binary's own global allocator.
#[global_allocator]
static ALLOC: fsct_train::alloc_count::CountingAlloc<fsct_train::hugepages::HugePageAllocator> =
    fsct_train::alloc_count::CountingAlloc::new(fsct_train::hugepages::HugePageAllocator);

/// What to run on one device.
pub struct Plan {
    pub quick: bool,
    pub backbones: Vec<String>,
    pub image_size: usize,
    pub steps: Steps,
    /// Query images per class (the episodes are 5-way 5-shot).
    pub n_query: usize,
}

/// A device's defaults for the full or the quick mode.
pub struct Defaults<'a> {
    pub backbones: &'a [&'a str],
    pub image_size: usize,
    pub steps: Steps,
    pub n_query: usize,
}

fn env_usize(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value}: expected a whole number"),
    }
}

/// The plan for a device from its full- and quick-mode defaults and the environment.
pub fn plan(full: Defaults, quick_mode: Defaults) -> Plan {
    let quick = std::env::var("FSCT_BENCH_QUICK").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--quick");
    let d = if quick { quick_mode } else { full };
    let backbones = match std::env::var("FSCT_BENCH_BACKBONES") {
        Ok(list) => {
            list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        }
        Err(_) => d.backbones.iter().map(|s| s.to_string()).collect(),
    };
    Plan {
        quick,
        backbones,
        image_size: env_usize("FSCT_BENCH_SIZE").unwrap_or(d.image_size),
        steps: Steps {
            warmup: env_usize("FSCT_BENCH_WARMUP").unwrap_or(d.steps.warmup),
            measured: env_usize("FSCT_BENCH_STEPS").unwrap_or(d.steps.measured).max(1),
        },
        n_query: env_usize("FSCT_BENCH_QUERIES").unwrap_or(d.n_query).max(1),
    }
}

/// Every configuration on `backbone`, baseline first, printing each row as it finishes.
pub fn run_backbone(
    backbone: &str,
    plan: &Plan,
    gpu: bool,
    mut measure_one: impl FnMut(&fsct_train::config::Config) -> Result<measure::Measured, String>,
    extra_note: impl Fn(&variants::Variant) -> Option<&'static str>,
    on_row: &mut dyn FnMut(&[Row]),
) -> Vec<Row> {
    let mut rows = Vec::new();
    let only = std::env::var("FSCT_BENCH_CONFIGS").ok();
    for (i, variant) in variants::all().into_iter().filter(|v| gpu || !v.gpu_only).enumerate() {
        // The baseline always runs: every ratio needs it.
        let chosen = only.as_ref().is_none_or(|only| {
            only.split(',')
                .map(str::trim)
                .any(|name| !name.is_empty() && variant.name.contains(name))
        });
        if i > 0 && !chosen {
            continue;
        }
        let mut config = variants::baseline(backbone, plan.image_size, plan.n_query);
        (variant.apply)(&mut config);
        eprintln!("[memory bench] {backbone} {} px: {} ...", plan.image_size, variant.name);
        // The memory planner's prediction (CPU rows), made before the measurement in the same
        // process; FSCT_BENCH_PLAN=0 leaves it out.
        let predicted =
            (!gpu && std::env::var("FSCT_BENCH_PLAN").map_or(true, |v| v != "0")).then(|| {
                let options = fsct_train::plan::PlanOptions {
                    device: fsct_train::config::DeviceKind::Cpu,
                    quick: false,
                };
                fsct_train::plan::predict(&config, &options)
                    .map(|p| report::Predicted {
                        above_start: p.step_above_start,
                        total: p.step_total,
                    })
                    .map_err(|e| format!("{e:#}"))
            });
        let result = measure_one(&config);
        match &result {
            Ok(m) => eprintln!(
                "[memory bench]   median {:.3} s, peak {:.1} MiB above the step start, {:.1} MiB in all",
                m.median_seconds,
                m.memory.above_start as f64 / 1048576.0,
                m.memory.absolute as f64 / 1048576.0
            ),
            Err(why) => eprintln!("[memory bench]   failed: {why}"),
        }
        let note = [Some(variant.note), extra_note(&variant)]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty());
        rows.push(Row {
            name: variant.name,
            note: note.collect::<Vec<_>>().join("; "),
            result,
            predicted,
        });
        on_row(&rows);
    }
    rows
}

/// Rewrites the report after each row (without printing), so that an interrupted run of tens of
/// minutes still leaves what it measured.
pub fn write_partial(file: &str, text: &str) {
    let _ = std::fs::write(
        report::report_path(file),
        format!("**Partial: the run did not finish.**\n\n{text}"),
    );
}

fn write_report(file: &str, text: &str) {
    println!("{text}");
    let path = report::report_path(file);
    match std::fs::write(&path, text) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn run_cpu() {
    const FILE: &str = "fsct-memory-bench.md";
    let plan = plan(
        Defaults {
            backbones: &["Conv4", "ResNet18"],
            image_size: 84,
            steps: Steps { warmup: 1, measured: 3 },
            n_query: 16,
        },
        Defaults {
            backbones: &["Conv4"],
            image_size: 28,
            steps: Steps { warmup: 1, measured: 2 },
            n_query: 16,
        },
    );
    let load_before = report::load_average();
    let device = Default::default();
    let render = |tables: &str| {
        let info = RunInfo {
            device: format!("{} (CPU, Flex)", report::cpu_name()),
            image_size: plan.image_size,
            n_query: plan.n_query,
            steps: plan.steps,
            quick: plan.quick,
            load_before: load_before.clone(),
        };
        format!(
            "## Memory optimizations on the CPU\n\n{}\
             Peak memory: the heap bytes held at the step's peak above those held when it started (activations, \
             gradients, temporaries), from a counting global allocator; \"heap peak in all\" adds the model, \
             AdamW's state and the episode. Predicted: the memory planner's peak above the step start \
             (`fsct_train::plan::predict`, made before the measurement; `fsct-train plan` prints it by component), \
             and its ratio to the measured peak. CPU time: user + system time of all the process's threads per \
             step (less disturbed than wall time by other work on the machine). Ratios are to the baseline \
             of the same run.\n{tables}",
            report::header(&info)
        )
    };
    let mut tables = String::new();
    for backbone in &plan.backbones {
        let title = format!("{backbone}, {} px, CPU (Flex)", plan.image_size);
        let rows = run_backbone(
            backbone,
            &plan,
            false,
            |config| measure::<Flex>(config, &device, plan.steps, &mut CpuProbe::default()),
            |v| match v.name {
                "+ cache clearing" | "all combined" => Some("memory_cleanup is a no-op on Flex"),
                "+ mixed f16" => Some("f16 computes slower than f32 on the CPU"),
                _ => None,
            },
            &mut |rows| {
                write_partial(
                    FILE,
                    &render(&format!("{tables}{}", report::cpu_table(&title, rows))),
                )
            },
        );
        tables.push_str(&report::cpu_table(&title, &rows));
    }
    write_report(FILE, &render(&tables));
}

fn main() {
    #[cfg(any(feature = "cuda", feature = "vulkan"))]
    if std::env::var_os(gpu::CHILD).is_some() {
        match std::env::var(gpu::CHILD_DEVICE).as_deref() {
            #[cfg(feature = "vulkan")]
            Ok("vulkan") => gpu::run_child::<gpu::vulkan::VulkanGpu>(),
            #[cfg(feature = "cuda")]
            Ok("cuda") => gpu::run_child::<gpu::cuda::CudaGpu>(),
            other => eprintln!("[memory bench] child: unknown device {other:?}"),
        }
        return;
    }
    let default = if cfg!(feature = "vulkan") {
        "vulkan"
    } else if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "cpu"
    };
    let devices = std::env::var("FSCT_BENCH_DEVICES").unwrap_or_else(|_| default.into());
    for device in devices.split(',').map(str::trim) {
        match device {
            "cpu" => run_cpu(),
            #[cfg(feature = "cuda")]
            "cuda" => gpu::run::<gpu::cuda::CudaGpu>(),
            #[cfg(feature = "vulkan")]
            "vulkan" => gpu::run::<gpu::vulkan::VulkanGpu>(),
            #[cfg(not(feature = "cuda"))]
            "cuda" => eprintln!("FSCT_BENCH_DEVICES names cuda but this build has no CUDA: add --features cuda"),
            #[cfg(not(feature = "vulkan"))]
            "vulkan" => eprintln!("FSCT_BENCH_DEVICES names vulkan but this build has no Vulkan: add --features vulkan"),
            other => eprintln!("FSCT_BENCH_DEVICES: unknown device `{other}` (use cpu, cuda, vulkan)"),
        }
    }
}
