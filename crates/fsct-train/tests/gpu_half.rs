//! Pure half precision on the GPU (`memory.precision = "f16"`: the backend's own float type is
//! f16), in a test binary of its own: Burn 0.21 keeps one default float type per device, fixed by
//! the first tensor created there, so `Vulkan<f16>` (or `Cuda<f16>`) cannot share a process with
//! the f32 backend of `tests/gpu.rs`. Here the device is pinned to f16 before anything else.
//!
//! Small shapes, as in `tests/gpu.rs`; the same GPU runtime selection.
#![cfg(any(feature = "vulkan", feature = "cuda"))]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};
use fsct_train::config::{Config, Precision};
use fsct_train::model::{build_model, AnyModel};
use fsct_train::step::{new_optimizer, new_trainer_state, train_step};
use fsct_train::weights::{load_model_bytes, model_bytes};

#[cfg(feature = "vulkan")]
mod gpu {
    use burn::backend::wgpu::{graphics, init_setup, WgpuDevice};

    /// The backend under test: f16 floats.
    pub type H = burn::backend::Vulkan<burn::tensor::f16>;

    /// The default Vulkan device, opened once.
    pub fn open() -> WgpuDevice {
        fsct_transformer::import::quietly(|| {
            init_setup::<graphics::Vulkan>(&WgpuDevice::DefaultDevice, Default::default());
        })
        .unwrap_or_else(|why| panic!("no usable Vulkan device ({why}); install one, e.g. `apt-get install mesa-vulkan-drivers`"));
        WgpuDevice::DefaultDevice
    }
}

#[cfg(all(feature = "cuda", not(feature = "vulkan")))]
mod gpu {
    /// The backend under test: f16 floats.
    pub type H = burn::backend::Cuda<burn::tensor::f16>;

    /// The default CUDA device.
    pub fn open() -> burn::backend::cuda::CudaDevice {
        Default::default()
    }
}

use gpu::H;

type Cpu = Autodiff<Flex>;

/// The GPU device with its float type pinned to f16 (before any tensor exists there).
fn device() -> <H as burn::tensor::backend::BackendTypes>::Device {
    static OPENED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    OPENED.get_or_init(|| {
        let device = gpu::open();
        burn::tensor::set_default_dtypes::<H>(&device, DType::F16, DType::I32)
            .expect("the device's float type is not fixed yet");
    });
    let device = Default::default();
    let settings = burn::tensor::get_device_settings::<H>(&device);
    assert_eq!(DType::from(settings.float_dtype), DType::F16, "the device computes in f16");
    device
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// As `tests/gpu.rs`: 3-way 2-shot 2-query, a narrow transformer.
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
    TensorData::new(
        (0..n).map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0).collect::<Vec<f32>>(),
        shape,
    )
}

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

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(FloatDType::F32).into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let norm = want.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let diff = got
        .iter()
        .zip(want)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt();
    (diff / norm.max(1e-30)) as f32
}

/// Intermediate values of FS-CT's forward pass (features, prototypes, attention, FFN, scores).
fn stages<B: Backend>(model: &AnyModel<B>, x: Tensor<B, 5>) -> Vec<(&'static str, Vec<f32>)> {
    let AnyModel::Fsct(m) = model else { panic!("FS-CT expected") };
    let out = m.forward_detailed(x);
    vec![
        ("backbone features", values(out.features)),
        ("prototypes", values(out.z_proto)),
        ("after attention", values(out.after_attn)),
        ("after FFN", values(out.after_ffn)),
        ("scores", values(out.scores)),
    ]
}

/// f16 keeps 11 significant bits (a relative rounding of 4.9e-4 per value) and rounds after
/// every op. Each stage's relative error ‖a − b‖ / ‖b‖ against Flex's f32 is held to this or, where
/// larger, [`F16_VS_FLEX`] times what f16 does on Flex itself (mixed f16: the same weights and
/// activations in f16, normalisations in f32): the cosine head normalises across the classes,
/// which amplifies rounding when a query's scores are close (×6 on Flex at these sizes).
const F16_TOLERANCE: f32 = 2e-2;
/// Flex's f16 convolutions and matmuls accumulate in f32 and round once; cubecl's direct kernels
/// (used without autotune) accumulate in f16, which measured 6–9× Flex's error here.
const F16_VS_FLEX: f32 = 12.0;

#[test]
fn pure_f16_forward_is_close_to_flex_f32() {
    let _guard = serial();
    let device = device();
    for (backbone, side) in [("Conv4", 16), ("ResNet18", 16)] {
        let config = small(backbone, side);
        let x = episode(&config, 11);
        let cpu = Default::default();
        let (reference, pure) = twins::<Autodiff<H>>(&config, &device);
        let want = stages(&reference, Tensor::from_data(x.clone(), &cpu));
        let got = stages(&pure, Tensor::from_data(x.clone(), &device));
        // f16 on Flex: the trainer's half copy (mixed f16).
        let half = fsct_train::precision::half_copy(&reference, FloatDType::F16);
        let flex_f16 =
            stages(&half, Tensor::<Cpu, 5>::from_data(x.clone(), &cpu).cast(FloatDType::F16));
        let mut failures = Vec::new();
        for (((name, g), (_, w)), (_, h)) in got.iter().zip(&want).zip(&flex_f16) {
            let (err, flex_err) = (rel_err(g, w), rel_err(h, w));
            let bound = F16_TOLERANCE.max(F16_VS_FLEX * flex_err);
            eprintln!("{backbone:<9} pure f16 {name:<18} {err:.1e} (f16 on Flex {flex_err:.1e}; ≤ {bound:.1e})");
            if !(err <= bound) {
                failures.push(format!("{backbone}: pure f16 {name} differ from Flex f32 by {err:.2e} (tolerance {bound:.1e})"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// Every float parameter's values, in module order.
struct Params(Vec<f32>);

impl<B: Backend> ModuleVisitor<B> for Params {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.extend(values(param.val()));
    }
}

#[test]
fn pure_f16_trains_with_the_loss_scaler() {
    let _guard = serial();
    let device = device();
    let mut config = small("Conv4", 16);
    config.model.use_vic = true;
    config.memory.precision = Precision::F16;
    let (_, mut model) = twins::<Autodiff<H>>(&config, &device);
    let mut optim = new_optimizer::<Autodiff<H>>(&config);
    let mut state = new_trainer_state(&config);
    let x = episode(&config, 3);
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let (next, outcome) = train_step(
            &config,
            model,
            &mut optim,
            &mut state,
            Tensor::from_data(x.clone(), &device),
            &device,
        )
        .unwrap();
        model = next;
        outcomes.push((outcome.loss, outcome.applied));
    }
    let scale = state.scaler.as_ref().map(|s| s.scale);
    eprintln!("pure f16: losses {outcomes:?}, loss scale {scale:?}");
    let applied: Vec<f64> = outcomes.iter().filter(|(_, a)| *a).map(|(l, _)| *l).collect();
    assert!(applied.len() >= 4, "only {} of 8 steps were applied: {outcomes:?}", applied.len());
    assert!(applied.iter().all(|l| l.is_finite()), "{outcomes:?}");
    let mut params = Params(Vec::new());
    model.visit(&mut params);
    assert!(params.0.iter().all(|v| v.is_finite()), "a parameter is not finite after 8 steps");
    assert!(applied.last().unwrap() < &applied[0], "the loss did not fall: {outcomes:?}");
    assert!(scale.is_some(), "pure f16 trains with the loss scaler");
}
