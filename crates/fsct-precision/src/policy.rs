//! The precision policy: what each `memory.precision` value means for dtypes, layers and the loss.

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// Numeric precision of training (`memory.precision`), and the policy it stands for.
///
/// | value        | master (backend) | compute | compute copy | loss scaling |
/// |--------------|------------------|---------|--------------|--------------|
/// | `f32`        | f32              | f32     | no           | off          |
/// | `mixed-f16`  | f32              | f16     | yes          | on           |
/// | `mixed-bf16` | f32              | bf16    | yes          | on           |
/// | `f16`        | f16              | f16     | no           | on           |
/// | `bf16`       | bf16             | bf16    | no           | on           |
///
/// Whatever the value, normalisation layers compute in f32 ([`Self::keeps_f32`]), and so do the
/// softmax and cosine normalisations, the loss and VIC's reductions (through
/// [`crate::to_f32`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// f32 master weights and optimizer state, forward/backward in f16, dynamic loss scaling.
    MixedF16,
    /// As `mixed-f16` with bf16 (no loss scaling needed, but kept on).
    MixedBf16,
    /// Pure half precision: the backend's float type is f16 (`Cuda<f16>`, `Vulkan<f16>`), so
    /// parameters, gradients and optimizer state are f16 too; norms, softmax, cosine
    /// normalisation, VIC and the loss still compute in f32 casts. Dynamic loss scaling is on.
    /// GPU only (Flex's float type is f32): on the CPU use `mixed-f16`. Halves parameter and
    /// optimizer memory, at the cost of f16 weight updates (small updates can round away).
    F16,
    /// As `f16` with bf16 (`Cuda<bf16>`): f32's range, fewer mantissa bits. CUDA only (Vulkan
    /// has no bf16 arithmetic).
    Bf16,
}

/// What a layer is, as far as precision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Burn's `BatchNorm`: batch statistics over many pixels need f32 accumulation.
    BatchNorm,
    /// Burn's `LayerNorm`: a mean and variance over the feature dimension.
    LayerNorm,
    /// Any other layer: convolutions, linear layers, FS-CT's prototype weights.
    Other,
}

impl Precision {
    /// The float type of the backend, in which the parameters (the master weights), their
    /// gradients and the optimizer state live: f32 except under pure half precision. The binary
    /// picks its backend type from it.
    pub fn master_dtype(self) -> FloatDType {
        match self {
            Self::F32 | Self::MixedF16 | Self::MixedBf16 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }

    /// The float type the forward and backward passes compute in (outside the layers and
    /// reductions kept in f32).
    pub fn compute_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::MixedF16 | Self::F16 => FloatDType::F16,
            Self::MixedBf16 | Self::Bf16 => FloatDType::BF16,
        }
    }

    /// The compute dtype when it differs from the master dtype (mixed precision): each step then
    /// computes on a [`crate::half_copy`] of the model in this dtype. `None` when the backend's
    /// own float type is the compute dtype (f32, pure half): no copy.
    pub fn compute_copy(self) -> Option<FloatDType> {
        let compute = self.compute_dtype();
        (compute != self.master_dtype()).then_some(compute)
    }

    /// The backend's own float type is half (as opposed to an f32 backend with half copies).
    pub fn is_pure_half(self) -> bool {
        self.master_dtype() != FloatDType::F32
    }

    /// Whether layers of `kind` compute in f32. Normalisation layers always do: under mixed
    /// precision their parameters stay on the f32 master (the compute copy leaves them alone),
    /// under pure half their half parameters are cast to f32 where they are used. Every other
    /// layer computes in [`Self::compute_dtype`].
    pub fn keeps_f32(self, kind: LayerKind) -> bool {
        match kind {
            LayerKind::BatchNorm | LayerKind::LayerNorm => true,
            LayerKind::Other => self.compute_dtype() == FloatDType::F32,
        }
    }

    /// Whether the loss is scaled dynamically (any half compute: gradients that underflow f16
    /// are lifted into range, steps whose gradients overflow are skipped).
    pub fn loss_scaling(self) -> bool {
        self.compute_dtype() != FloatDType::F32
    }

    /// The mixed precision computing in `dtype` (f32 for any other dtype): the policy
    /// [`crate::half_copy`] applies.
    pub fn mixed(dtype: FloatDType) -> Self {
        match dtype {
            FloatDType::F16 => Self::MixedF16,
            FloatDType::BF16 => Self::MixedBf16,
            _ => Self::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Precision; 5] = [
        Precision::F32,
        Precision::MixedF16,
        Precision::MixedBf16,
        Precision::F16,
        Precision::Bf16,
    ];

    #[test]
    fn the_policy_table() {
        use FloatDType::{BF16, F16, F32};
        let table: Vec<_> = ALL
            .iter()
            .map(|p| (p.master_dtype(), p.compute_dtype(), p.compute_copy(), p.loss_scaling()))
            .collect();
        assert_eq!(
            table,
            vec![
                (F32, F32, None, false),
                (F32, F16, Some(F16), true),
                (F32, BF16, Some(BF16), true),
                (F16, F16, None, true),
                (BF16, BF16, None, true),
            ]
        );
        for p in ALL {
            assert!(p.keeps_f32(LayerKind::BatchNorm) && p.keeps_f32(LayerKind::LayerNorm));
            assert_eq!(p.keeps_f32(LayerKind::Other), p == Precision::F32);
            assert_eq!(p.is_pure_half(), matches!(p, Precision::F16 | Precision::Bf16));
        }
        assert_eq!(Precision::mixed(F16), Precision::MixedF16);
        assert_eq!(Precision::mixed(BF16), Precision::MixedBf16);
        assert_eq!(Precision::mixed(F32), Precision::F32);
    }

    #[test]
    fn config_names_are_kebab_case() {
        let names: Vec<String> = ALL.iter().map(|p| serde_json::to_string(p).unwrap()).collect();
        assert_eq!(names, ["\"f32\"", "\"mixed-f16\"", "\"mixed-bf16\"", "\"f16\"", "\"bf16\""]);
    }
}
