//! The fsct side of the side-by-side comparison with the PyTorch reference
//! (`../shared/reference/fsct_torch.py bench`): the same model, the same episode shape, the same
//! step (forward, cross-entropy, backward, AdamW) and the same evaluation step (forward and argmax
//! with batch norm on running statistics), timed the same way, printed as one JSON line with the
//! same fields.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --bench vs_pytorch -- --backbone Conv4 --variant cosine \
//!     --way 5 --shot 5 --query 16 --image 84 --episodes 15 --warmup 3
//! ```
//! `tools/compare_pytorch.py` alternates this and the PyTorch script and writes the table.
//! `--backbone ResNet18` (or 34) trains a torchvision-layout ResNet end to end, against
//! `tools/torch_resnet.py --backbone ResNet18|ResNet34` on the PyTorch side.
//!
//! `--device cuda` (build with `--features cuda`) or `--device vulkan` (`--features vulkan`) runs
//! the same steps on the GPU; `tools/gpu-check.sh` pairs it with `tools/torch_gpu_bench.py`.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fsct::backbone::{Backbone, BackboneName};
use fsct::transformer::{episode_loss, AttentionVariant, FewShotModel, FsctConfig};

#[global_allocator]
static GLOBAL: fsct_train::hugepages::HugePageAllocator = fsct_train::hugepages::HugePageAllocator;

struct Args {
    backbone: String,
    variant: String,
    way: usize,
    shot: usize,
    query: usize,
    image: usize,
    episodes: usize,
    warmup: usize,
    device: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        backbone: "Conv4".into(),
        variant: "cosine".into(),
        way: 5,
        shot: 5,
        query: 16,
        image: 84,
        episodes: 15,
        warmup: 3,
        device: "cpu".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| fail(&format!("{} needs a number, got `{value}`", argv[i])))
        };
        match argv[i].as_str() {
            "--backbone" => a.backbone = value.clone(),
            "--variant" => a.variant = value.clone(),
            "--way" => a.way = number(),
            "--shot" => a.shot = number(),
            "--query" => a.query = number(),
            "--image" => a.image = number(),
            "--episodes" => a.episodes = number(),
            "--warmup" => a.warmup = number(),
            "--device" => a.device = value.clone(),
            // `cargo bench` passes `--bench`; ignore it and anything unknown without a value.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Bad arguments: one line and exit code 2, as `fsct-train` does.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

fn median(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
    serde_json::json!({ "median": median, "min": v[0], "max": v[v.len() - 1] })
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let a = parse_args();
    if let Some(mb) =
        std::env::var("FSCT_ALLOC_CACHE_MB").ok().and_then(|v| v.parse::<usize>().ok())
    {
        fsct_train::hugepages::HugePageAllocator::set_cache_limit(mb << 20);
    }
    match a.device.as_str() {
        "cpu" => run::<Autodiff<Flex>>(&a, &Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => {
            type G = burn::backend::Cuda;
            let device = Default::default();
            pin_f32::<G>(&device);
            run::<Autodiff<G>>(&a, &device)
        }
        #[cfg(feature = "vulkan")]
        "vulkan" => {
            use burn::backend::wgpu::{graphics, init_setup, WgpuDevice};
            type G = burn::backend::Vulkan;
            let device = WgpuDevice::DefaultDevice;
            init_setup::<graphics::Vulkan>(&device, Default::default());
            pin_f32::<G>(&device);
            run::<Autodiff<G>>(&a, &device)
        }
        other => fail(&format!(
            "--device {other}: use cpu, or cuda / vulkan in a build with that feature"
        )),
    }
}

/// The device computes in f32 (Burn 0.21 fixes a device's float type at its first tensor).
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn pin_f32<G: Backend>(device: &G::Device) {
    let _ = burn::tensor::set_default_dtypes::<G>(
        device,
        burn::tensor::DType::F32,
        burn::tensor::DType::I32,
    );
}

fn run<B: AutodiffBackend>(a: &Args, device: &B::Device) {
    B::seed(device, 0);
    let name: BackboneName =
        a.backbone.parse().unwrap_or_else(|e| fail(&format!("--backbone {}: {e}", a.backbone)));
    // ResNets are trained end to end here (BatchNorm in train/eval modes), as
    // `tools/torch_resnet.py` trains its PyTorch twin; no effect on Conv nets.
    let backbone = name.init_with::<B>(true, device);
    let dim = backbone.feature_dim([3, a.image, a.image]);
    let variant = match a.variant.as_str() {
        "softmax" => AttentionVariant::Softmax,
        _ => AttentionVariant::Cosine,
    };
    let mut model =
        FsctConfig::new(a.way, a.shot, dim).with_variant(variant).init(backbone, device);
    let mut optim = AdamWConfig::new().with_weight_decay(1e-5).with_epsilon(1e-8).init();
    let episodes: Vec<Tensor<B, 5>> = (0..4)
        .map(|_| {
            Tensor::random(
                [a.way, a.shot + a.query, 3, a.image, a.image],
                Distribution::Normal(0.0, 1.0),
                device,
            )
        })
        .collect();
    let (mut train, mut evals) = (Vec::new(), Vec::new());
    for i in 0..a.warmup + a.episodes {
        let x = episodes[i % episodes.len()].clone();
        let t0 = Instant::now();
        let out = model.forward_episode(x.clone());
        let loss = episode_loss(out.scores, a.query);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        // Flex is synchronous, but make the timing honest on any backend.
        B::sync(device).ok();
        let t1 = Instant::now();
        let eval_model = model.valid();
        let scores = eval_model.forward_episode(x.inner()).scores;
        let _pred = scores.argmax(1).into_data();
        let t2 = Instant::now();
        if i >= a.warmup {
            train.push((t1 - t0).as_secs_f64());
            evals.push((t2 - t1).as_secs_f64());
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse::<usize>().ok());
    println!(
        "{}",
        serde_json::json!({
            "impl": "fsct", "burn": "0.21.0", "device": a.device, "threads": threads, "backbone": a.backbone, "variant": a.variant,
            "way": a.way, "shot": a.shot, "query": a.query, "image": a.image,
            "train_step_s": median(train), "eval_step_s": median(evals), "peak_rss_mib": (peak_rss_mib() * 10.0).round() / 10.0,
        })
    );
}
