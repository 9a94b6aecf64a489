//! The binary's subcommands, one file each, over the library's shared pieces (the
//! [`Trainer`](fsct_train::trainer::Trainer), [`evaluate`](fsct_train::evaluate), checkpoint
//! weights in [`weights`](fsct_train::weights), the results line in
//! [`outputs`](fsct_train::outputs)):
//!
//! - [`train`]: the default; picks the backend and runs the experiment;
//! - [`test`]: tests a checkpoint on the test split;
//! - [`import`]: converts a reference PyTorch checkpoint into an fsct one;
//! - [`plan`]: the memory planner's tables;
//! - [`predict`], [`embed`], [`export`]: using a trained model (classify images, backbone
//!   features, weights under the reference's key names);
//! - [`plot`]: the learning curves of several runs overlaid;
//! - `completions`: a shell completion script (clap_complete), in [`run`].

use anyhow::Result;
use fsct_train::cli::{Cli, Command};

pub mod embed;
pub mod export;
pub mod import;
pub mod plan;
pub mod plot;
pub mod predict;
pub mod test;
pub mod train;

/// Runs the command line's subcommand (`train` when none is named).
pub fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(args) => train::train(&args).map(|_| ()),
        Command::Test(args) => test::test(&args),
        Command::ImportPytorch(args) => import::import(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::Predict(args) => predict::predict(&args),
        Command::Embed(args) => embed::embed(&args),
        Command::Export(args) => export::export(&args),
        Command::Plot(args) => plot::plot(&args),
        Command::Orchestrator(args) => fsct_train::parallel::orchestrator::serve(args.port),
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "fsct-train", &mut std::io::stdout());
            Ok(())
        }
    }
}
