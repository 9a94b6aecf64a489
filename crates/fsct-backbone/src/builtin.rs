use core::fmt;
use core::str::FromStr;

use burn::prelude::*;

use crate::backbone::Backbone;
use crate::convnet::{ConvNet, ConvNetConfig};
use crate::error::BackboneError;
use crate::resnet::{ResNet, ResNetConfig};

/// The reference's backbone names (`--backbone`), plus the FETI switch for ResNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackboneName {
    /// A Conv* net: depth 4 or 6, `no_pool` ("NP"), `single_channel` ("S").
    Conv {
        /// 4 or 6.
        depth: usize,
        /// The NP layout.
        no_pool: bool,
        /// The S layout.
        single_channel: bool,
    },
    /// A ResNet of BasicBlocks: `depth` 12, 18 or 34. `feti` picks the trained FETI layout
    /// (§1.4); otherwise torchvision's, frozen and on batch statistics as the reference runs it
    /// (§1.5). ResNet12 exists only as FETI.
    ResNet {
        /// 12, 18 or 34.
        depth: usize,
        /// FETI layout (trained end to end) rather than a frozen torchvision net.
        feti: bool,
    },
}

impl BackboneName {
    /// Whether this is a ResNet (the reference uses 224 px images for those, 84 px otherwise).
    pub fn is_resnet(&self) -> bool {
        matches!(self, Self::ResNet { .. })
    }

    /// The name with the FETI flag set or cleared (no effect on Conv nets).
    pub fn with_feti(self, feti: bool) -> Self {
        match self {
            Self::ResNet { depth, .. } => Self::ResNet { depth, feti: feti || depth == 12 },
            conv => conv,
        }
    }

    /// The reference's name (`--backbone`), as configs and checkpoints store it: `Conv4SNP`,
    /// `ResNet18`. The FETI switch is not part of it (the reference passes `--FETI` separately), so
    /// unlike [`Display`](fmt::Display) this never ends in `-FETI`; parsing it gives the name back
    /// (ResNet12 is always FETI).
    pub fn reference_name(&self) -> String {
        match *self {
            Self::Conv { .. } => self.to_string(),
            Self::ResNet { depth, .. } => format!("ResNet{depth}"),
        }
    }

    /// Builds the backbone with the reference initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BuiltinBackbone<B> {
        self.init_with(false, device)
    }

    /// As [`Self::init`]; with `train_torchvision`, a torchvision ResNet is trained like any other
    /// layer (BatchNorm in the usual train/eval modes) instead of frozen on batch statistics —
    /// what the fork's memory guide does (spec §1.7). No effect on other backbones.
    pub fn init_with<B: Backend>(
        &self,
        train_torchvision: bool,
        device: &B::Device,
    ) -> BuiltinBackbone<B> {
        match *self {
            Self::Conv { depth, no_pool, single_channel } => BuiltinBackbone::Conv(
                ConvNetConfig::conv(depth)
                    .with_no_pool(no_pool)
                    .with_single_channel(single_channel)
                    .init(device),
            ),
            Self::ResNet { depth, feti } => {
                let config = match (depth, feti) {
                    (12, _) => ResNetConfig::resnet12_feti(),
                    (18, true) => ResNetConfig::resnet18_feti(),
                    (34, true) => ResNetConfig::resnet34_feti(),
                    (18, false) => ResNetConfig::resnet18_torchvision(),
                    _ => ResNetConfig::resnet34_torchvision(),
                };
                if feti || train_torchvision {
                    let config = config.with_batch_norm(crate::BatchNormMode::Standard);
                    BuiltinBackbone::ResNet(config.init(device))
                } else {
                    BuiltinBackbone::ResNet(config.init(device).freeze())
                }
            }
        }
    }
}

impl FromStr for BackboneName {
    type Err = BackboneError;

    /// Parses `Conv4`, `Conv6`, `Conv4NP`, `Conv4S`, `Conv4SNP` (and the Conv6 ones),
    /// `ResNet12` (always FETI), `ResNet18`, `ResNet34` (torchvision; see [`Self::with_feti`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || BackboneError::UnknownName(s.to_string());
        if let Some(rest) = s.strip_prefix("Conv") {
            let (depth, suffix) =
                rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()));
            let depth = match depth {
                "4" => 4,
                "6" => 6,
                _ => return Err(unknown()),
            };
            let (single_channel, no_pool) = match suffix {
                "" => (false, false),
                "NP" => (false, true),
                "S" => (true, false),
                "SNP" => (true, true),
                _ => return Err(unknown()),
            };
            return Ok(Self::Conv { depth, no_pool, single_channel });
        }
        match s {
            "ResNet12" => Ok(Self::ResNet { depth: 12, feti: true }),
            "ResNet18" => Ok(Self::ResNet { depth: 18, feti: false }),
            "ResNet34" => Ok(Self::ResNet { depth: 34, feti: false }),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for BackboneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Conv { depth, no_pool, single_channel } => {
                let s = if single_channel { "S" } else { "" };
                let np = if no_pool { "NP" } else { "" };
                write!(f, "Conv{depth}{s}{np}")
            }
            Self::ResNet { depth, feti } => {
                write!(f, "ResNet{depth}{}", if feti { "-FETI" } else { "" })
            }
        }
    }
}

/// Any built-in backbone, chosen at run time (the binary builds one from its config).
// A model is built once and moved a handful of times per step: boxing the large variant would
// buy nothing and add an indirection to every parameter visit.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BuiltinBackbone<B: Backend> {
    /// A Conv* net.
    Conv(ConvNet<B>),
    /// A ResNet.
    ResNet(ResNet<B>),
}

impl<B: Backend> Backbone<B> for BuiltinBackbone<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Conv(net) => net.features(images),
            Self::ResNet(net) => net.features(images),
        }
    }

    fn feature_shape(&self, input: [usize; 3]) -> [usize; 3] {
        match self {
            Self::Conv(net) => net.feature_shape(input),
            Self::ResNet(net) => net.feature_shape(input),
        }
    }

    fn segment_count(&self, level: crate::SegmentLevel) -> usize {
        match self {
            Self::Conv(net) => net.segment_count(level),
            Self::ResNet(net) => net.segment_count(level),
        }
    }

    fn forward_segment(
        &self,
        level: crate::SegmentLevel,
        index: usize,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        match self {
            Self::Conv(net) => net.forward_segment(level, index, x),
            Self::ResNet(net) => net.forward_segment(level, index, x),
        }
    }
}
