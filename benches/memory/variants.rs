//! The configurations compared, each a change to the baseline trainer config.

use fsct_train::config::{Checkpointing, Config, Method, Precision};
use fsct_vic::CovarianceMode;

/// One row of the table.
pub struct Variant {
    /// As the memory guide names it.
    pub name: &'static str,
    /// Applied to the baseline config.
    pub apply: fn(&mut Config),
    /// Printed in the note column whatever was measured.
    pub note: &'static str,
    /// Only on a GPU (pure half: Flex computes in f32).
    pub gpu_only: bool,
}

/// Baseline first: every ratio is taken against it.
pub fn all() -> Vec<Variant> {
    vec![
        Variant { name: "baseline f32", apply: |_| {}, note: "", gpu_only: false },
        Variant {
            name: "+ balanced checkpointing",
            apply: |c| c.memory.gradient_checkpoint = Checkpointing::Balanced,
            note: "Autodiff<_, BalancedCheckpointing>",
            gpu_only: false,
        },
        Variant {
            name: "+ block checkpointing",
            apply: |c| c.memory.gradient_checkpoint = Checkpointing::Blocks,
            note: "each block keeps its input, runs again in the backward pass",
            gpu_only: false,
        },
        Variant {
            name: "+ stage checkpointing",
            apply: |c| c.memory.gradient_checkpoint = Checkpointing::Stages,
            note: "each ResNet stage keeps its input (Conv: as blocks)",
            gpu_only: false,
        },
        Variant {
            name: "+ mixed f16",
            apply: |c| c.memory.precision = Precision::MixedF16,
            note: "",
            gpu_only: false,
        },
        Variant {
            name: "+ pure f16",
            apply: |c| c.memory.precision = Precision::F16,
            note: "",
            gpu_only: true,
        },
        Variant {
            name: "+ VIC naive",
            apply: |c| vic(c, CovarianceMode::Naive),
            note: "d×d covariance",
            gpu_only: false,
        },
        Variant {
            name: "+ VIC Gram",
            apply: |c| vic(c, CovarianceMode::Gram),
            note: "n×n Gram form",
            gpu_only: false,
        },
        Variant {
            name: "+ cache clearing",
            apply: |c| c.memory.cleanup_every = 1,
            note: "memory_cleanup every step",
            gpu_only: false,
        },
        Variant {
            name: "all combined",
            apply: |c| {
                c.memory.gradient_checkpoint = Checkpointing::Blocks;
                c.memory.precision = Precision::MixedF16;
                vic(c, CovarianceMode::Gram);
                c.memory.cleanup_every = 1;
            },
            note: "block checkpointing + mixed f16 + VIC Gram + cache clearing",
            gpu_only: false,
        },
        Variant {
            name: "all combined, pure f16",
            apply: |c| {
                c.memory.gradient_checkpoint = Checkpointing::Blocks;
                c.memory.precision = Precision::F16;
                vic(c, CovarianceMode::Gram);
                c.memory.cleanup_every = 1;
            },
            note: "block checkpointing + pure f16 + VIC Gram + cache clearing",
            gpu_only: true,
        },
    ]
}

fn vic(config: &mut Config, covariance: CovarianceMode) {
    config.model.use_vic = true;
    config.vic.covariance = covariance;
}

/// The baseline: the reference's episode and transformer settings (spec §3.1: 5-way 5-shot, 16
/// queries unless the plan says otherwise, FS-CT cosine, depth 1, 8 heads of 64, FFN 512, AdamW 1e-3 / 1e-5), f32, no VIC, no
/// cleanup. ResNets are trained end to end, as in the memory guide's presets (the reference
/// freezes its torchvision ResNets, which would leave nothing for checkpointing to save).
pub fn baseline(backbone: &str, image_size: usize, n_query: usize) -> Config {
    let mut config = Config::default();
    (config.episodes.n_way, config.episodes.k_shot, config.episodes.n_query) = (5, 5, n_query);
    config.model.method = Method::FsctCosine;
    // A name from FSCT_BENCH_BACKBONES that is not a backbone stops the bench, naming the choices.
    config.model.backbone =
        backbone.parse().unwrap_or_else(|err| panic!("FSCT_BENCH_BACKBONES: {err}"));
    config.model.train_backbone = true;
    config.data.image_size = Some(image_size);
    config.memory.cleanup_every = 0;
    config.memory.precision = Precision::F32;
    config.memory.gradient_checkpoint = Checkpointing::None;
    config.model.use_vic = false;
    config
}
