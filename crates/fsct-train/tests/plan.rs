//! The memory planner against the counting allocator: the predicted peak of a training step
//! (`fsct_train::plan::predict`) and the measured peak of `fsct_train::step::train_step` on small
//! shapes, within ±10%; budget selection on synthetic budgets; the refusal message.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use fsct_train::alloc_count::{self, CountingAlloc};
use fsct_train::config::{Checkpointing, Config, DeviceKind, Precision};
use fsct_train::model::build_model;
use fsct_train::plan::{self, Budget, PlanOptions};
use fsct_train::step::{new_optimizer, new_trainer_state, train_step_observed, StepPoint};
use fsct_vic::CovarianceMode;

#[global_allocator]
static ALLOC: CountingAlloc<std::alloc::System> = CountingAlloc::new(std::alloc::System);

/// A small episode: `backbone` at `side` px, 3-way 2-shot `n_query` queries, depth-1 FS-CT with
/// 2 heads of 16 (small enough for the dev profile).
fn small(backbone: &str, side: usize, n_query: usize) -> Config {
    let mut c = Config::default();
    c.model.backbone = backbone.parse().unwrap();
    c.model.feti = backbone == "ResNet12";
    c.model.train_backbone = true;
    c.model.heads = 2;
    c.model.dim_head = 16;
    c.model.mlp_dim = 32;
    c.data.image_size = Some(side);
    (c.episodes.n_way, c.episodes.k_shot, c.episodes.n_query) = (3, 2, n_query);
    c.memory.cleanup_every = 0;
    // No overflow at the first steps of mixed precision: every measured step updates.
    c.memory.loss_scale = 1.0;
    c
}

/// Measured: bytes held at the step's start (model, AdamW's moments, episode: what dropping them
/// frees), the step's peak above its start, and the peaks of its phases (before the backward
/// pass, during it, the update).
fn measure_on<B: AutodiffBackend>(config: &Config) -> (u64, u64, [u64; 3]) {
    let device = Default::default();
    B::seed(&device, config.run.seed);
    let mut model = build_model::<B>(config, &device).unwrap();
    let e = &config.episodes;
    let side = config.image_size();
    let x = Tensor::<B, 5>::random(
        [e.n_way, e.k_shot + e.n_query, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mut optim = new_optimizer::<B>(config);
    let mut state = new_trainer_state(config);
    let (mut start, mut above, mut phases) = (0, 0, [0u64; 3]);
    for step in 0..3 {
        start = alloc_count::reset_peak();
        let mut seen = [0u64; 3];
        let mut observe = |point: StepPoint| {
            let i = if point == StepPoint::BeforeBackward { 0 } else { 1 };
            seen[i] = (alloc_count::peak() - start) as u64;
            alloc_count::reset_peak();
        };
        let (next, outcome) = train_step_observed(
            config,
            model,
            &mut optim,
            &mut state,
            x.clone(),
            &device,
            &mut observe,
        )
        .unwrap();
        seen[2] = (alloc_count::peak().saturating_sub(start)) as u64;
        assert!(outcome.applied, "step {step} skipped its update");
        model = next;
        if step > 0 {
            above = above.max(seen.iter().copied().max().unwrap());
            for i in 0..3 {
                phases[i] = phases[i].max(seen[i]);
            }
        }
    }
    drop((model, optim, state, x));
    let held = start.saturating_sub(alloc_count::current()) as u64;
    (held, above, phases)
}

fn measure(config: &Config) -> (u64, u64, [u64; 3]) {
    if config.memory.gradient_checkpoint == Checkpointing::Balanced {
        measure_on::<Autodiff<Flex, BalancedCheckpointing>>(config)
    } else {
        measure_on::<Autodiff<Flex>>(config)
    }
}

/// The tests of this binary one at a time: the counting allocator counts every thread.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn cpu() -> PlanOptions {
    PlanOptions { device: DeviceKind::Cpu, quick: false }
}

fn vic(c: &mut Config, mode: CovarianceMode) {
    c.model.use_vic = true;
    c.vic.covariance = mode;
}

/// A configuration's name and its change to the small baseline.
type Variant = (&'static str, fn(&mut Config));

#[test]
fn predicted_step_peaks_are_within_ten_percent_of_the_counting_allocator() {
    let _serial = serial();
    let mut cases: Vec<(String, Config)> = Vec::new();
    for (backbone, side, q) in [("Conv4", 40, 4), ("ResNet12", 32, 3)] {
        let base = small(backbone, side, q);
        let variants: [Variant; 7] = [
            ("f32", |_| {}),
            ("balanced", |c| c.memory.gradient_checkpoint = Checkpointing::Balanced),
            ("blocks", |c| c.memory.gradient_checkpoint = Checkpointing::Blocks),
            ("mixed f16", |c| c.memory.precision = Precision::MixedF16),
            ("VIC naive", |c| vic(c, CovarianceMode::Naive)),
            ("VIC Gram", |c| vic(c, CovarianceMode::Gram)),
            ("all combined", |c| {
                c.memory.gradient_checkpoint = Checkpointing::Blocks;
                c.memory.precision = Precision::MixedF16;
                vic(c, CovarianceMode::Gram);
            }),
        ];
        for (name, apply) in variants {
            // Naive VIC at ResNet12's d = 2560 holds about 10 GB on the CPU: Conv4's d = 256 only.
            if backbone == "ResNet12" && name == "VIC naive" {
                continue;
            }
            let mut c = base.clone();
            apply(&mut c);
            cases.push((format!("{backbone} {side} px, {name}"), c));
        }
    }
    // CTX, and a frozen torchvision ResNet18 (its forward pass records nothing).
    let mut ctx = small("Conv4", 40, 4);
    ctx.model.method = fsct_train::config::Method::CtxCosine;
    cases.push(("Conv4 40 px, CTX cosine".into(), ctx));
    let mut frozen = small("ResNet18", 32, 3);
    frozen.model.train_backbone = false;
    cases.push(("ResNet18 32 px, frozen (torchvision layout)".into(), frozen));
    let mut failures = Vec::new();
    for (name, config) in &cases {
        let predicted = plan::predict(config, &cpu()).unwrap();
        let (held, above, phases) = measure(config);
        let measured_total = held + above;
        let ratio_total = predicted.step_total as f64 / measured_total as f64;
        let ratio_above = predicted.step_above_start as f64 / above as f64;
        eprintln!(
            "{name}: predicted {} / measured {} above the start ({ratio_above:.3}); in all {} / {} ({ratio_total:.3}); peak at the {}",
            predicted.step_above_start,
            above,
            predicted.step_total,
            measured_total,
            predicted.phases.peak().0
        );
        eprintln!(
            "    measured phases {phases:?}; predicted {:?}; held {held} vs {}",
            predicted.phases,
            predicted.state.params + predicted.state.optimizer + predicted.state.episode
        );
        // The step's own peak within 10%, or within 2 MiB where it is tiny (a frozen backbone
        // records nothing: its step peaks at 2–3 MiB above the start here, and Flex's per-thread
        // scratch buffers move that by about 1 MiB with the scheduling: 3.04 MB measured against
        // 1.98 MB predicted once on a loaded 2-core machine, within 1 MiB on the others).
        let above_ok = (0.9..=1.1).contains(&ratio_above)
            || predicted.step_above_start.abs_diff(above) <= 2 << 20;
        if !(0.9..=1.1).contains(&ratio_total) || !above_ok {
            failures
                .push(format!("{name}: in all {ratio_total:.3}, above the start {ratio_above:.3}"));
        }
    }
    assert!(failures.is_empty(), "outside ±10%: {failures:#?}");
}

/// The settings chosen for a budget are the first candidate (fastest first) whose predicted peak
/// fits; a budget below every candidate is refused with exit code 2 naming the largest `n_query`
/// that fits.
#[test]
fn a_budget_picks_the_fastest_fitting_settings_or_names_the_closest_config() {
    let _serial = serial();
    let config = small("Conv4", 40, 4);
    let options = cpu();
    let all: Vec<_> = plan::budget::candidates(&config)
        .into_iter()
        .map(|c| (c, plan::predict(&c.apply(&config), &options).unwrap()))
        .collect();
    let peaks: Vec<u64> = all.iter().map(|(_, p)| p.peak()).collect();
    eprintln!("candidate peaks: {peaks:?}");
    // A roomy budget: the fastest settings.
    let roomy = Budget(peaks.iter().max().unwrap() + (1 << 20));
    let choice = plan::budget::choose(&config, roomy, &options).unwrap();
    assert_eq!(choice.candidate, all[0].0);
    // Below the f32 peak: the first leaner candidate that fits, never one that does not. The
    // budget sits halfway between the f32 peak (less 3%) and the next peak below that, never a
    // byte under a measurement: a prediction measures allocations, and Flex's per-thread scratch
    // moves it by up to ~1 MiB with the scheduling (CI once measured the f32 candidate a few KiB
    // under its first measurement and chose it for a budget one byte below that).
    let below = peaks[0] - peaks[0] / 33;
    let tight = Budget(match peaks.iter().copied().filter(|&p| p < below).max() {
        Some(next) => next + (below - next) / 2,
        None => below,
    });
    let expected = all.iter().position(|(_, p)| p.peak() <= tight.0);
    match (plan::budget::choose(&config, tight, &options), expected) {
        (Ok(choice), Some(i)) => {
            assert_eq!(choice.candidate, all[i].0);
            assert!(choice.prediction.peak() <= tight.0);
            assert_ne!(choice.candidate, all[0].0);
        }
        (Err(err), None) => assert_eq!(fsct_train::error::exit_code(&err), 2),
        (got, want) => panic!("chose {:?}, expected candidate {want:?}", got.map(|c| c.candidate)),
    }
    // Below every candidate but above the leanest at fewer queries per class: refused, naming the
    // largest n_query that fits. The budget sits halfway between the leanest's peaks at q and
    // q + 1 queries, where `choose`'s own (re)measurement lands on the same q.
    let leanest = &all.last().unwrap().1;
    let min_peak = *peaks.iter().min().unwrap();
    let q = (config.episodes.n_query / 2).max(1);
    let (at_q, above_q) = (leanest.with_n_query(q).peak(), leanest.with_n_query(q + 1).peak());
    assert!(at_q < above_q && above_q < min_peak, "{at_q} < {above_q} < {min_peak}");
    let budget = Budget(at_q + (above_q - at_q) / 2);
    assert_eq!(plan::budget::largest_n_query(leanest, budget), Some(q));
    let err = plan::budget::choose(&config, budget, &options).unwrap_err();
    assert_eq!(fsct_train::error::exit_code(&err), 2);
    let text = fsct_train::error::render(&err);
    assert!(text.contains(&format!("episodes.n_query = {q}")), "{text}");
    assert!(
        text.contains("memory.budget") && text.contains("gradient_checkpoint = \"blocks\""),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
}

/// The binary refuses a budget nothing fits with exit code 2 and one error line.
#[test]
fn train_refuses_a_budget_nothing_fits_with_exit_code_2() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.toml");
    let config = small("Conv4", 32, 2);
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsct-train"))
        .args(["--config", path.to_str().unwrap(), "--budget", "64KiB", "--output"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("memory.budget = 64.0 KiB") || errors[0].contains("memory.budget"),
        "{stderr}"
    );
    assert!(
        errors[0].contains("raise the budget") || errors[0].contains("closest configuration"),
        "{stderr}"
    );
    // `plan` on the same config prints the table and exits 0.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsct-train"))
        .args(["plan", "--config", path.to_str().unwrap(), "--vram", "1,2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("**training step peak**")
            && stdout.contains("1.00 GiB: precision = \"f32\""),
        "{stdout}"
    );
}

/// The presets fit the GPU memory they are for (8, 16, 24 GiB on CUDA), and the predicted peak
/// written in each one's comment is the planner's (within 10%).
#[test]
fn the_presets_fit_their_budgets_and_carry_their_predicted_peak() {
    let _serial = serial();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (file, budget_gib) in
        [("low_8gb.toml", 8.0), ("medium_16gb.toml", 16.0), ("high_24gb.toml", 24.0)]
    {
        let path = root.join(file);
        let config = Config::load(&path).unwrap();
        let options = PlanOptions { device: DeviceKind::Cuda, quick: true };
        let p = plan::predict(&config, &options).unwrap();
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        eprintln!(
            "{file}: step {:.2} GiB, evaluation {:.2} GiB",
            gib(p.step_total),
            gib(p.eval_total)
        );
        assert!(
            p.peak() <= Budget::gib(budget_gib).0,
            "{file}: predicted {:.2} GiB exceeds its {budget_gib} GiB",
            gib(p.peak())
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let written = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("# Predicted peak (fsct-train plan --quick, cuda): training step ")
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{file} has no \"# Predicted peak ...\" comment"));
        let ratio = written / gib(p.step_total);
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{file}: the comment says {written} GiB, the planner {:.2} GiB",
            gib(p.step_total)
        );
    }
}
