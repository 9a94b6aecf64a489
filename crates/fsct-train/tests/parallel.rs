//! Data-parallel training (issue 19): peers as threads on the CPU, gradient accumulation, the
//! multi-node path over loopback, and the errors of bad peer settings.
//!
//! Burn's collective engine keeps one local server per backend type in the process, and Flex's
//! random generator is global: the tests of this file that train in-process run one at a time.

#[allow(dead_code)] // TINY: this file has its own run (4 episodes an epoch)
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use fsct_train::checkpoint::Checkpoint;
use fsct_train::config::Config;
use fsct_train::train::{run_experiment, RunSummary};

use common::{run_binary, s};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// 3-way 2-shot at 16 px: 2 epochs of 4 episodes (2 steps of 2), 3 validation episodes (split
/// 2 + 1 over two peers), 5 test episodes.
const TINY: &str = r#"
[data]
kind = "synthetic"
synthetic_classes = 20
synthetic_images_per_class = 8
synthetic_native_size = 24
image_size = 16
threads = 1
[episodes]
n_way = 3
k_shot = 2
n_query = 2
train_episodes = 4
val_episodes = 3
test_episodes = 5
[model]
backbone = "Conv4"
[optim]
epochs = 2
"#;

fn tiny(output: &Path, extra: &str) -> Config {
    let text = format!("{TINY}\n[run]\n{extra}\n");
    let mut config = Config::parse(&text, Path::new("tiny.toml")).unwrap();
    config.run.output = output.to_path_buf();
    config.validate(Path::new("tiny.toml")).unwrap();
    config
}

fn train(config: &Config) -> RunSummary {
    run_experiment::<Autodiff<Flex>>(config, &Default::default()).unwrap()
}

/// As [`train`], with one compute thread per peer, whatever the machine: each peer's rayon pool
/// is its share of the calling pool's threads.
fn train_1_thread_per_peer(config: &Config) -> RunSummary {
    let peers = config.run.devices.as_deref().map_or(1, |d| d.split(',').count());
    rayon::ThreadPoolBuilder::new().num_threads(peers).build().unwrap().install(|| train(config))
}

/// Every parameter of a checkpoint's model, in the model's order.
fn params(config: &Config, file: &Path) -> Vec<f32> {
    struct Collect<'a>(&'a mut Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.extend(p.val().cast(FloatDType::F32).into_data().iter::<f32>());
        }
    }
    let device = Default::default();
    let ckpt = Checkpoint::load(file).unwrap();
    let model = fsct_train::model::build_model::<Flex>(config, &device).unwrap();
    let model = fsct_train::weights::load_checkpoint_model(model, &ckpt, file, &device).unwrap();
    let mut out = Vec::new();
    model.visit(&mut Collect(&mut out));
    out
}

/// The epoch lines of a `metrics.jsonl` (the test's line aside).
fn epoch_lines(metrics: &str) -> usize {
    metrics.lines().filter(|l| l.contains("\"epoch\":")).count()
}

/// The largest difference between two parameter vectors.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// How far apart two runs that should train alike may be: not at all. Both sum the same two
/// episode gradients in f32 with one addition (`g0 + g1` on one device; the all-reduce's `g0 + g1`
/// or `g1 + g0` between two peers: IEEE addition is commutative), divide by 2 and take the same
/// AdamW step, and every other computation is a peer's own, on the same episode as on one device
/// — bit for bit equal as long as each peer computes with as many threads as the single device
/// (Flex's kernels round the same for the same thread count), which [`train_1_thread_per_peer`]
/// ensures. With different thread counts the runs are equal to ~1e-7 in every parameter except
/// the convolution biases that a BatchNorm follows (and its running means): their true gradient
/// is 0, AdamW turns their rounding noise into ±lr steps, and they differ by up to lr per step
/// (measured: 2.9e-3 after 4 steps at lr = 1e-3).
const TOLERANCE: f32 = 0.0;

#[test]
fn two_peers_train_as_one_device_accumulating_two_episodes_and_resume_on_either() {
    let _guard = serial();
    let root = tempfile::tempdir().unwrap();
    // Two CPU peers, one episode each per step (episodes.per_step defaults to the peers).
    let peers = tiny(&root.path().join("peers"), "devices = \"cpu:0,cpu:1\"");
    let two = train_1_thread_per_peer(&peers);
    // One device, two episodes per step.
    let accum = tiny(&root.path().join("accum"), "");
    let mut accum = accum;
    accum.episodes.per_step = Some(2);
    let one = train_1_thread_per_peer(&accum);

    let (p, a) = (
        params(&peers, &peers.run.output.join("last.ckpt")),
        params(&accum, &accum.run.output.join("last.ckpt")),
    );
    let diff = worst(&p, &a);
    eprintln!("2 peers × 1 episode vs 1 device × 2 episodes: largest parameter difference {diff:e} over {} values", p.len());
    assert!(diff <= TOLERANCE, "parameters differ by {diff}");
    // Validation and test split across the peers give one device's figures.
    if diff == 0.0 {
        assert_eq!(two.best_val_acc, one.best_val_acc);
        assert_eq!((two.test_acc, two.test_ci95), (one.test_acc, one.test_ci95));
    }
    // Rank 0 wrote the run's files, once.
    let metrics = std::fs::read_to_string(peers.run.output.join("metrics.jsonl")).unwrap();
    assert_eq!(epoch_lines(&metrics), 2, "{metrics}");
    let results = std::fs::read_to_string(peers.run.output.join("results.txt")).unwrap();
    assert_eq!(results.lines().count(), 1, "{results}");
    assert!(peers.run.output.join("best.ckpt").exists());

    // Resume across peer counts: one epoch on one device (accumulating), the second on two peers.
    let mut first = tiny(&root.path().join("resumed"), "");
    first.episodes.per_step = Some(2);
    first.optim.epochs = 1;
    train_1_thread_per_peer(&first);
    let mut second = tiny(&root.path().join("resumed"), "devices = \"cpu:0,cpu:1\"\nresume = true");
    second.episodes.per_step = Some(2);
    train_1_thread_per_peer(&second);
    let r = params(&second, &second.run.output.join("last.ckpt"));
    let diff = worst(&r, &a);
    eprintln!("resumed on 2 peers after 1 epoch on 1 device: largest difference {diff:e}");
    assert!(diff <= TOLERANCE, "the resumed run's parameters differ by {diff}");
    let metrics = std::fs::read_to_string(second.run.output.join("metrics.jsonl")).unwrap();
    assert_eq!(epoch_lines(&metrics), 2, "{metrics}");
}

#[test]
fn one_device_through_the_parallel_step_is_the_plain_step() {
    // episodes.per_step = 1 on one device: the data-parallel step (flatten, reduce, unflatten,
    // mean over 1) must give the plain step's parameters bit for bit.
    let _guard = serial();
    use fsct_train::step::{new_optimizer, new_trainer_state, train_step};
    type A = Autodiff<Flex>;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(dir.path(), "");
    config.model.use_vic = true;
    let device = Default::default();
    // Two models built alike, not clones: a clone shares its BatchNorm running statistics.
    let build = || {
        A::seed(&device, 7);
        fsct_train::model::build_model::<A>(&config, &device).unwrap()
    };
    let (m1, m2) = (build(), build());
    let x = Tensor::<A, 5>::random([3, 4, 3, 16, 16], burn::tensor::Distribution::Default, &device);
    let (mut o1, mut o2) = (new_optimizer::<A>(&config), new_optimizer::<A>(&config));
    let (mut s1, mut s2) = (new_trainer_state(&config), new_trainer_state(&config));
    let (m1, out1) = train_step(&config, m1, &mut o1, &mut s1, x.clone(), &device).unwrap();
    let peer = fsct_train::parallel::Peer::alone(1);
    let (m2, out2) =
        fsct_train::parallel::parallel_step(&config, m2, &mut o2, &mut s2, &peer, vec![x], &device)
            .unwrap();
    let flat = |m: &fsct_train::model::AnyModel<A>| {
        struct Collect<'a>(&'a mut Vec<f32>);
        impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.extend(p.val().into_data().iter::<f32>());
            }
        }
        let mut v = Vec::new();
        burn::module::AutodiffModule::valid(m).visit(&mut Collect(&mut v));
        v
    };
    assert_eq!(worst(&flat(&m1), &flat(&m2)), 0.0);
    assert!(out1.applied && out2.applied);
    assert!((out1.loss - out2.loss).abs() < 1e-6 * out1.loss.abs().max(1.0), "{out1:?} {out2:?}");
    assert_eq!(s1.steps, s2.steps);
    let (v1, v2) = (s1.vic.unwrap(), s2.vic.unwrap());
    assert!((v1.ema_variance - v2.ema_variance).abs() < 1e-6, "{v1:?} {v2:?}");
}

/// A child process killed when dropped (a test that fails never leaves one behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` at most until `deadline`; `None` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port free now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_nodes_and_an_orchestrator_on_loopback_train_as_two_peers() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let bin = env!("CARGO_BIN_EXE_fsct-train");
    let (orchestrator_port, p0, p1) = (free_port(), free_port(), free_port());
    let orchestrator = Killed(
        Command::new(bin)
            .args(["orchestrator", "--port", &orchestrator_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node = |rank: usize, port: u16| {
        let out = root.path().join(format!("node{rank}"));
        let log = root.path().join(format!("node{rank}.log"));
        let child = Command::new(bin)
            .args(["--config", s(&config), "--output", s(&out), "-q"])
            .args(["--set", "run.nodes=2", "--set", &format!("run.node_rank={rank}")])
            .args(["--set", &format!("run.node_address=127.0.0.1:{port}")])
            .args(["--set", &format!("run.orchestrator=127.0.0.1:{orchestrator_port}")])
            .env("FSCT_COLLECTIVE_TIMEOUT", "60")
            // One compute thread per peer, as the local run below (see TOLERANCE).
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Killed(child), out, log)
    };
    let (mut n0, out0, log0) = node(0, p0);
    let (mut n1, out1, log1) = node(1, p1);
    // Bounded: a hang fails the test (and the children are killed), never the CI job.
    let deadline = Instant::now() + Duration::from_secs(240);
    let s0 = wait_until(&mut n0.0, deadline);
    let s1 = wait_until(&mut n1.0, deadline);
    drop((n0, n1));
    let e0 = std::fs::read_to_string(log0).unwrap_or_default();
    let e1 = std::fs::read_to_string(log1).unwrap_or_default();
    drop(orchestrator);
    assert!(s0.is_some_and(|s| s.success()), "node 0: {s0:?}\n{e0}\nnode 1: {s1:?}\n{e1}");
    assert!(s1.is_some_and(|s| s.success()), "node 1: {s1:?}\n{e1}\nnode 0: {e0}");
    // Node 0 wrote the run; node 1 nothing.
    assert!(out0.join("last.ckpt").exists() && out0.join("results.txt").exists());
    assert!(!out1.join("last.ckpt").exists() && !out1.join("metrics.jsonl").exists());

    // The same as two peers in one process (the global all-reduce sums the same two gradients).
    let _guard = serial();
    let local = tiny(&root.path().join("local"), "devices = \"cpu:0,cpu:1\"");
    train_1_thread_per_peer(&local);
    let c0 = tiny(&out0, "");
    let diff = worst(
        &params(&c0, &out0.join("last.ckpt")),
        &params(&local, &local.run.output.join("last.ckpt")),
    );
    eprintln!("two nodes vs two local peers: largest parameter difference {diff:e}");
    assert!(diff <= TOLERANCE, "parameters differ by {diff}");
}

#[test]
fn bad_peer_settings_are_one_error_naming_the_field_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let out = root.path().join("out");
    let base = ["--config", s(&config), "--output", s(&out)];
    for (flags, field) in [
        (vec!["--devices", "tpu:0"], "run.devices"),
        (vec!["--devices", "cuda:0,cuda:1"], "run.devices"),
        (vec!["--devices", "cpu:0,cpu:1", "--set", "episodes.per_step=3"], "episodes.per_step"),
        (vec!["--set", "run.nodes=2"], "run.node_address"),
        (
            vec![
                "--set",
                "run.nodes=2",
                "--set",
                "run.node_address=127.0.0.1:1",
                "--set",
                "run.orchestrator=nowhere",
            ],
            "run.orchestrator",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(flags.iter().copied()).collect();
        let (code, _, stderr) = run_binary(&args, None);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(field), "{flags:?} should name {field}: {stderr}");
    }
    // An orchestrator on a busy port.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (code, _, stderr) = run_binary(&["orchestrator", "--port", &port], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--port"), "{stderr}");
    drop(busy);
    // An orchestrator nobody serves: one error naming run.orchestrator once the wait is over.
    let port = free_port();
    let log = root.path().join("unreachable.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fsct-train"));
    command
        .args(base)
        .args([
            "--set",
            "run.nodes=2",
            "--set",
            &format!("run.node_address=127.0.0.1:{}", free_port()),
        ])
        .args(["--set", &format!("run.orchestrator=127.0.0.1:{port}")])
        .env("FSCT_COLLECTIVE_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = Killed(command.spawn().unwrap());
    let status = wait_until(&mut child.0, Instant::now() + Duration::from_secs(120));
    drop(child);
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("run.orchestrator") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_peer_that_stops_ends_the_all_reduce_its_partner_waits_in() {
    use fsct_train::parallel::peer::PeerStopped;
    use fsct_train::parallel::{Layout, Peer};
    let _guard = serial();
    let layout = Layout {
        kind: fsct_train::config::DeviceKind::Cpu,
        local: vec![0, 1],
        nodes: 1,
        node_rank: 0,
        per_step: 2,
        global: None,
    };
    let other = layout.clone();
    let stopper = std::thread::spawn(move || {
        let peer = Peer::join::<Flex>(&other, 1, Default::default()).unwrap();
        // Peer 0 is waiting in its all-reduce by now; this one fails instead of joining it.
        std::thread::sleep(Duration::from_millis(300));
        peer.abort::<Flex>();
    });
    let peer = Peer::join::<Flex>(&layout, 0, Default::default()).unwrap();
    let started = Instant::now();
    let err = peer.sum(Tensor::<Flex, 1>::ones([4], &Default::default())).unwrap_err();
    stopper.join().unwrap();
    assert!(err.downcast_ref::<PeerStopped>().is_some(), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The session is over: a new one can start in the same process.
    let again = layout.clone();
    let second = std::thread::spawn(move || {
        let peer = Peer::join::<Flex>(&again, 1, Default::default()).unwrap();
        let sum = peer.sum(Tensor::<Flex, 1>::ones([3], &Default::default())).unwrap();
        peer.finish::<Flex>();
        sum
    });
    let peer = Peer::join::<Flex>(&layout, 0, Default::default()).unwrap();
    let sum = peer.sum(Tensor::<Flex, 1>::ones([3], &Default::default())).unwrap();
    peer.finish::<Flex>();
    assert_eq!(sum.into_data().to_vec::<f32>().unwrap(), vec![2.0; 3]);
    assert_eq!(second.join().unwrap().into_data().to_vec::<f32>().unwrap(), vec![2.0; 3]);
}
