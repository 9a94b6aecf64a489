//! The training recipe (`[optim]`, issue 18): each learning rate schedule's sequence against
//! values computed by hand, each optimizer's update against its formula, gradient clipping,
//! early stopping, and resuming mid-schedule against an uninterrupted run.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use fsct_train::checkpoint::Checkpoint;
use fsct_train::config::{Config, LrScheduleKind, OptimConfig, OptimizerKind};
use fsct_train::model::{build_model, AnyModel};
use fsct_train::optim::{LrSchedule, Optim};
use fsct_train::outputs::Outputs;
use fsct_train::train::run_experiment;
use fsct_train::trainer::Trainer;

type AB = Autodiff<Flex>;

/// Flex's random generator is global: tests that seed it and build models must not interleave.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run of a few seconds: 3-way 2-shot, 20 px synthetic glyphs, 3 steps per epoch.
fn tiny(output: &Path, epochs: usize) -> Config {
    let text = r#"
        [data]
        kind = "synthetic"
        synthetic_classes = 20
        synthetic_images_per_class = 8
        synthetic_native_size = 24
        image_size = 20
        threads = 2
        [episodes]
        n_way = 3
        k_shot = 2
        n_query = 2
        train_episodes = 3
        val_episodes = 2
        test_episodes = 4
        [model]
        backbone = "Conv4"
    "#;
    let mut config = Config::parse(text, Path::new("tiny.toml")).unwrap();
    config.optim.epochs = epochs;
    config.run.output = output.to_path_buf();
    config
}

// ---------------------------------------------------------------------------------------------
// Learning rate schedules

/// The rates of the first `n` steps.
fn rates(optim: &OptimConfig, train_episodes: usize, n: usize) -> Vec<f64> {
    let mut schedule = LrSchedule::new(optim, train_episodes);
    (0..n).map(|_| schedule.step()).collect()
}

fn assert_rates(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12, "{name}: step {step}: {g} instead of {w}\n{got:?}");
    }
}

/// lr 0.1, 2 epochs of 5 steps: 10 steps in the run.
fn schedule(kind: LrScheduleKind, warmup_steps: u64) -> OptimConfig {
    OptimConfig {
        learning_rate: 0.1,
        epochs: 2,
        schedule: kind,
        warmup_steps,
        min_learning_rate: if kind == LrScheduleKind::Cosine { 0.01 } else { 0.0 },
        step_size: (kind == LrScheduleKind::Step).then_some(3),
        gamma: 0.5,
        ..OptimConfig::default()
    }
}

#[test]
fn each_schedule_gives_the_hand_computed_rates_with_and_without_warm_up() {
    // Constant: the rate at every step, past the run's end too.
    let constant = rates(&schedule(LrScheduleKind::Constant, 0), 5, 12);
    assert_rates("constant", &constant, &[0.1; 12]);
    // Warm-up W = 3: lr·(s+1)/(W+1) = 0.025, 0.05, 0.075, then the schedule from lr.
    let warm = rates(&schedule(LrScheduleKind::Constant, 3), 5, 6);
    assert_rates("constant + warm-up", &warm, &[0.025, 0.05, 0.075, 0.1, 0.1, 0.1]);

    // Cosine over the run's 10 steps from 0.1 to 0.01: 0.01 + 0.045·(1 + cos(π·s/10)).
    // cos(π/10) = 0.951056516, cos(π/5) = 0.809016994, cos(3π/10) = 0.587785252, cos(π/2) = 0.
    let cosine = rates(&schedule(LrScheduleKind::Cosine, 0), 5, 10);
    let c = |cos: f64| 0.01 + 0.045 * (1.0 + cos);
    let (c1, c2, c3, c4) = (
        0.951_056_516_295_153_6,
        0.809_016_994_374_947_5,
        0.587_785_252_292_473_2,
        0.309_016_994_374_947_4,
    );
    assert_rates(
        "cosine",
        &cosine,
        &[0.1, c(c1), c(c2), c(c3), c(c4), 0.055, c(-c4), c(-c3), c(-c2), c(-c1)],
    );
    // The same in figures: the midpoint is (0.1 + 0.01) / 2, the last step is just above 0.01.
    assert_rates(
        "cosine figures",
        &[cosine[2], cosine[5], cosine[9]],
        &[0.091_405_764_746_872_63, 0.055, 0.012_202_456_766_718_092],
    );

    // Cosine with a warm-up of 2: 0.1/3, 0.2/3, then the cosine over the remaining 8 steps,
    // 0.01 + 0.045·(1 + cos(π·s/8)): cos(π/8) = 0.923879533, cos(π/4) = 0.707106781.
    let cosine_warm = rates(&schedule(LrScheduleKind::Cosine, 2), 5, 10);
    let (d1, d2, d3) =
        (0.923_879_532_511_286_7, std::f64::consts::FRAC_1_SQRT_2, 0.382_683_432_365_089_8);
    assert_rates(
        "cosine + warm-up",
        &cosine_warm,
        &[0.1 / 3.0, 0.2 / 3.0, 0.1, c(d1), c(d2), c(d3), 0.055, c(-d3), c(-d2), c(-d1)],
    );

    // Step: ×0.5 every 3 steps.
    let step = rates(&schedule(LrScheduleKind::Step, 0), 5, 10);
    assert_rates("step", &step, &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125]);
    // Step with a warm-up of 1: lr/2, then the steps count from the end of the warm-up.
    let step_warm = rates(&schedule(LrScheduleKind::Step, 1), 5, 8);
    assert_rates("step + warm-up", &step_warm, &[0.05, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]);
}

#[test]
fn a_schedule_moved_to_a_step_continues_bit_identically() {
    for kind in [LrScheduleKind::Constant, LrScheduleKind::Cosine, LrScheduleKind::Step] {
        let config = schedule(kind, 2);
        let straight = rates(&config, 5, 10);
        for at in 0..10u64 {
            // Forward from a fresh schedule (a resumed run) and backward from a later position.
            let mut fresh = LrSchedule::new(&config, 5);
            fresh.seek(at);
            let mut later = LrSchedule::new(&config, 5);
            later.seek(9);
            later.seek(at);
            assert_eq!(fresh.position(), at);
            let tail: Vec<f64> = (at..10).map(|_| fresh.step()).collect();
            let tail_later: Vec<f64> = (at..10).map(|_| later.step()).collect();
            assert_eq!(tail, straight[at as usize..], "{kind:?} from {at}");
            assert_eq!(tail_later, straight[at as usize..], "{kind:?} back to {at}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers

/// Every float parameter of a module: id and values.
struct Snapshot(Vec<(ParamId, Vec<f64>)>);

impl<B: Backend> ModuleVisitor<B> for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values = param.val().into_data().iter::<f32>().map(f64::from).collect();
        self.0.push((param.id, values));
    }
}

fn snapshot<B: Backend>(model: &AnyModel<B>) -> Vec<(ParamId, Vec<f64>)> {
    let mut s = Snapshot(Vec::new());
    model.visit(&mut s);
    s.0
}

/// Registers the gradient `a·w + b` for every parameter `w`.
struct Affine<'a> {
    grads: &'a mut GradientsParams,
    a: f64,
    b: f64,
}

impl ModuleVisitor<AB> for Affine<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let g = param.val().inner().mul_scalar(self.a).add_scalar(self.b);
        self.grads.register::<Flex, D>(param.id, g);
    }
}

fn affine_grads(model: &AnyModel<AB>, a: f64, b: f64) -> GradientsParams {
    let mut grads = GradientsParams::new();
    model.visit(&mut Affine { grads: &mut grads, a, b });
    grads
}

/// The two gradients of [`two_steps`]: `a·w + b` at the weights the step starts from.
const GRADS: [(f64, f64); 2] = [(0.5, 0.25), (-0.3, 0.1)];

/// Two updates of a tiny model with the configured optimizer; the weights before, after the
/// first and after the second update.
fn two_steps(optim: &OptimConfig, lr: f64) -> [Vec<(ParamId, Vec<f64>)>; 3] {
    let _guard = serial();
    let mut config = tiny(Path::new("unused"), 1);
    config.optim = OptimConfig { epochs: 1, ..optim.clone() };
    config.validate(Path::new("tiny.toml")).unwrap();
    let device = Default::default();
    let mut model = build_model::<AB>(&config, &device).unwrap();
    let mut optimizer = Optim::<AB>::new(&config);
    assert_eq!(optimizer.kind(), optim.optimizer);
    let w0 = snapshot(&model);
    let grads = affine_grads(&model, GRADS[0].0, GRADS[0].1);
    model = optimizer.step(lr, model, grads);
    let w1 = snapshot(&model);
    let grads = affine_grads(&model, GRADS[1].0, GRADS[1].1);
    model = optimizer.step(lr, model, grads);
    [w0, w1, snapshot(&model)]
}

/// Checks each parameter element of the three snapshots against `expected(w0, w1) -> (w1, w2)`.
fn check_updates(
    name: &str,
    [w0, w1, w2]: &[Vec<(ParamId, Vec<f64>)>; 3],
    expected: impl Fn(f64) -> (f64, f64),
) {
    assert!(w0.len() > 10, "{name}: {} parameters", w0.len());
    let mut count = 0;
    for ((p0, p1), p2) in w0.iter().zip(w1).zip(w2) {
        assert!(p0.0 == p1.0 && p1.0 == p2.0, "{name}: parameter order");
        for ((&a, &b), &c) in p0.1.iter().zip(&p1.1).zip(&p2.1) {
            let (e1, e2) = expected(a);
            let close = |got: f64, want: f64| (got - want).abs() <= 2e-6 * (1.0 + want.abs());
            assert!(close(b, e1), "{name}: first update of {a}: {b} instead of {e1}");
            assert!(close(c, e2), "{name}: second update of {a}: {c} instead of {e2}");
            count += 1;
        }
    }
    assert!(count > 1000, "{name}: {count} weights");
}

fn grad(step: usize, w: f64) -> f64 {
    GRADS[step].0 * w + GRADS[step].1
}

#[test]
fn sgd_plain_with_momentum_and_nesterov_follow_pytorchs_formulas() {
    let (lr, wd, mu) = (0.01, 0.1, 0.9);
    let sgd = |momentum: f64, nesterov: bool| OptimConfig {
        optimizer: OptimizerKind::Sgd,
        weight_decay: wd,
        momentum,
        nesterov,
        ..OptimConfig::default()
    };
    // torch.optim.SGD, dampening 0: g' = g + λw; v₁ = g'₁, v₂ = μv₁ + g'₂;
    // update = v (plain momentum) or g' + μv (Nesterov); momentum 0: update = g'.
    for (momentum, nesterov) in [(0.0, false), (mu, false), (mu, true)] {
        let steps = two_steps(&sgd(momentum, nesterov), lr);
        check_updates(&format!("sgd μ={momentum} nesterov={nesterov}"), &steps, |w0| {
            let g1 = grad(0, w0) + wd * w0;
            let v1 = g1;
            let u1 = if nesterov { g1 + momentum * v1 } else { v1 };
            let w1 = w0 - lr * u1;
            let g2 = grad(1, w1) + wd * w1;
            let v2 = momentum * v1 + g2;
            let u2 = if nesterov { g2 + momentum * v2 } else { v2 };
            (w1, w1 - lr * u2)
        });
    }
}

/// Adam's step from moments `(m, v)` at time `t` (1-based) for gradient `g`: the new moments and
/// the update m̂ / (√v̂ + ε).
fn adam_update(m: f64, v: f64, t: i32, g: f64) -> (f64, f64, f64) {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let (m, v) = (b1 * m + (1.0 - b1) * g, b2 * v + (1.0 - b2) * g * g);
    let (mh, vh) = (m / (1.0 - f64::powi(b1, t)), v / (1.0 - f64::powi(b2, t)));
    (m, v, mh / (vh.sqrt() + eps))
}

#[test]
fn adam_and_adamw_follow_pytorchs_formulas() {
    let (lr, wd) = (0.01, 0.1);
    // Adam: L2 weight decay added to the gradient.
    let adam =
        OptimConfig { optimizer: OptimizerKind::Adam, weight_decay: wd, ..OptimConfig::default() };
    check_updates("adam", &two_steps(&adam, lr), |w0| {
        let (m, v, u1) = adam_update(0.0, 0.0, 1, grad(0, w0) + wd * w0);
        let w1 = w0 - lr * u1;
        let (_, _, u2) = adam_update(m, v, 2, grad(1, w1) + wd * w1);
        (w1, w1 - lr * u2)
    });
    // AdamW: decoupled decay, w ← w·(1 − lr·λ) − lr·update.
    let adamw = OptimConfig { weight_decay: wd, ..OptimConfig::default() };
    assert_eq!(adamw.optimizer, OptimizerKind::AdamW);
    check_updates("adamw", &two_steps(&adamw, lr), |w0| {
        let (m, v, u1) = adam_update(0.0, 0.0, 1, grad(0, w0));
        let w1 = w0 * (1.0 - lr * wd) - lr * u1;
        let (_, _, u2) = adam_update(m, v, 2, grad(1, w1));
        (w1, w1 * (1.0 - lr * wd) - lr * u2)
    });
}

#[test]
fn gradient_clipping_scales_each_parameters_gradient_to_the_norm() {
    // Plain SGD at lr 1 without decay: the update is the (clipped) gradient itself.
    let max_norm = 0.5;
    let optim = OptimConfig {
        optimizer: OptimizerKind::Sgd,
        momentum: 0.0,
        weight_decay: 0.0,
        grad_clip_norm: Some(max_norm),
        ..OptimConfig::default()
    };
    let [w0, w1, _] = two_steps(&optim, 1.0);
    let (mut clipped, mut kept) = (0, 0);
    for ((_, before), (_, after)) in w0.iter().zip(&w1) {
        let g: Vec<f64> = before.iter().map(|&w| grad(0, w)).collect();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let update: Vec<f64> = before.iter().zip(after).map(|(a, b)| a - b).collect();
        let update_norm = update.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > max_norm {
            clipped += 1;
            assert!(
                (update_norm - max_norm).abs() < 1e-5,
                "{update_norm} for a gradient of norm {norm}"
            );
            // The direction is the gradient's.
            for (u, g) in update.iter().zip(&g) {
                assert!((u - g * max_norm / norm).abs() < 1e-6, "{u} vs {g}");
            }
        } else {
            kept += 1;
            assert!((update_norm - norm).abs() < 1e-6, "{update_norm} vs {norm}");
        }
    }
    assert!(clipped > 5, "{clipped} parameters clipped, {kept} kept");
}

// ---------------------------------------------------------------------------------------------
// Early stopping and resuming

/// `(train_loss, train_acc, val_acc)` of each epoch line of a run's `metrics.jsonl`.
fn epochs(run: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap();
            (f("train_loss"), f("train_acc"), f("val_acc"))
        })
        .collect()
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement_and_still_tests() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let total = 6;
    let full =
        run_experiment::<AB>(&tiny(&dir.path().join("full"), total), &Default::default()).unwrap();
    let val: Vec<f64> = epochs(&dir.path().join("full")).iter().map(|e| e.2).collect();
    // By hand from the uninterrupted run's validation accuracies: the epoch count after which
    // `patience` epochs in a row did not beat the best (strictly), as the trainer counts.
    let patience = 1;
    let mut best = (0.0, None::<usize>);
    let mut stop = total;
    for (epoch, &acc) in val.iter().enumerate() {
        if acc > best.0 {
            best = (acc, Some(epoch));
        }
        let done = epoch + 1;
        if done - best.1.map_or(0, |b| b + 1) >= patience {
            stop = done;
            break;
        }
    }
    assert!(stop < total, "the run improved every epoch ({val:?}): pick another seed");

    let run = dir.path().join("patient");
    let mut config = tiny(&run, total);
    config.optim.early_stopping_patience = Some(patience);
    let stopped = run_experiment::<AB>(&config, &Default::default()).unwrap();
    let lines = epochs(&run);
    assert_eq!(lines.len(), stop, "{val:?}");
    assert_eq!(lines[..], epochs(&dir.path().join("full"))[..stop]);
    assert_eq!(stopped.best_val_acc, best.0);
    assert_eq!(Checkpoint::load(&run.join("last.ckpt")).unwrap().header.state.epochs_done, stop);
    // The best model was tested.
    let results = std::fs::read_to_string(run.join("results.txt")).unwrap();
    assert!(results.contains("best.ckpt"), "{results}");
    assert!(stopped.test_acc.is_finite());
    // The uninterrupted run can only have found a better model later.
    assert!(full.best_val_acc >= stopped.best_val_acc);

    // A resumed run honours it too: more epochs, same patience, nothing more to train.
    config.optim.epochs = total + 4;
    config.run.resume = true;
    let again = run_experiment::<AB>(&config, &Default::default()).unwrap();
    assert_eq!(epochs(&run).len(), stop);
    assert_eq!(again.test_acc, stopped.test_acc);
    // A larger patience lets it continue from where it stopped.
    config.optim.early_stopping_patience = Some(total + 10);
    config.optim.epochs = stop + 1;
    run_experiment::<AB>(&config, &Default::default()).unwrap();
    assert_eq!(epochs(&run).len(), stop + 1);
}

/// Every weight of a run's `last.ckpt`, in module order.
fn last_weights(run: &Path) -> Vec<f64> {
    let (_, model) = fsct_train::weights::load_checkpoint_file::<Flex>(
        &run.join("last.ckpt"),
        &Default::default(),
    )
    .unwrap();
    snapshot(&model).into_iter().flat_map(|(_, v)| v).collect()
}

/// Runs `config` for `stop_after` epochs through the trainer and drops it (a run killed after
/// that epoch's checkpoint), then resumes it with `run_experiment`.
fn killed_and_resumed(config: &Config, stop_after: usize) -> fsct_train::train::RunSummary {
    let device = Default::default();
    std::fs::create_dir_all(&config.run.output).unwrap();
    let splits = fsct_train::data::open_splits(config).unwrap();
    let mut trainer =
        Trainer::<AB>::new(config, Outputs::new(&config.run.output), &device).unwrap();
    for epoch in 0..stop_after {
        trainer.run_epoch(&splits.base, &splits.val, epoch).unwrap();
    }
    drop(trainer);
    let ckpt = Checkpoint::load(&config.run.output.join("last.ckpt")).unwrap();
    assert_eq!(ckpt.header.state.epochs_done, stop_after);
    let mut resumed = config.clone();
    resumed.run.resume = true;
    run_experiment::<AB>(&resumed, &device).unwrap()
}

#[test]
fn resuming_mid_schedule_gives_the_uninterrupted_result() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    // SGD with Nesterov momentum on a warmed-up cosine; AdamW on a step schedule with clipping.
    type Recipe = (&'static str, fn(&mut OptimConfig));
    let recipes: [Recipe; 2] = [
        ("sgd-cosine", |o| {
            o.optimizer = OptimizerKind::Sgd;
            o.learning_rate = 0.05;
            o.nesterov = true;
            o.schedule = LrScheduleKind::Cosine;
            o.warmup_steps = 2;
            o.min_learning_rate = 1e-3;
        }),
        ("adamw-step", |o| {
            o.schedule = LrScheduleKind::Step;
            o.step_size = Some(2);
            o.gamma = 0.5;
            o.warmup_steps = 1;
            o.grad_clip_norm = Some(1.0);
        }),
    ];
    for (name, recipe) in recipes {
        let mut straight = tiny(&dir.path().join(format!("{name}-straight")), 3);
        recipe(&mut straight.optim);
        straight.validate(Path::new("tiny.toml")).unwrap();
        let full = run_experiment::<AB>(&straight, &Default::default()).unwrap();

        let mut config = straight.clone();
        config.run.output = dir.path().join(format!("{name}-resumed"));
        let resumed_summary = killed_and_resumed(&config, 1);

        let (a, b) = (&straight.run.output, &config.run.output);
        assert_eq!(epochs(a).len(), 3, "{name}");
        assert_eq!(epochs(a), epochs(b), "{name}");
        assert_eq!(last_weights(a), last_weights(b), "{name}: the final weights differ");
        let resumed = Checkpoint::load(&b.join("last.ckpt")).unwrap();
        assert_eq!(resumed.header.state.steps, 9, "{name}");
        assert_eq!(resumed.header.config.optim, straight.optim, "{name}");
        assert_eq!(resumed_summary.test_acc, full.test_acc, "{name}");
        assert_eq!(resumed_summary.best_val_acc, full.best_val_acc, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints written before the recipe existed

#[test]
fn checkpoints_of_the_single_adamw_load_into_the_recipes_optimizer() {
    use burn::optim::{AdamWConfig, Optimizer};
    use burn::record::Recorder;
    let _guard = serial();
    let config = tiny(Path::new("unused"), 1);
    config.validate(Path::new("tiny.toml")).unwrap();
    let device = Default::default();
    // The optimizer and record bytes exactly as earlier versions made them.
    let mut old = AdamWConfig::new()
        .with_weight_decay(config.optim.weight_decay as f32)
        .with_epsilon(1e-8)
        .init::<AB, AnyModel<AB>>();
    let model = build_model::<AB>(&config, &device).unwrap();
    let grads = affine_grads(&model, 0.5, 0.25);
    let model = old.step(1e-3, model, grads);
    let bytes = fsct_train::weights::ModelRecorder::default().record(old.to_record(), ()).unwrap();

    let new = fsct_train::weights::load_optimizer_bytes(
        Optim::<AB>::new(&config),
        bytes,
        "old.ckpt",
        &device,
    )
    .unwrap();
    let mut new = new;
    // The next update is the old optimizer's, bit for bit (its moments were restored).
    let next = || affine_grads(&model, -0.3, 0.1);
    let after_old = old.step(1e-3, model.clone(), next());
    let after_new = new.step(1e-3, model.clone(), next());
    let fresh = Optim::<AB>::new(&config).step(1e-3, model.clone(), next());
    assert_eq!(snapshot(&after_old), snapshot(&after_new));
    assert_ne!(snapshot(&after_old), snapshot(&fresh), "a fresh optimizer would not tell");
    // Another optimizer's state is refused with the checkpoint's name.
    let mut sgd = config.clone();
    sgd.optim.optimizer = OptimizerKind::Sgd;
    let bytes = fsct_train::weights::ModelRecorder::default().record(old.to_record(), ()).unwrap();
    let err = fsct_train::weights::load_optimizer_bytes(
        Optim::<AB>::new(&sgd),
        bytes,
        "old.ckpt",
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("old.ckpt") && err.contains("optimizer state"), "{err}");

    // A header written before the recipe's fields existed reads with the reference's defaults
    // (and the reference's spelling of the optimizer).
    let header = r#"{"data":{},"episodes":{},"model":{},"vic":{},"memory":{},"run":{},
        "optim":{"optimizer":"AdamW","learning_rate":0.001,"weight_decay":1e-5,"epochs":50}}"#;
    let old_config: Config = serde_json::from_str(header).unwrap();
    assert_eq!(old_config.optim, OptimConfig::default());
}

#[test]
fn each_step_reports_the_scheduled_rate_it_used_also_after_a_fresh_optimizer() {
    use burn::tensor::Distribution;
    use fsct_train::step::{new_optimizer, new_trainer_state, train_step};
    let _guard = serial();
    let mut config = tiny(Path::new("unused"), 2);
    config.optim.schedule = LrScheduleKind::Step;
    config.optim.step_size = Some(2);
    config.optim.gamma = 0.5;
    config.optim.warmup_steps = 1;
    config.validate(Path::new("tiny.toml")).unwrap();
    let device = Default::default();
    let mut model = build_model::<AB>(&config, &device).unwrap();
    let mut optim = new_optimizer::<AB>(&config);
    let mut state = new_trainer_state(&config);
    let mut used = Vec::new();
    for step in 0..5 {
        if step == 3 {
            // As a resumed run: a fresh optimizer at the state's step count.
            optim = new_optimizer::<AB>(&config);
        }
        let x = Tensor::<AB, 5>::random([3, 4, 3, 20, 20], Distribution::Default, &device);
        let (next, outcome) =
            train_step(&config, model, &mut optim, &mut state, x, &device).unwrap();
        model = next;
        used.push(outcome.learning_rate);
    }
    // Warm-up 1: 1e-3/2; then 1e-3 for two steps, 5e-4 for two.
    assert_eq!(used, [5e-4, 1e-3, 1e-3, 5e-4, 5e-4]);
    assert_eq!(state.steps, 5);
}
