//! Exact arithmetic from the built model and the config: parameters, gradients, AdamW's moments,
//! the episode tensor, the VIC covariance buffers, and the GPU allocator's rounding.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use fsct_backbone::Backbone;
use fsct_vic::CovarianceMode;

use super::measure::bytes_of;
use crate::config::{Config, DeviceKind};
use crate::model::AnyModel;

/// Parameter counts of a built model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCounts {
    /// Every float parameter.
    pub total: usize,
    /// Those the optimizer trains (`require_grad`).
    pub trained: usize,
    /// The backbone's trained parameters.
    pub backbone_trained: usize,
}

struct Count {
    total: usize,
    trained: usize,
}

impl<B: Backend> ModuleVisitor<B> for Count {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.total += n;
        if value.is_require_grad() {
            self.trained += n;
        }
    }
}

/// Counts the parameters of a model (visiting its params).
pub fn count_params<B: Backend>(model: &AnyModel<B>) -> ParamCounts {
    let mut all = Count { total: 0, trained: 0 };
    model.visit(&mut all);
    let mut backbone = Count { total: 0, trained: 0 };
    model.backbone().visit(&mut backbone);
    ParamCounts { total: all.total, trained: all.trained, backbone_trained: backbone.trained }
}

/// The feature dimension `d = c·h·w` of the config's backbone at its image size.
pub fn feature_dim<B: Backend>(config: &Config, model: &AnyModel<B>) -> usize {
    let side = config.image_size();
    model.backbone().feature_dim([3, side, side])
}

/// The exact state of a run, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Parameters in the master dtype (f32; pure half: half).
    pub params: u64,
    /// Gradients of the trained parameters (master dtype), alive from the backward pass to the
    /// update.
    pub gradients: u64,
    /// The gradients of the head's parameters (alive while the backbone's backward pass runs).
    pub head_gradients: u64,
    /// The optimizer's buffers per trained parameter (master dtype): two moments for Adam and
    /// AdamW, one momentum buffer for SGD with momentum, none for plain SGD.
    pub optimizer: u64,
    /// The episode `[N, K+M, 3, H, W]` as loaded (master dtype).
    pub episode: u64,
    /// The episode cast to the compute dtype (mixed precision only).
    pub episode_half: u64,
}

/// The state of `config`'s run for a model with `counts`.
pub fn state(config: &Config, counts: ParamCounts, n_query: usize) -> State {
    let master = config.memory.precision.master_dtype();
    let e = &config.episodes;
    let side = config.image_size();
    let pixels = e.n_way * (e.k_shot + n_query) * 3 * side * side;
    State {
        params: bytes_of(counts.total, master),
        gradients: bytes_of(counts.trained, master),
        head_gradients: bytes_of(counts.trained - counts.backbone_trained, master),
        optimizer: config.optim.optimizer.state_buffers(config.optim.momentum)
            * bytes_of(counts.trained, master),
        episode: bytes_of(pixels, master),
        episode_half: config
            .memory
            .precision
            .compute_copy()
            .map_or(0, |dtype| bytes_of(pixels, dtype)),
    }
}

/// The VIC covariance buffers of one step (inside the head's measured figure): which form, and
/// the bytes of its matrices (support and query each build one).
pub fn vic_buffers(config: &Config, dim: usize, n_query: usize) -> Option<(&'static str, u64)> {
    if !config.model.use_vic {
        return None;
    }
    let e = &config.episodes;
    let rows = e.n_way * (e.k_shot + n_query);
    let naive = match config.vic.covariance {
        CovarianceMode::Naive => true,
        CovarianceMode::Gram => false,
        CovarianceMode::Auto => rows >= dim,
    };
    let dtype = FloatDType::F32;
    Some(if naive {
        ("naive d×d", 2 * bytes_of(dim * dim, dtype))
    } else {
        ("Gram n×n", 2 * bytes_of(rows * rows, dtype))
    })
}

/// What cubecl 0.10's memory management adds on a GPU to the bytes the tensors hold.
///
/// cubecl (the runtime of Burn's CUDA and Vulkan backends) serves tensors from sliced pools: the
/// largest page is the device's `max_page_size` (CUDA: a quarter of the device memory; wgpu: the
/// storage-buffer binding limit), the smaller pools' pages are a quarter of the next (down to
/// 32 MiB), each slice is rounded up to the device's alignment, and a page is reserved whole. So
/// a step reserves its in-use peak plus the unused tail of the last page of each pool it touches.
/// This estimate adds 1/16 of the in-use peak for that tail (about one 32–128 MiB page per pool in
/// use at the sizes fsct runs), never less than 64 MiB. It is not validated against a GPU yet.
pub fn allocator_overhead(device: DeviceKind, in_use: u64) -> u64 {
    match device {
        // The counting allocator counts the bytes requested, as Flex asks for them.
        DeviceKind::Cpu => 0,
        DeviceKind::Cuda | DeviceKind::Vulkan => (in_use / 16).max(64 << 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OptimizerKind;

    #[test]
    fn the_optimizer_state_counts_the_chosen_optimizers_buffers() {
        let counts = ParamCounts { total: 1000, trained: 600, backbone_trained: 400 };
        let with = |optimizer, momentum| {
            let mut config = Config::default();
            config.optim.optimizer = optimizer;
            config.optim.momentum = momentum;
            state(&config, counts, 16).optimizer
        };
        // f32 master weights: 4 bytes per buffer entry.
        assert_eq!(with(OptimizerKind::AdamW, 0.9), 2 * 600 * 4);
        assert_eq!(with(OptimizerKind::Adam, 0.9), 2 * 600 * 4);
        assert_eq!(with(OptimizerKind::Sgd, 0.9), 600 * 4);
        assert_eq!(with(OptimizerKind::Sgd, 0.0), 0);
    }
}
