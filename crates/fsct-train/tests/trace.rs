//! Training like the reference (issue 21): fsct-train's own training step (`step::train_step`, the
//! code `fsct-train` runs) reproduces PyTorch training traces.
//!
//! The fixtures (`tests/fixtures/trace`, made by `tools/fsct_reference.py trace`): from a reference
//! state dict, ten AdamW steps (lr 3e-4, weight decay 1e-5) of the reference model on saved 5-way
//! 2-shot 2-query episodes of 16 px images, in f32 and train mode; the loss of every step and the
//! state dict after the last (running statistics included). For Conv4 and Conv6, cosine and
//! softmax, with and without block checkpointing:
//!
//! - every step's loss within 1e-4 of PyTorch's;
//! - every parameter and running statistic after the last step within 1e-3 relative
//!   (‖fsct − reference‖ / ‖reference‖ per tensor), except the parameters whose gradient is zero
//!   in exact arithmetic (below), which are held to the distance rounding noise can take them.
//!
//! Why lr 3e-4 and not the reference's 1e-3: at 1e-3 the trace is chaotic in f32 — PyTorch against
//! itself (1 thread against 2, f32 against f64) drifts apart by up to 1e-1 within ten steps, as
//! AdamW's early steps move each weight by about lr·sign(gradient) and rounding flips the sign of
//! near-zero gradients. At 3e-4 that floor is below 2e-5 (each fixture records its own, checked
//! here to be below a fifth of the tolerance), while folding the cosine head's weight norm into
//! one weight moves the losses by 1.6e-4 at step 2 and by 1.4e-3 at step 9.
//!
//! Zero-gradient parameters: a convolution's bias before a training-mode batch norm (the norm
//! subtracts it again), and, in the softmax head, `linear.norm.beta`, `linear.fc.bias` and
//! `linear.last.bias` (each adds the same score to every class, which the cross-entropy cancels).
//! Their computed gradients are pure rounding noise in both implementations, and AdamW turns noise
//! into steps of up to lr each: they, and the running means that average the biased convolution
//! outputs, must stay within 2·lr·steps of the reference's, element by element. One more is
//! nearly so at this image size: Conv6's fourth batch norm's shift (`feature.trunk.3.BN.beta`).
//! At 16 px blocks 5 and 6 see 1×1 maps, where a per-channel shift passes the 2×2 max-pool and the
//! next convolution (padding 1: only its centre tap touches the map) as a shift, which the next
//! training-mode batch norm removes; only the rare pooled values the ReLU holds at 0 carry a
//! gradient.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_store::ModuleSnapshot;
use fsct_train::config::Config;
use fsct_train::model::{build_model, AnyModel};
use fsct_train::step::{new_optimizer, new_trainer_state, train_step};
use fsct_transformer::import::{import_reference, ImportOptions};

type AB = Autodiff<Flex>;

const STEPS: usize = 10;
const LOSS_TOLERANCE: f64 = 1e-4;
const PARAM_TOLERANCE: f64 = 1e-3;
const LEARNING_RATE: f64 = 3e-4;
/// How far AdamW can move a parameter on noise alone over the trace: lr per step, either way.
const NOISE_REACH: f64 = 2.0 * LEARNING_RATE * STEPS as f64;

/// Whether a parameter's gradient is zero in exact arithmetic (see the module docs), or it is a
/// running mean that averages such a bias.
fn noise_driven(path: &str, method: &str) -> bool {
    let conv_bias = path.starts_with("feature.") && path.ends_with(".C.bias");
    let running_mean = path.ends_with(".running_mean");
    let softmax_shift = method == "FSCT_softmax"
        && ["linear.norm.beta", "linear.fc.bias", "linear.last.bias"].contains(&path);
    // Conv6 at 16 px: blocks 5 and 6 see 1×1 maps (see the module docs).
    let conv6_small_map = path == "feature.trunk.3.BN.beta";
    conv_bias || running_mean || softmax_shift || conv6_small_map
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trace").join(name)
}

/// The fixture's episodes (`x`, `[steps, 5, 4, 3, 16, 16]`) and per-model losses (f64).
struct Trace {
    episodes: Vec<f32>,
    episode_shape: [usize; 5],
    losses: BTreeMap<String, Vec<f64>>,
    /// How far PyTorch's own losses move with the rounding (1 against 2 threads, f32 against f64).
    floors: BTreeMap<String, f64>,
}

fn read_trace() -> Trace {
    let bytes = std::fs::read(fixture("trace_episodes.safetensors")).expect("trace fixture");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let x = file.tensor("x").expect("x");
    let shape = x.shape();

    let episodes =
        x.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let series = |prefix: &str| -> BTreeMap<String, Vec<f64>> {
        file.tensors()
            .into_iter()
            .filter_map(|(name, view)| {
                let model = name.strip_prefix(prefix)?.to_string();
                let values = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                Some((model, values))
            })
            .collect()
    };
    let floors = series("floor/").into_iter().map(|(k, v)| (k, v[0])).collect();
    Trace {
        episodes,
        episode_shape: [shape[1], shape[2], shape[3], shape[4], shape[5]],
        losses: series("loss/"),
        floors,
    }
}

/// The trace's model and episode shape, with one memory setting.
fn config(backbone: &str, method: &str, checkpointing: &str) -> Config {
    let text = format!(
        r#"
        [data]
        image_size = 16
        [episodes]
        n_way = 5
        k_shot = 2
        n_query = 2
        [model]
        backbone = "{backbone}"
        method = "{method}"
        [optim]
        learning_rate = {LEARNING_RATE}
        weight_decay = 1e-5
        [memory]
        gradient_checkpoint = "{checkpointing}"
        "#
    );
    let path = Path::new("trace.toml");
    let config = Config::parse(&text, path).unwrap();
    config.validate(path).unwrap();
    config
}

fn import<B: Backend>(config: &Config, file: &str, device: &B::Device) -> AnyModel<B> {
    let model = build_model::<B>(config, device).unwrap();
    import_reference(model, fixture(file), &ImportOptions::default()).unwrap().0
}

/// Every parameter and running statistic by path, as f64.
fn values<B: Backend, M: ModuleSnapshot<B>>(model: &M) -> BTreeMap<String, Vec<f64>> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|s| {
            let data = s.to_data().unwrap().convert::<f64>();
            (s.full_path(), data.to_vec::<f64>().unwrap())
        })
        .collect()
}

/// What a replay found: the worst loss difference, and the worst parameter difference relative to
/// its tolerance (1 = at the tolerance) with its path and its own figure.
struct Replay {
    loss: f64,
    /// The worst relative difference among the parameters that carry a gradient.
    relative: f64,
    param_ratio: f64,
    param_path: String,
    param_figure: f64,
}

/// Runs the trace of `name` (`conv4_cosine`, …) through `train_step`.
fn replay(trace: &Trace, name: &str, method: &str, config: &Config) -> Replay {
    let device = Default::default();
    let expected_losses = &trace.losses[name];
    let mut model = import::<AB>(config, &format!("trace_{name}_init.pt"), &device);
    let mut optim = new_optimizer::<AB>(config);
    let mut state = new_trainer_state(config);
    let per_episode: usize = trace.episode_shape.iter().product();
    let mut worst_loss: f64 = 0.0;
    for (step, expected) in expected_losses.iter().enumerate() {
        let values = trace.episodes[step * per_episode..(step + 1) * per_episode].to_vec();
        let x = Tensor::<AB, 5>::from_data(TensorData::new(values, trace.episode_shape), &device);
        let (updated, outcome) =
            train_step(config, model, &mut optim, &mut state, x, &device).unwrap();
        model = updated;
        worst_loss = worst_loss.max((outcome.loss - expected).abs());
    }
    let reference = import::<Flex>(config, &format!("trace_{name}_final.pt"), &device);
    // `valid()` folds in the running statistics' pending updates (Burn keeps them per thread
    // until a sync; a snapshot of the autodiff model would read the values before them).
    let (ours, theirs) = (values::<Flex, _>(&model.valid()), values::<Flex, _>(&reference));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same parameters"
    );
    let mut worst = Replay {
        loss: worst_loss,
        relative: 0.0,
        param_ratio: 0.0,
        param_path: "".into(),
        param_figure: 0.0,
    };
    for (path, a) in &ours {
        let b = &theirs[path];
        let (figure, tolerance) = if noise_driven(path, method) {
            let largest = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            (largest, NOISE_REACH)
        } else {
            let diff = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
            let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-12);
            worst.relative = worst.relative.max(diff / norm);
            (diff / norm, PARAM_TOLERANCE)
        };
        if figure / tolerance > worst.param_ratio {
            worst.param_ratio = figure / tolerance;
            worst.param_path = path.clone();
            worst.param_figure = figure;
        }
    }
    worst
}

fn check(name: &str, backbone: &str, method: &str) {
    let trace = read_trace();
    assert_eq!(trace.losses[name].len(), STEPS, "steps in the fixture");
    let floor = trace.floors[name];
    assert!(
        floor < LOSS_TOLERANCE / 5.0,
        "the fixture of {name} is chaotic: PyTorch's own losses move by {floor:.1e} with the \
         rounding; regenerate it with a smaller learning rate (tools/fsct_reference.py)"
    );
    for checkpointing in ["none", "blocks"] {
        let found = replay(&trace, name, method, &config(backbone, method, checkpointing));
        println!(
            "{name} ({checkpointing} checkpointing): losses within {:.1e} (PyTorch's rounding floor \
             {floor:.1e}); parameters within {:.1e} relative, the zero-gradient ones included at \
             {:.0}% of their tolerance at most ({}: {:.1e})",
            found.loss,
            found.relative,
            100.0 * found.param_ratio,
            found.param_path,
            found.param_figure
        );
        assert!(
            found.loss <= LOSS_TOLERANCE,
            "{name} ({checkpointing} checkpointing): a step's loss differs from PyTorch's by {:.3e}",
            found.loss
        );
        assert!(
            found.param_ratio <= 1.0,
            "{name} ({checkpointing} checkpointing): `{}` after {STEPS} steps differs from \
             PyTorch's by {:.3e} (beyond its tolerance)",
            found.param_path,
            found.param_figure
        );
    }
}

#[test]
fn conv4_cosine_trains_like_the_reference() {
    check("conv4_cosine", "Conv4", "FSCT_cosine");
}

#[test]
fn conv4_softmax_trains_like_the_reference() {
    check("conv4_softmax", "Conv4", "FSCT_softmax");
}

#[test]
fn conv6_cosine_trains_like_the_reference() {
    check("conv6_cosine", "Conv6", "FSCT_cosine");
}

#[test]
fn conv6_softmax_trains_like_the_reference() {
    check("conv6_softmax", "Conv6", "FSCT_softmax");
}
