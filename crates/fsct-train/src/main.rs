//! `fsct-train`: parses the command line, runs the subcommand (one file each in [`commands`]; the
//! backend is picked there: Flex on the CPU, CUDA with `--features cuda`, Vulkan with
//! `--features vulkan`, the GPU part in [`gpu`]), and reports every error as one line and an exit
//! code: 2 for bad input or environment (config, flags, data, checkpoints, output folder), 1 for a
//! valid run that failed (divergence, out of memory, an internal error). See
//! [`fsct_train::error`].

use std::process::ExitCode;

use clap::Parser;
use fsct_train::cli::Cli;
use fsct_train::error::{exit_code, render};

mod commands;
mod gpu;

/// Large activation buffers on huge pages: far fewer page faults per step (see the module),
/// counted (two relaxed atomics per call) for the memory planner (`plan`, `memory.budget`).
#[global_allocator]
static GLOBAL: fsct_train::alloc_count::CountingAlloc<fsct_train::hugepages::HugePageAllocator> =
    fsct_train::alloc_count::CountingAlloc::new(fsct_train::hugepages::HugePageAllocator);

/// The GPU runtimes' messages (wgpu, cubecl) only when they warn, whatever the verbosity.
const QUIET_RUNTIMES: &str =
    "wgpu=warn,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl_wgpu=warn,cubecl_cuda=warn,cubecl_runtime=warn";

/// The log filter without `RUST_LOG`: `info` by default, `warn` with `-q`, `debug` with `-v`,
/// `trace` with `-vv`.
fn default_filter(cli: &Cli) -> String {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    format!("{level},{QUIET_RUNTIMES}")
}

/// Tracing to stderr (coloured on a terminal) and, once a run has claimed its folder, to its
/// `train.log` (plain text): see [`fsct_train::run_log`].
fn init_logging(cli: &Cli) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(cli)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(fsct_train::run_log::RunLogWriter)
        .with_target(false)
        .with_ansi(false);
    tracing_subscriber::registry().with(filter).with(console).with(file).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    // A panic is a bug in fsct-train (every input error is checked before it could reach one):
    // one line that says so, no backtrace, exit code 1.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        let place =
            info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error in fsct-train ({message}{place}); please report it with the command and config");
    }));
    match std::panic::catch_unwind(|| commands::run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {}", render(&err));
            ExitCode::from(exit_code(&err))
        }
        Err(_) => ExitCode::from(1),
    }
}
