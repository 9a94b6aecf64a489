//! Pretrained ResNet weights: a torchvision ImageNet state dict or the reference's
//! `Pretrained_ResNet_FETI.pt.tar`, loaded into a [`ResNet`] of the matching layout through the
//! same checked reader as [`import_reference`](super::import_reference).

use std::path::Path;

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use fsct_backbone::{ResNet, ResNetStem};

use super::checkpoint::read_checkpoint;
use super::convert::take_reference;
use super::error::ImportError;
use super::key_map::expected_keys;
use super::scan::CheckpointFormat;

/// What [`import_backbone`] did.
#[derive(Debug, Clone, Default)]
pub struct BackboneImportReport {
    /// The layout the file was read as: the model's.
    pub layout: Option<ResNetStem>,
    /// The reference keys loaded (one per backbone parameter and BatchNorm statistic).
    pub loaded: Vec<String>,
    /// The file's keys left unused: `num_batches_tracked` (an integer count fsct does not keep),
    /// torchvision's `fc.*`, and (FETI layout only) keys of blocks this depth does not have.
    pub ignored: Vec<String>,
    /// How the file is laid out (zip or legacy).
    pub format: CheckpointFormat,
    /// The dict the state dict was found in (`state_dict` for the reference's FETI file).
    pub state_dict_key: Option<String>,
    /// The prefix stripped from every key (`module.resnet.` for the reference's FETI file).
    pub stripped_prefix: Option<String>,
}

/// Loads pretrained weights into a ResNet, every parameter and BatchNorm statistic from the
/// file, 1:1 by name, shape checked.
///
/// The layout is the model's ([`ResNet::stem`]):
///
/// - [`ResNetStem::TorchVision`]: a torchvision state dict (`resnet18-f37072fd.pth`,
///   `resnet34-b627a593.pth`): keys `conv1.weight`, `bn1.*`, `layer{L}.{j}.{conv1,bn1,conv2,bn2}.*`,
///   `layer{L}.{j}.downsample.{0,1}.*`. Only `fc.*` and `num_batches_tracked` may be left over;
///   any other extra key (a ResNet34 file into a ResNet18) is an [`ImportError::UnexpectedKey`].
/// - [`ResNetStem::Feti`]: the reference's `Pretrained_ResNet_FETI.pt.tar`
///   (`{'state_dict': {'module.resnet.' + key: tensor}}`; the dict and the prefix are found and
///   stripped as for any checkpoint). The reference loads it with `strict=False` into ResNet12,
///   18 and 34 alike (spec §1.4). fsct keeps the half of that which is safe: keys the model
///   does not have (a ResNet18 file's second blocks in a ResNet12, `fc.*`) are ignored and listed
///   in the report and in one `tracing` info line, but every key the model needs must be there —
///   where the reference would silently leave a ResNet34's extra blocks at their random
///   initialisation, fsct refuses with [`ImportError::MissingKey`].
///
/// A file of the other layout is refused on its stem (`conv1.weight` 7×7 against 5×5) with
/// [`ImportError::Layout`]. Every error names the file and the key. A frozen ResNet (no
/// parameter requiring gradients, the reference's torchvision setup) stays frozen.
pub fn import_backbone<B: Backend>(
    net: ResNet<B>,
    path: impl AsRef<Path>,
) -> Result<(ResNet<B>, BackboneImportReport), ImportError> {
    let path = path.as_ref();
    let _span = tracing::info_span!("import_backbone", path = %path.display()).entered();
    let layout = net.stem;
    let frozen = !requires_grad(&net);
    let params = ModuleSnapshot::<B>::collect(&net, None, None, true);
    let checkpoint = read_checkpoint(path, &expected_keys(&params))?;
    let mut tensors = checkpoint.tensors;
    let mut report = BackboneImportReport {
        layout: Some(layout),
        format: checkpoint.format,
        state_dict_key: checkpoint.state_dict_key,
        stripped_prefix: checkpoint.stripped_prefix,
        ignored: checkpoint.skipped,
        ..Default::default()
    };
    let mut known: Vec<String> = tensors.keys().cloned().collect();
    known.extend(checkpoint.elsewhere);

    // The stem tells the layouts apart before any other key is looked at.
    let other = match layout {
        ResNetStem::TorchVision => (5, "the reference's FETI layout", "model.feti = true"),
        ResNetStem::Feti => (7, "torchvision's layout", "model.feti = false"),
    };
    if let Some(stem) = tensors.get("conv1.weight") {
        let shape = stem.shape.as_slice();
        if shape.len() == 4 && shape[2] == other.0 && shape[3] == other.0 {
            return Err(ImportError::Layout {
                path: path.into(),
                key: "conv1.weight".into(),
                found: shape.to_vec(),
                file_layout: other.1,
                model_layout: match layout {
                    ResNetStem::TorchVision => "torchvision's (7×7 stem)",
                    ResNetStem::Feti => "the FETI layout (5×5 stem)",
                },
                fix: other.2,
            });
        }
    }

    let mut snapshots = Vec::with_capacity(params.len());
    for param in &params {
        let fsct_path = param.full_path();
        let model_shape = param.shape.to_vec();
        let data = take_reference(&mut tensors, &fsct_path, &model_shape, path, &known)?;
        let data = data.convert_dtype(param.dtype);
        snapshots.push(TensorSnapshot::from_data(
            data,
            param.path_stack.clone().unwrap_or_default(),
            param.container_stack.clone().unwrap_or_default(),
            ParamId::new(),
        ));
        report.loaded.push(super::key_map::reference_key(&fsct_path));
    }
    for key in std::mem::take(&mut tensors).into_keys() {
        let allowed = match layout {
            ResNetStem::TorchVision => key.starts_with("fc."),
            ResNetStem::Feti => true,
        };
        if !allowed {
            return Err(ImportError::UnexpectedKey { path: path.into(), key });
        }
        report.ignored.push(key);
    }
    let mut net = net;
    let result = net.apply(snapshots, None, None, true);
    if let Some(error) = result.errors.first() {
        return Err(ImportError::Tensor {
            path: path.into(),
            key: String::new(),
            message: error.to_string(),
        });
    }
    if frozen {
        net = net.freeze();
    }
    report.ignored.sort();
    tracing::info!(
        loaded = report.loaded.len(),
        layout = ?layout,
        ignored = ?report.ignored,
        state_dict_key = ?report.state_dict_key,
        stripped_prefix = ?report.stripped_prefix,
        "pretrained backbone loaded from {}; keys not used: {}",
        path.display(),
        if report.ignored.is_empty() { "none".to_string() } else { report.ignored.join(", ") }
    );
    Ok((net, report))
}

/// Whether any parameter of `module` requires gradients.
fn requires_grad<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Any(bool);
    impl<B: Backend> ModuleVisitor<B> for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 |= param.val().is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}
