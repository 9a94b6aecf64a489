//! Command-line interface: subcommands and flags that override config fields.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fsct_backbone::BackboneName;

use crate::config::{Config, DeviceKind, Method};
use crate::stats::CiKind;

/// The exit codes, the resume policy and logging, printed by every `--help` (a macro so that
/// each subcommand's examples can be put in front of it with `concat!`).
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  success
  1  a valid run failed: the training diverged (non-finite loss, or mixed precision's loss scale
     stuck at its floor; no result is written), out of memory, an internal error
  2  bad input or environment: config file or flag, dataset, checkpoint, output folder (a file,
     not writable, holding another run without --resume/--overwrite, in use by another process)

Resume (--resume): the run continues from OUTPUT/last.ckpt. optim.epochs, episodes.test_episodes,
data.root, data.threads, data.prefetch, data.cache, run.device, the peers (run.devices, run.nodes,
run.node_rank, run.node_address, run.orchestrator), model.pretrained,
memory.gradient_checkpoint and memory.cleanup_every may change and take effect; every other
field must match the checkpoint (a resume with one changed is refused, naming each field and
both values).

Logging: -q (warnings, errors, results), -v (debug), -vv (trace); RUST_LOG (e.g. RUST_LOG=debug or
RUST_LOG=fsct_train=debug) overrides both. A training run also writes the log to OUTPUT/train.log.

Shell completions: fsct-train completions bash > ~/.local/share/bash-completion/completions/fsct-train"
    };
}

/// Train and evaluate the Few-Shot Cosine Transformer (FS-CT) and CTX on the CPU or CUDA.
///
/// Without a subcommand, `train` runs: episodic training with validation each epoch, the best
/// and last checkpoints in the output folder, then a test of the best model reported as
/// mean ± 95% CI. Flags override the config file's fields.
#[derive(Debug, Parser)]
#[command(
    name = "fsct-train",
    version,
    args_conflicts_with_subcommands = true,
    after_help = concat!(
        "Examples:\n  fsct-train --config configs/quickstart.toml\n  fsct-train --config configs/medium_16gb.toml --epochs 20 --set optim.learning_rate=5e-4\n  fsct-train --config configs/medium_16gb.toml --resume\n\n",
        exit_codes!()
    )
)]
pub struct Cli {
    /// What to do (default: train).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default `train` command.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Print only warnings, errors and results (the log level `warn`; `RUST_LOG` overrides).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail: `-v` debug, `-vv` trace (fsct's own messages; `RUST_LOG` overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The exit codes, the resume policy and logging, printed by `--help`.
pub const EXIT_CODES: &str = exit_codes!();

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train, validate and test (the default).
    Train(TrainArgs),
    /// Test a checkpoint on the test split.
    Test(TestArgs),
    /// Convert a reference PyTorch checkpoint (`.tar` or state dict) into an fsct checkpoint.
    ImportPytorch(ImportArgs),
    /// Predict the peak memory of one training step and one evaluation episode, by component,
    /// without training; with --vram, the settings that fit each budget.
    Plan(PlanArgs),
    /// Classify query images against a labelled support folder (`DIR/<class>/<image>`).
    Predict(PredictArgs),
    /// Write the backbone features of images (`[n, d]` plus their names) as safetensors.
    Embed(EmbedArgs),
    /// Write a checkpoint's weights under the reference's PyTorch key names (safetensors).
    Export(ExportArgs),
    /// Draw the learning curves of one or more runs, overlaid with a legend (SVG and PNG).
    Plot(PlotArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Serve the orchestrator of a multi-node run (burn-collective's global orchestrator): the
    /// nodes register with it through `run.orchestrator`.
    Orchestrator(OrchestratorArgs),
}

/// Options of `orchestrator`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  fsct-train orchestrator --port 3000
  # then on each node (node_rank 0 and 1):
  fsct-train --config configs/miniimagenet.toml --device cuda --devices cuda:0,cuda:1 \\
    --set run.nodes=2 --set run.node_rank=0 --set run.node_address=10.0.0.1:3001 \\
    --set run.orchestrator=10.0.0.1:3000")]
pub struct OrchestratorArgs {
    /// The port to listen on (all interfaces).
    #[arg(long)]
    pub port: u16,
}

/// Options of `plot`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Examples:\n  fsct-train plot runs/cub_fsct runs/cub_ctx --output cub-compare\n  fsct-train plot runs/*/ --output all.svg --overwrite\n\nEach run also keeps its own curves (curves.svg, curves.png), redrawn after every epoch.\n\n", exit_codes!()))]
pub struct PlotArgs {
    /// Run folders (each holds the metrics.jsonl a training run writes); the legend names each
    /// by its folder's name.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where to write: PATH.svg and PATH.png (an .svg or .png extension given is replaced by each).
    #[arg(long, default_value = "curves-compare")]
    pub output: PathBuf,
    /// Replace the output files if they exist.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `completions`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  fsct-train completions bash > ~/.local/share/bash-completion/completions/fsct-train
  fsct-train completions zsh > ~/.zfunc/_fsct-train
  fsct-train completions fish > ~/.config/fish/completions/fsct-train.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `predict`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Examples:\n  fsct-train predict --checkpoint runs/cub/best.ckpt --support my_support/ --query photos/\n  fsct-train predict --checkpoint runs/cub/best.ckpt --support my_support/ --query a.jpg b.jpg --output preds.csv\n\n", exit_codes!()))]
pub struct PredictArgs {
    /// An fsct checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The labelled examples: one sub-folder per class, at least the model's k_shot images each
    /// (more are sampled with --seed). FS-CT needs exactly its training's n_way classes.
    #[arg(long)]
    pub support: PathBuf,
    /// Query images: files or folders (searched recursively).
    #[arg(long, num_args = 1.., required = true)]
    pub query: Vec<PathBuf>,
    /// Seed of the support sample when a class has more images than k_shot.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the predictions: `.csv` or `.json` by the extension.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Replace --output if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `embed`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Example:\n  fsct-train embed --checkpoint runs/cub/best.ckpt --images photos/ --output feats.safetensors\n\n", exit_codes!()))]
pub struct EmbedArgs {
    /// An fsct checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images: files or folders (searched recursively).
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// The safetensors file to write (`features` `[n, d]` f32; the image names in its metadata
    /// under `names`, a JSON list in the same order).
    #[arg(long)]
    pub output: PathBuf,
    /// Images per backbone forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Replace --output if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `export`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Example:\n  fsct-train export --checkpoint runs/cub/best.ckpt --output fsct_cub.safetensors\n\n", exit_codes!()))]
pub struct ExportArgs {
    /// An fsct checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Replace --output if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Options of `plan`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Examples:\n  fsct-train plan --config configs/medium_16gb.toml --device cuda --vram 8,12,16,24\n  fsct-train plan --config configs/low_8gb.toml --quick\n\n", exit_codes!()))]
pub struct PlanArgs {
    /// The experiment's TOML config.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The device to plan for: `cpu`, `cuda` or `vulkan` (default: the config's `run.device`; a
    /// GPU adds its allocator's overhead). Planning itself runs on the CPU: no GPU is needed.
    #[arg(long, value_parser = parse_device)]
    pub device: Option<DeviceKind>,
    /// Device memory budgets in GiB, comma-separated (e.g. 8,12,16,24): which settings fit each,
    /// and the fastest that does.
    #[arg(long, value_delimiter = ',', value_parser = parse_gib)]
    pub vram: Vec<f64>,
    /// Measure the backbone on 1 and 2 images and extend along a line (seconds; less exact)
    /// instead of on the episode's images (about two training steps of the backbone per setting).
    #[arg(long)]
    pub quick: bool,
}

/// Options of `train`.
#[derive(Debug, Clone, Args, Default)]
pub struct TrainArgs {
    /// The experiment's TOML config (see configs/).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Output folder for checkpoints, metrics and results (`run.output`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Epochs (`optim.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training episodes per epoch (`episodes.train_episodes`).
    #[arg(long)]
    pub train_episodes: Option<usize>,
    /// Validation episodes per epoch (`episodes.val_episodes`).
    #[arg(long)]
    pub val_episodes: Option<usize>,
    /// Test episodes (`episodes.test_episodes`).
    #[arg(long)]
    pub test_episodes: Option<usize>,
    /// Seed of initialisation and episodes (`run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `cpu`, `cuda` or `vulkan` (`run.device`; the GPU ones need a build with that feature).
    #[arg(long, value_parser = parse_device)]
    pub device: Option<DeviceKind>,
    /// Continue from the output folder's last checkpoint (`run.resume`; see the resume policy below).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Data-parallel peers on this node, comma-separated (`run.devices`): `cuda:0,cuda:1`, or
    /// `cpu:0,cpu:1` for CPU peers (threads sharing the cores).
    #[arg(long)]
    pub devices: Option<String>,
    /// Replace the checkpoints and metrics of a run already in the output folder (without this, a
    /// new run into a folder that holds one is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Backbone, e.g. Conv4 or ResNet18 (`model.backbone`).
    #[arg(long, value_parser = parse_backbone)]
    pub backbone: Option<BackboneName>,
    /// FSCT_cosine, FSCT_softmax, CTX_cosine or CTX_softmax (`model.method`).
    #[arg(long, value_parser = parse_method)]
    pub method: Option<Method>,
    /// Image side in pixels (`data.image_size`).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Loader threads (`data.threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A memory budget, e.g. 8GiB (`memory.budget`): the planner picks the fastest precision and
    /// checkpointing that fit before training, or refuses naming the closest configuration that
    /// would.
    #[arg(long, value_parser = parse_budget)]
    pub budget: Option<crate::plan::Budget>,
    /// Any config field, as `section.field=value` in the file's syntax (`--set
    /// optim.learning_rate=5e-4 --set memory.precision=mixed-f16`); repeatable, applied after
    /// the other flags, validated like the file.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
}

/// Options of `test`.
#[derive(Debug, Clone, Args)]
#[command(after_help = concat!("Examples:\n  fsct-train test --checkpoint runs/cub/best.ckpt\n  fsct-train test --checkpoint runs/cub/best.ckpt --n-query 15 --episodes 600 --seed 1 --ci student-t\n  fsct-train test --checkpoint runs/cub/best.ckpt --config configs/miniimagenet.toml\n\n", exit_codes!()))]
pub struct TestArgs {
    /// An fsct checkpoint (`best.ckpt`, `last.ckpt` or an imported one).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Test episodes (default: the checkpoint config's, the reference's 600).
    #[arg(long, alias = "test-episodes")]
    pub episodes: Option<usize>,
    /// Query images per class (the field's test standard is 15; default: the training's).
    #[arg(long)]
    pub n_query: Option<usize>,
    /// Classes per episode (CTX only: FS-CT's prototype weights fix the training's way).
    #[arg(long)]
    pub n_way: Option<usize>,
    /// Support images per class (CTX only: FS-CT's prototype weights fix the training's shot).
    #[arg(long)]
    pub k_shot: Option<usize>,
    /// Seed of the test episodes (default: the checkpoint config's `run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The 95% interval: `reference` (1.96·σ/√n, population σ, as the reference reports it) or
    /// `student-t` (t·s/√n, sample s, as LibFewShot reports it).
    #[arg(long, default_value = "reference", value_parser = parse_ci)]
    pub ci: CiKind,
    /// Where `summary.json`, `per_class.csv` and `confusion.csv` go (default:
    /// `tests/<checkpoint>-<dataset>-<N>w<K>s<M>q-<episodes>ep-seed<seed>` beside the checkpoint).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Replace the files of an earlier test with the same protocol (or in `--output`).
    #[arg(long)]
    pub overwrite: bool,
    /// A config whose `[data]` section replaces the checkpoint's (e.g. another dataset path).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `cpu` (`test` runs on the CPU in this version).
    #[arg(long, value_parser = parse_device)]
    pub device: Option<DeviceKind>,
}

fn parse_ci(s: &str) -> Result<CiKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "reference" | "normal" => Ok(CiKind::Reference),
        "student-t" | "t" | "student" => Ok(CiKind::StudentT),
        _ => Err(format!("unknown interval `{s}`: use reference or student-t")),
    }
}

/// Options of `import-pytorch`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The reference checkpoint (`best_model.tar`, `{epoch}.tar` or a state-dict `.pt`).
    #[arg(long)]
    pub input: PathBuf,
    /// The config describing the model it holds (method, backbone, n_way, k_shot, image size).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Where to write the fsct checkpoint.
    #[arg(long)]
    pub output: PathBuf,
    /// Replace `--output` if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" | "gpu" => Ok(DeviceKind::Cuda),
        "vulkan" => Ok(DeviceKind::Vulkan),
        _ => Err(format!("unknown device `{s}`: use cpu, cuda or vulkan")),
    }
}

fn parse_gib(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches("GiB").trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a memory size in GiB: write e.g. --vram 8,12,16,24")),
    }
}

fn parse_budget(s: &str) -> Result<crate::plan::Budget, String> {
    s.parse()
}

fn parse_backbone(s: &str) -> Result<BackboneName, String> {
    s.parse().map_err(|err: fsct_backbone::BackboneError| err.to_string())
}

fn parse_method(s: &str) -> Result<Method, String> {
    toml::Value::String(s.into()).try_into::<Method>().map_err(|_| {
        format!("unknown method `{s}`: use FSCT_cosine, FSCT_softmax, CTX_cosine or CTX_softmax")
    })
}

impl TrainArgs {
    /// The flag that set `field` (a dotted config field), if one did (the last `--set` of it
    /// wins over a dedicated flag, as it is applied last).
    pub fn flag_for(&self, field: &str) -> Option<String> {
        if let Some(assignment) = self.set.iter().rev().find(|a| a.split('=').next() == Some(field))
        {
            return Some(format!("--set {assignment}"));
        }
        let set = |flag: &'static str, is_set: bool| is_set.then(|| flag.to_string());
        match field {
            "run.output" => set("--output", self.output.is_some()),
            "optim.epochs" => set("--epochs", self.epochs.is_some()),
            "episodes.train_episodes" => set("--train-episodes", self.train_episodes.is_some()),
            "episodes.val_episodes" => set("--val-episodes", self.val_episodes.is_some()),
            "episodes.test_episodes" => set("--test-episodes", self.test_episodes.is_some()),
            "run.seed" => set("--seed", self.seed.is_some()),
            "run.device" | "memory.precision" => set("--device", self.device.is_some()),
            "run.devices" => set("--devices", self.devices.is_some()),
            "model.backbone" => set("--backbone", self.backbone.is_some()),
            "model.method" => set("--method", self.method.is_some()),
            "data.image_size" => set("--image-size", self.image_size.is_some()),
            "data.threads" => set("--threads", self.threads.is_some()),
            "memory.budget" => set("--budget", self.budget.is_some()),
            _ => None,
        }
    }

    /// Re-attributes a validation error to the flag that set its field, if a flag did.
    pub fn blame(&self, err: crate::config::ConfigError) -> crate::config::ConfigError {
        use crate::config::ConfigError;
        match err {
            ConfigError::Invalid { field, why, path } => match self.flag_for(&field) {
                Some(flag) => ConfigError::Flag { flag, field, why },
                None => ConfigError::Invalid { path, field, why },
            },
            other => other,
        }
    }

    /// Applies the `--set` assignments, after [`Self::apply`].
    ///
    /// # Errors
    /// A [`ConfigError::Flag`](crate::config::ConfigError::Flag) naming the assignment: not
    /// `field=value`, an unknown field, or a value of the wrong type.
    pub fn apply_sets(&self, config: &mut Config) -> Result<(), crate::config::ConfigError> {
        for assignment in &self.set {
            let flag = format!("--set {assignment}");
            let Some((field, value)) = assignment.split_once('=') else {
                return Err(crate::config::ConfigError::Flag {
                    flag,
                    field: assignment.clone(),
                    why: "has no value: write --set section.field=value".into(),
                });
            };
            let (field, value) = (field.trim(), value.trim());
            config.set_field(field, value).map_err(|why| crate::config::ConfigError::Flag {
                flag: flag.clone(),
                field: field.to_string(),
                why: format!("cannot be set: {why}"),
            })?;
        }
        Ok(())
    }

    /// Applies the flags to a config.
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.output {
            config.run.output = v.clone();
        }
        if let Some(v) = self.epochs {
            config.optim.epochs = v;
        }
        if let Some(v) = self.train_episodes {
            config.episodes.train_episodes = v;
        }
        if let Some(v) = self.val_episodes {
            config.episodes.val_episodes = Some(v);
        }
        if let Some(v) = self.test_episodes {
            config.episodes.test_episodes = v;
        }
        if let Some(v) = self.seed {
            config.run.seed = v;
        }
        if let Some(v) = self.device {
            config.run.device = v;
        }
        if self.resume {
            config.run.resume = true;
        }
        if let Some(v) = &self.devices {
            config.run.devices = Some(v.clone());
        }
        if self.overwrite {
            config.run.overwrite = true;
        }
        if let Some(v) = &self.backbone {
            config.model.backbone = *v;
        }
        if let Some(v) = self.method {
            config.model.method = v;
        }
        if let Some(v) = self.image_size {
            config.data.image_size = Some(v);
        }
        if let Some(v) = self.threads {
            config.data.threads = v;
        }
        if let Some(v) = self.budget {
            config.memory.budget = Some(v);
        }
    }
}
