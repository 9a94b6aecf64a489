//! `fsct-train import-pytorch`: a reference PyTorch checkpoint converted into an fsct checkpoint
//! (weights only; the trainer state records the epoch it had reached).

use anyhow::Result;
use burn::backend::Flex;
use fsct_backbone::BackboneName;
use fsct_train::checkpoint::{Checkpoint, TrainerState};
use fsct_train::cli::ImportArgs;
use fsct_train::config::Config;
use fsct_train::error::InputError;
use fsct_train::model::build_model;
use fsct_train::weights::model_bytes;
use fsct_transformer::import::{import_reference, ImportOptions};

/// Imports `args.input` into the model `args.config` describes and writes `args.output`.
pub fn import(args: &ImportArgs) -> Result<()> {
    let config = Config::read(&args.config)?;
    config.validate(&args.config)?;
    if args.output.exists() && !args.overwrite {
        return Err(InputError::new(format!(
            "--output `{}` already exists; pass --overwrite to replace it, or choose another path",
            args.output.display()
        ))
        .into());
    }
    let device = Default::default();
    let model = build_model::<Flex>(&config, &device)?;
    // The reference never saves its frozen torchvision ResNets (spec §1.5).
    let frozen = matches!(config.backbone(), BackboneName::ResNet { feti: false, .. });
    // `..Default::default()` keeps this line right when ImportOptions gains a field.
    #[allow(clippy::needless_update)]
    let options = ImportOptions { allow_missing_backbone: frozen, ..Default::default() };
    let (model, report) = import_reference(model, &args.input, &options)?;
    let epochs_done = report.epoch.map_or(0, |e| e.max(0) as usize + 1);
    let state = TrainerState {
        epochs_done,
        best_val_acc: 0.0,
        best_epoch: None,
        steps: 0,
        vic: None,
        scaler: None,
    };
    Checkpoint::new(&config, &state, model_bytes(&model)?, Vec::new()).save(&args.output)?;
    println!(
        "imported {} tensors from {} (epoch {:?}; {} keys ignored{}) into {}",
        report.loaded.len(),
        args.input.display(),
        report.epoch,
        report.ignored.len(),
        if report.backbone_kept { "; backbone kept: the file holds none" } else { "" },
        args.output.display()
    );
    Ok(())
}
