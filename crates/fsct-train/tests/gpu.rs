//! The GPU path, on the GPU runtime the build has: Vulkan (`--features vulkan`; in CI Mesa's
//! software device, lavapipe) or CUDA (`--features cuda`, run by `tools/gpu-check.sh`). Both are
//! cubecl runtimes and take the composed model ops (fsct's fused kernels are Flex-only), so each
//! test holds them to Flex, the CPU backend the rest of the suite checks against the reference.
//!
//! Small shapes throughout: the software device is slow. What passes here proves the GPU code
//! computes the right thing (forward, gradients, half precision, loss scaling, checkpointing,
//! cleanup, the binary's GPU and out-of-memory paths); it proves nothing about speed or about the
//! memory figures of a real card.
//!
//! Pure f16 (`Vulkan<f16>`, `Cuda<f16>`) is in `tests/gpu_half.rs`: Burn 0.21 keeps one float type
//! per device and process, so this binary pins the device to f32 first.
//!
//! `cargo test -p fsct-train --features vulkan --test gpu --test gpu_half -- --nocapture` prints
//! every comparison's error.
#![cfg(any(feature = "vulkan", feature = "cuda"))]

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use fsct_train::config::{Checkpointing, Config, Method, Precision};
use fsct_train::model::{build_model, AnyModel};
use fsct_train::step::{new_optimizer, new_trainer_state, step_gradients, train_step};
use fsct_train::weights::{load_model_bytes, model_bytes};
use fsct_transformer::{episode_loss, FewShotModel};

#[cfg(feature = "vulkan")]
mod gpu {
    use burn::backend::wgpu::{graphics, init_setup, WgpuDevice};

    /// The backend under test, with float type `F`.
    pub type G<F = f32> = burn::backend::Vulkan<F>;
    /// Its cubecl runtime (for the allocator's figures).
    pub type Runtime = burn::backend::wgpu::WgpuRuntime;
    /// `run.device` for the binary.
    pub const DEVICE: &str = "vulkan";

    /// The default Vulkan device, opened once.
    pub fn device() -> WgpuDevice {
        static OPENED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let opened = OPENED.get_or_init(|| {
            fsct_transformer::import::quietly(|| {
                let setup =
                    init_setup::<graphics::Vulkan>(&WgpuDevice::DefaultDevice, Default::default());
                let info = setup.adapter.get_info();
                eprintln!(
                    "GPU tests on Vulkan: {} ({}, {})",
                    info.name, info.driver, info.driver_info
                );
                super::pin_f32(&WgpuDevice::DefaultDevice);
            })
        });
        if let Err(why) = opened {
            panic!("no usable Vulkan device ({why}); install one, e.g. `apt-get install mesa-vulkan-drivers`");
        }
        WgpuDevice::DefaultDevice
    }
}

#[cfg(all(feature = "cuda", not(feature = "vulkan")))]
mod gpu {
    /// The backend under test, with float type `F`.
    pub type G<F = f32> = burn::backend::Cuda<F>;
    /// Its cubecl runtime (for the allocator's figures).
    pub type Runtime = burn::cubecl::cuda::CudaRuntime;
    /// `run.device` for the binary.
    pub const DEVICE: &str = "cuda";

    /// The default CUDA device, its float type pinned to f32.
    pub fn device() -> burn::backend::cuda::CudaDevice {
        static PINNED: std::sync::Once = std::sync::Once::new();
        PINNED.call_once(|| super::pin_f32(&Default::default()));
        Default::default()
    }
}

/// Fixes the device's float type to f32 before any tensor is created there (see the header).
fn pin_f32(device: &<G as burn::tensor::backend::BackendTypes>::Device) {
    use burn::tensor::DType;
    burn::tensor::set_default_dtypes::<G>(device, DType::F32, DType::I32)
        .expect("the device's float type is not fixed yet");
}

use gpu::G;

type Cpu = Autodiff<Flex>;

/// One GPU test at a time: the device (and on lavapipe the CPU cores) are shared, and the
/// allocator figures must not see another test's tensors.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small FS-CT (or CTX) config: 3-way 2-shot 2-query, a narrow transformer.
fn small(backbone: &str, side: usize) -> Config {
    let mut c = Config::default();
    c.model.backbone = backbone.parse().unwrap();
    c.model.train_backbone = true;
    (c.model.heads, c.model.dim_head, c.model.mlp_dim) = (2, 16, 32);
    (c.episodes.n_way, c.episodes.k_shot, c.episodes.n_query) = (3, 2, 2);
    c.data.image_size = Some(side);
    c.memory.cleanup_every = 0;
    c.validate(Path::new("gpu-test")).unwrap();
    c
}

/// A seeded episode (`[N, K+M, 3, side, side]`), roughly normal pixels.
fn episode(config: &Config, seed: u64) -> TensorData {
    let e = &config.episodes;
    let side = config.image_size();
    let shape = [e.n_way, e.k_shot + e.n_query, 3, side, side];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let n: usize = shape.iter().product();
    let values = (0..n).map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0).collect::<Vec<f32>>();
    TensorData::new(values, shape)
}

/// The episode with every value moved by one ulp (up and down alternately).
fn nudge(x: &TensorData) -> TensorData {
    let values = x.clone().convert::<f32>().into_vec::<f32>().unwrap();
    let moved = values
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { v.next_up() } else { v.next_down() })
        .collect::<Vec<f32>>();
    TensorData::new(moved, x.shape.clone())
}

/// The model `config` builds on Flex, seeded, and the same weights on backend `B`.
fn twins<B: AutodiffBackend>(config: &Config, device: &B::Device) -> (AnyModel<Cpu>, AnyModel<B>) {
    let cpu = Default::default();
    Cpu::seed(&cpu, 7);
    let reference = build_model::<Cpu>(config, &cpu).unwrap();
    let bytes = model_bytes(&reference).unwrap();
    let model = load_model_bytes(
        build_model::<B>(config, device).unwrap(),
        &bytes,
        "the Flex model",
        device,
    )
    .unwrap();
    (reference, model)
}

/// Every float tensor as f32 values.
fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Gradients of every trained parameter, in module order.
struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            self.out.push(values(grad));
        }
    }
}

/// Every float parameter's values, in module order.
struct Params(Vec<Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Params {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(values(param.val()));
    }
}

/// Training-mode scores, loss and parameter gradients, then evaluation-mode scores.
struct Pass {
    scores: Vec<f32>,
    loss: f32,
    grads: Vec<Vec<f32>>,
    eval_scores: Vec<f32>,
}

fn pass<B: AutodiffBackend>(
    config: &Config,
    model: &AnyModel<B>,
    x: &TensorData,
    device: &B::Device,
) -> Pass {
    let x = Tensor::<B, 5>::from_data(x.clone(), device);
    let out = model.forward_episode(x.clone());
    let loss = episode_loss(out.scores.clone(), config.episodes.n_query);
    let grads = loss.backward();
    let mut visitor = Grads::<B> { grads: &grads, out: Vec::new() };
    model.visit(&mut visitor);
    let eval_scores = values(model.valid().forward_episode(x.inner()).scores);
    Pass { scores: values(out.scores), loss: values(loss)[0], grads: visitor.out, eval_scores }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>().sqrt()
}

/// The relative error ‖got − want‖ / ‖want‖ (infinite if `got` holds a non-finite value).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    (distance(got, want) / norm(want).max(1e-30)) as f32
}

/// Gradient errors: of the whole gradient (every parameter's, as one vector: the direction a
/// step takes), and the worst single parameter's, each against its own norm — except that a
/// gradient that is zero up to rounding (a convolution bias before a batch norm, which cancels
/// it) is held to 1e-4 of the largest parameter gradient instead, since its own norm would
/// divide rounding noise by rounding noise.
fn grad_errors(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "the same parameters have gradients");
    if got.iter().flatten().any(|v| !v.is_finite()) {
        return (f32::INFINITY, f32::INFINITY);
    }
    let largest = want.iter().map(|w| norm(w)).fold(0f64, f64::max);
    let (mut total_diff, mut total_norm, mut worst) = (0f64, 0f64, 0f64);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let (diff, n) = (distance(a, b), norm(b));
        total_diff += diff * diff;
        total_norm += n * n;
        let err = diff / n.max(1e-4 * largest).max(1e-30);
        if std::env::var_os("FSCT_GPU_TEST_VERBOSE").is_some() {
            eprintln!("  gradient {i}: {} values, norm {n:.2e}, relative error {err:.2e}", b.len());
        }
        worst = worst.max(err);
    }
    ((total_diff.sqrt() / total_norm.sqrt().max(1e-30)) as f32, worst as f32)
}

/// f32 on the GPU against f32 on Flex, as relative errors ‖a − b‖ / ‖b‖ of the scores and the
/// loss. Each bound is this or, where larger, four times what moving every input value by one
/// ulp does to Flex's own result: batch norm over a 12-image batch at 16 px is ill-conditioned
/// (on Flex alone, one ulp of input moves a ResNet34's scores by 1.5e-4), and the GPU reduces in
/// another order.
const F32_TOLERANCE: f32 = 1e-4;
/// The same for the whole gradient (every parameter's, as one vector: the direction of the step).
/// Looser because Vulkan has no erf: cubecl's polynomial (|error| ≤ 1.5e-7) stands in for it in
/// FS-CT's GELU, which alone moves the gradient by up to 3e-4 (CTX, without GELU, agrees to 4e-6).
const F32_GRADIENT_TOLERANCE: f32 = 5e-4;
/// The worst single parameter's gradient (see [`grad_errors`]): far above rounding, far below a
/// wrong gradient (the shortcut bug this suite found put ResNet gradients off by 65–97 %).
const F32_PARAM_TOLERANCE: f32 = 1e-2;

#[test]
fn every_backbone_agrees_with_flex_forward_and_gradients() {
    let _guard = serial();
    let device = gpu::device();
    // (backbone, image side, adjustment): sizes as small as each layout allows.
    let cases: &[(&str, usize, fn(&mut Config))] = &[
        ("Conv4", 16, |_| {}),
        ("Conv6", 16, |_| {}),
        ("Conv4NP", 16, |_| {}),
        ("Conv6NP", 16, |_| {}),
        ("Conv4S", 16, |_| {}),
        ("Conv6S", 16, |_| {}),
        ("Conv4SNP", 16, |_| {}),
        ("Conv6SNP", 16, |_| {}),
        ("ResNet12", 16, |_| {}),
        ("ResNet18", 16, |_| {}),
        ("ResNet34", 16, |_| {}),
        ("ResNet18", 16, |c| c.model.feti = true),
        ("ResNet34", 16, |c| c.model.feti = true),
        // The reference's frozen torchvision ResNet (batch statistics, no backbone gradients).
        ("ResNet18", 16, |c| c.model.train_backbone = false),
        // The other heads on one backbone.
        ("Conv4", 16, |c| c.model.method = Method::FsctSoftmax),
        ("Conv4", 16, |c| c.model.method = Method::CtxCosine),
        ("Conv4", 16, |c| c.model.method = Method::CtxSoftmax),
    ];
    let mut failures = Vec::new();
    for (i, (backbone, side, adjust)) in cases.iter().enumerate() {
        let started = Instant::now();
        let mut config = small(backbone, *side);
        adjust(&mut config);
        let (reference, model) = twins::<Autodiff<G>>(&config, &device);
        // A second Flex copy for the one-ulp run (a training pass moves the running statistics).
        let cpu = Default::default();
        let copy = load_model_bytes(
            build_model::<Cpu>(&config, &cpu).unwrap(),
            &model_bytes(&reference).unwrap(),
            "copy",
            &cpu,
        )
        .unwrap();
        let x = episode(&config, i as u64);
        let want = pass(&config, &reference, &x, &Default::default());
        let got = pass(&config, &model, &x, &device);
        let (gradient, worst_param) = grad_errors(&got.grads, &want.grads);
        // How far one ulp of input moves Flex itself: the problem's own conditioning.
        let nudged = pass(&config, &copy, &nudge(&x), &cpu);
        let ulp = |err: f32| 4.0 * err;
        let errors = [
            (
                "train scores",
                rel_err(&got.scores, &want.scores),
                F32_TOLERANCE.max(ulp(rel_err(&nudged.scores, &want.scores))),
            ),
            (
                "loss",
                rel_err(&[got.loss], &[want.loss]),
                F32_TOLERANCE.max(ulp(rel_err(&[nudged.loss], &[want.loss]))),
            ),
            (
                "gradient",
                gradient,
                F32_GRADIENT_TOLERANCE.max(ulp(grad_errors(&nudged.grads, &want.grads).0)),
            ),
            (
                "worst parameter's gradient",
                worst_param,
                F32_PARAM_TOLERANCE.max(ulp(grad_errors(&nudged.grads, &want.grads).1)),
            ),
            (
                "eval scores",
                rel_err(&got.eval_scores, &want.eval_scores),
                F32_TOLERANCE.max(ulp(rel_err(&nudged.eval_scores, &want.eval_scores))),
            ),
        ];
        let name = format!(
            "{backbone}{} {} {side} px",
            if config.model.feti { "-FETI" } else { "" },
            config.model.method.name()
        );
        eprintln!(
            "{name:<32} {} ({} parameter gradients; {:.1} s)",
            errors
                .iter()
                .map(|(what, e, bound)| format!("{what} {e:.1e} (≤ {bound:.0e})"))
                .collect::<Vec<_>>()
                .join(", "),
            got.grads.len(),
            started.elapsed().as_secs_f64()
        );
        for (what, err, tolerance) in errors {
            if !(err <= tolerance) {
                failures.push(format!("{name}: {what} differs from Flex's by {err:.2e} (relative; tolerance {tolerance:.1e})"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Mixed f16 (the trainer's half copy of the f32 model) against Flex's f32: each relative error
/// is held to this or, where larger, [`F16_VS_FLEX`] times what the same half copy does on Flex
/// (f16 rounds after every op; the cosine head normalises across the classes, which amplifies
/// rounding when a query's scores are close).
const F16_TOLERANCE: f32 = 2e-2;
/// Flex's f16 convolutions and matmuls accumulate in f32 and round once; cubecl's direct kernels
/// (used without autotune) accumulate in f16 (tests/gpu_half.rs measured 6–9× Flex's error).
const F16_VS_FLEX: f32 = 12.0;

/// Training-mode scores of `model`'s half copy (mixed f16), as the trainer computes them.
fn mixed_scores<B: AutodiffBackend>(
    model: &AnyModel<B>,
    x: &TensorData,
    device: &B::Device,
) -> Vec<f32> {
    let x = Tensor::<B, 5>::from_data(x.clone(), device).cast(FloatDType::F16);
    values(fsct_train::precision::half_copy(model, FloatDType::F16).forward_episode(x).scores)
}

#[test]
fn mixed_f16_forward_is_close_to_flex_f32() {
    let _guard = serial();
    let device = gpu::device();
    for (backbone, side) in [("Conv4", 16), ("ResNet18", 16)] {
        let config = small(backbone, side);
        let x = episode(&config, 11);
        let cpu = Default::default();
        let (reference, model) = twins::<Autodiff<G>>(&config, &device);
        let want = pass(&config, &reference, &x, &cpu);
        let mixed = mixed_scores(&model, &x, &device);
        let flex_mixed = mixed_scores(&reference, &x, &cpu);
        let (err, flex_err) = (rel_err(&mixed, &want.scores), rel_err(&flex_mixed, &want.scores));
        let bound = F16_TOLERANCE.max(F16_VS_FLEX * flex_err);
        eprintln!("{backbone:<9} mixed f16 scores {err:.1e} (mixed f16 on Flex {flex_err:.1e}; ≤ {bound:.1e})");
        assert!(err <= bound, "{backbone}: mixed f16 scores differ from Flex f32 by {err:.2e} (tolerance {bound:.1e})");
    }
}

/// `steps` training steps on one episode, as the trainer takes them. Returns each step's loss,
/// whether the update was applied, the final loss scale and the final parameters.
fn train<B: AutodiffBackend>(
    config: &Config,
    steps: usize,
    device: &B::Device,
) -> (Vec<(f64, bool)>, Option<f64>, Vec<Vec<f32>>) {
    let (_, mut model) = twins::<B>(config, device);
    let mut optim = new_optimizer::<B>(config);
    let mut state = new_trainer_state(config);
    let x = episode(config, 3);
    let mut outcomes = Vec::new();
    for _ in 0..steps {
        let (next, outcome) = train_step(
            config,
            model,
            &mut optim,
            &mut state,
            Tensor::from_data(x.clone(), device),
            device,
        )
        .unwrap();
        model = next;
        outcomes.push((outcome.loss, outcome.applied));
    }
    let mut params = Params(Vec::new());
    model.visit(&mut params);
    (outcomes, state.scaler.map(|s| s.scale), params.0)
}

#[test]
fn f32_and_mixed_f16_train_a_few_steps_with_the_loss_scaler() {
    let _guard = serial();
    let device = gpu::device();
    let mut config = small("Conv4", 16);
    config.model.use_vic = true;
    let steps = 8;
    for precision in [Precision::F32, Precision::MixedF16] {
        config.memory.precision = precision;
        let (outcomes, scale, params) = train::<Autodiff<G>>(&config, steps, &device);
        eprintln!("{precision:?}: losses {outcomes:?}, loss scale {scale:?}");
        let applied: Vec<f64> = outcomes.iter().filter(|(_, a)| *a).map(|(l, _)| *l).collect();
        assert!(
            applied.len() >= steps / 2,
            "{precision:?}: only {} of {steps} steps were applied: {outcomes:?}",
            applied.len()
        );
        assert!(applied.iter().all(|l| l.is_finite()), "{precision:?}: {outcomes:?}");
        assert!(
            params.iter().flatten().all(|v| v.is_finite()),
            "{precision:?}: a parameter is not finite after {steps} steps"
        );
        // The same episode again and again: the loss must fall.
        let (first, last) = (applied[0], *applied.last().unwrap());
        assert!(
            last < first,
            "{precision:?}: the loss did not fall over {steps} steps: {outcomes:?}"
        );
        assert_eq!(
            scale.is_some(),
            precision != Precision::F32,
            "{precision:?}: a loss scaler exactly for half precision"
        );
        // Pure f16 trains in tests/gpu_half.rs.
    }
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let _guard = serial();
    let device = gpu::device();
    for backbone in ["Conv4", "ResNet18"] {
        let config = small(backbone, 16);
        let x = episode(&config, 5);
        let (_, plain) = twins::<Autodiff<G>>(&config, &device);
        let (_, balanced) = twins::<Autodiff<G, BalancedCheckpointing>>(&config, &device);
        let a = pass(&config, &plain, &x, &device);
        let b = pass(&config, &balanced, &x, &device);
        let (gradient, worst) = grad_errors(&b.grads, &a.grads);
        let err = gradient.max(worst).max(rel_err(&[b.loss], &[a.loss]));
        eprintln!("{backbone}: checkpointed vs plain gradients differ by {err:.1e}");
        assert!(err <= 1e-6, "{backbone}: checkpointing changed the gradients by {err:.2e}");
    }
}

/// Segment checkpointing on a GPU backend (composed block tails, cubecl kernels): the step's
/// gradients equal those without checkpointing, in f32 and mixed f16.
#[test]
fn segment_checkpointing_gives_the_same_gradients() {
    let _guard = serial();
    let device = gpu::device();
    struct FromParams<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }
    impl ModuleVisitor<Autodiff<G>> for FromParams<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<G>, D>>) {
            if let Some(grad) = self.grads.get::<G, D>(param.id) {
                self.out.push(values(grad));
            }
        }
    }
    for (backbone, precision) in
        [("Conv4", Precision::F32), ("ResNet18", Precision::F32), ("ResNet12", Precision::MixedF16)]
    {
        let mut config = small(backbone, 16);
        config.memory.precision = precision;
        // The scaler's first scale (65536) overflows some f16 gradients to inf on both paths;
        // a small one keeps every gradient finite, so the two can be compared.
        config.memory.loss_scale = 64.0;
        let x = Tensor::<Autodiff<G>, 5>::from_data(episode(&config, 5), &device);
        let (_, model) = twins::<Autodiff<G>>(&config, &device);
        let step = |mode: Checkpointing| {
            let mut config = config.clone();
            config.memory.gradient_checkpoint = mode;
            let state = new_trainer_state(&config);
            let out = step_gradients(&config, &model, &state, x.clone(), &mut |_| {}).unwrap();
            let mut read = FromParams { grads: &out.grads, out: Vec::new() };
            model.visit(&mut read);
            (out.loss as f32, read.out)
        };
        let (loss, plain) = step(Checkpointing::None);
        for mode in [Checkpointing::Blocks, Checkpointing::Stages] {
            let (got_loss, got) = step(mode);
            assert_eq!(got.len(), plain.len(), "{backbone} {mode:?}: every parameter");
            let (gradient, worst) = grad_errors(&got, &plain);
            let err = gradient.max(worst).max(rel_err(&[got_loss], &[loss]));
            eprintln!("{backbone} {precision:?} {mode:?}: gradients differ by {err:.1e}");
            assert!(err <= 1e-5, "{backbone} {precision:?} {mode:?}: {err:.2e}");
        }
    }
}

#[test]
fn memory_cleanup_lowers_reserved_memory() {
    use burn::cubecl::Runtime;
    let _guard = serial();
    let device = gpu::device();
    let usage = || gpu::Runtime::client(&device).memory_usage().expect("the allocator's figures");
    // A training step's worth of buffers, then all of them dropped: the pools keep them.
    {
        let config = small("ResNet18", 32);
        let (_, model) = twins::<Autodiff<G>>(&config, &device);
        let _ = pass(&config, &model, &episode(&config, 9), &device);
        let big: Vec<Tensor<G, 2>> =
            (0..4).map(|i| Tensor::ones([1024, 1024], &device).mul_scalar(i as f32)).collect();
        let _ = values(big.into_iter().reduce(|a, b| a + b).unwrap().sum());
    }
    G::<f32>::sync(&device).unwrap();
    let held = usage();
    G::<f32>::memory_cleanup(&device);
    G::<f32>::sync(&device).unwrap();
    let after = usage();
    eprintln!(
        "reserved {:.1} MiB (in use {:.1} MiB) → after memory_cleanup {:.1} MiB (in use {:.1} MiB)",
        held.bytes_reserved as f64 / 1048576.0,
        held.bytes_in_use as f64 / 1048576.0,
        after.bytes_reserved as f64 / 1048576.0,
        after.bytes_in_use as f64 / 1048576.0
    );
    assert!(held.bytes_reserved >= 16 << 20, "the step reserved {} bytes", held.bytes_reserved);
    assert!(
        after.bytes_reserved < held.bytes_reserved / 2,
        "memory_cleanup kept {} of {} reserved bytes",
        after.bytes_reserved,
        held.bytes_reserved
    );
}

/// `fsct-train` on this GPU: a tiny synthetic run into `dir/<name>`.
fn fsct_train(dir: &Path, name: &str, extra: &str, env: &[(&str, &str)]) -> std::process::Output {
    let config = dir.join(format!("{name}.toml"));
    let text = format!(
        "[data]\nkind = \"synthetic\"\nsynthetic_classes = 20\nsynthetic_images_per_class = 8\nsynthetic_native_size = 24\n\
         image_size = 20\n[episodes]\nn_way = 3\nk_shot = 2\nn_query = 2\ntrain_episodes = 3\nval_episodes = 2\n\
         test_episodes = 3\n[model]\nbackbone = \"Conv4\"\nuse_vic = true\n[optim]\nepochs = 1\n{extra}\n[run]\n\
         device = \"{}\"\n",
        gpu::DEVICE
    );
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fsct-train"));
    command.args([
        "--config",
        config.to_str().unwrap(),
        "--output",
        dir.join(name).to_str().unwrap(),
    ]);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn the_binary_trains_on_the_gpu() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    for (name, memory) in [
        ("f32", ""),
        (
            "mixed",
            "[memory]\nprecision = \"mixed-f16\"\ngradient_checkpoint = \"blocks\"\ncleanup_every = 1",
        ),
        ("pure", "[memory]\nprecision = \"f16\""),
    ] {
        let started = Instant::now();
        let out = fsct_train(dir.path(), name, memory, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "fsct-train --device {} ({name}): {:.1} s; {}",
            gpu::DEVICE,
            started.elapsed().as_secs_f64(),
            stdout.lines().last().unwrap_or("")
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(stdout.contains("test: 3 episodes, accuracy"), "{name}: {stdout}");
        assert!(
            dir.path().join(name).join("best.ckpt").exists()
                || dir.path().join(name).join("last.ckpt").exists()
        );
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn out_of_memory_and_a_missing_device_stop_with_one_line() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    // cubecl caps one allocation (not the total): 64 KiB is far below a Conv4 activation, so the
    // first step needs a larger buffer and fails as a real out-of-memory does.
    let out = fsct_train(dir.path(), "oom", "", &[("FSCT_VULKAN_MAX_ALLOCATION", "65536")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", stderr.lines().last().unwrap_or(""));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: out of memory on the Vulkan device"), "{stderr}");
    for switch in ["gradient_checkpoint = \"blocks\"", "mixed-f16", "data.image_size", "n_query"] {
        assert!(last.contains(switch), "the advice names {switch}: {last}");
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    assert!(!dir.path().join("oom/metrics.jsonl").exists(), "no result is written");

    // No Vulkan driver at all: an environment error (exit 2) naming what to install.
    let out = fsct_train(
        dir.path(),
        "nodevice",
        "",
        &[("VK_ICD_FILENAMES", "/nonexistent.json"), ("VK_DRIVER_FILES", "/nonexistent.json")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", stderr.lines().last().unwrap_or(""));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no usable Vulkan device") && stderr.contains("mesa-vulkan-drivers"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
