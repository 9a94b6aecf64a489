//! `fsct-train export`: a checkpoint's weights under the reference's PyTorch key names and
//! layouts, as safetensors ([`fsct_transformer::export`]), for PyTorch users.

use anyhow::Result;
use burn::backend::Flex;
use fsct_train::cli::ExportArgs;
use fsct_train::outputs::write_new_file;
use fsct_train::weights::load_checkpoint_file;

/// Exports the checkpoint of `args`.
pub fn export(args: &ExportArgs) -> Result<()> {
    let device = Default::default();
    let (config, model) = load_checkpoint_file::<Flex>(&args.checkpoint, &device)?;
    let bytes = fsct_transformer::export::to_safetensors::<Flex, _>(&model)?;
    write_new_file(&args.output, &bytes, args.overwrite, "--output")?;
    println!(
        "exported {} ({}) to {} under the reference's key names; in PyTorch: \
         model.load_state_dict(safetensors.torch.load_file(path))",
        args.checkpoint.display(),
        config.setting_name(),
        args.output.display()
    );
    Ok(())
}
