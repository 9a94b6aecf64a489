//! The data-parallel training step: each peer runs its episodes' forward and backward passes
//! ([`step_gradients`], the single-device step's), sums their gradients, and one all-reduce sums
//! those sums (and the step's loss, accuracy and VIC terms) over every peer; every peer then
//! divides by the step's episode count and takes the same update (`step::apply_gradients`, as the single-device step).
//!
//! BatchNorm's running statistics move once per step, to the mean of where each episode moved
//! them ([`buffers`]), and travel in the same vector.
//!
//! The gradients travel as one flat f32 vector per step, laid out in the model's parameter
//! order (a [`ModuleVisitor`] walk, the same on every peer and every node). Not burn-optim's
//! `GradientsParams::all_reduce` (feature `collective`): it all-reduces one parameter at a time
//! in `ParamId` order (`burn-optim-0.21.0/src/optim/grads.rs:128-134`), and a `ParamId` is drawn
//! at random when a model is built (`burn-core-0.21.0/src/module/param/id.rs:32-35`), so nodes
//! that each build their model would pair different parameters; and it costs one collective
//! round per parameter instead of one per step.

use anyhow::Result;
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};
use fsct_vic::VicValues;

use crate::checkpoint::TrainerState;
use crate::config::Config;
use crate::model::AnyModel;
use crate::parallel::{buffers, Peer};
use crate::step::{
    apply_gradients, finish_step, step_gradients, Optim, StepGradients, StepOutcome,
};

/// The step's statistics after the gradients in the all-reduced vector: loss, accuracy, VIC
/// variance, invariance, covariance and total.
const STATS: usize = 6;

/// One data-parallel step: this peer's `episodes` (each `[N, K+M, C, H, W]`, on `device`), its
/// share of the step's `peer.per_step` episodes. Returns the updated model (the same on every
/// peer) and the step's outcome over all its episodes: mean loss, accuracy and VIC terms;
/// `applied` is `false` on every peer when any peer's gradients overflowed under loss scaling (a
/// non-finite value makes the sum non-finite everywhere).
///
/// # Errors
/// An episode whose shape does not fit the model; a failed all-reduce (another peer stopped).
#[allow(clippy::too_many_arguments)]
pub fn parallel_step<B: AutodiffBackend>(
    config: &Config,
    model: AnyModel<B>,
    optim: &mut Optim<B>,
    state: &mut TrainerState,
    peer: &Peer,
    episodes: Vec<Tensor<B, 5>>,
    device: &B::Device,
) -> Result<(AnyModel<B>, StepOutcome)> {
    let mut model = model;
    let mut sum: Option<(Tensor<B::InnerBackend, 1>, Vec<Entry>)> = None;
    let mut stats = [0.0f64; STATS];
    // BatchNorm's running statistics at the start of the step, and their sum over the episodes.
    let start = buffers::read(&model);
    let mut moved: Option<Tensor<B::InnerBackend, 1>> = None;
    for (j, x) in episodes.into_iter().enumerate() {
        if let (true, Some(start)) = (j > 0, &start) {
            model = buffers::write(model, start.clone());
        }
        let StepGradients { mut grads, loss, accuracy, vic_terms } =
            step_gradients(config, &model, state, x, &mut |_| {})?;
        if start.is_some() {
            let after = buffers::read(&model).expect("the model has running statistics");
            moved = Some(match moved {
                None => after,
                Some(sum) => sum.add(after),
            });
        }
        let (flat, entries) = flatten(&model, &mut grads);
        sum = Some(match sum {
            None => (flat, entries),
            Some((acc, entries)) => (acc.add(flat), entries),
        });
        let vic = vic_terms.map(|t| t.values());
        let v = vic.unwrap_or(VicValues {
            variance: 0.0,
            invariance: 0.0,
            covariance: 0.0,
            total: 0.0,
        });
        for (slot, value) in
            stats.iter_mut().zip([loss, accuracy, v.variance, v.invariance, v.covariance, v.total])
        {
            *slot += value;
        }
    }
    let (flat, entries) = sum.ok_or_else(|| anyhow::anyhow!("a training step without episodes"))?;
    let inner_device = flat.device();
    let stats = Tensor::<B::InnerBackend, 1>::from_floats(stats.map(|v| v as f32), &inner_device);
    let grads_len = flat.dims()[0];
    let mut parts = vec![flat];
    parts.extend(moved);
    parts.push(stats);
    let total = peer.sum(Tensor::cat(parts, 0))?;
    let n = total.dims()[0] - STATS;
    let scale = 1.0 / peer.per_step as f64;
    let stats = total
        .clone()
        .slice(n..n + STATS)
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let grads = unflatten(&model, total.clone().slice(0..grads_len).mul_scalar(scale), &entries);
    if n > grads_len {
        model = buffers::write(model, total.slice(grads_len..n).mul_scalar(scale));
    }
    let (model, applied, learning_rate) = apply_gradients(config, model, optim, state, grads);
    let mean = |i: usize| stats[i] * scale;
    let vic = state.vic.as_mut().map(|vic| {
        let values = VicValues {
            variance: mean(2),
            invariance: mean(3),
            covariance: mean(4),
            total: mean(5),
        };
        // As VicState::update: a non-finite step leaves the running statistics as they were.
        if let Err(err) = vic.record(&values, &config.vic) {
            tracing::warn!(%err, "VIC running statistics not updated");
        }
        values
    });
    finish_step::<B>(config, state, device);
    Ok((model, StepOutcome { loss: mean(0), accuracy: mean(1), vic, applied, learning_rate }))
}

/// Where one parameter's gradient sits in the flat vector.
struct Entry {
    id: ParamId,
    len: usize,
    dtype: DType,
}

/// The gradients of `model`'s parameters, in the model's order, as one f32 vector (each one
/// moved out of `grads`).
fn flatten<B: AutodiffBackend>(
    model: &AnyModel<B>,
    grads: &mut GradientsParams,
) -> (Tensor<B::InnerBackend, 1>, Vec<Entry>) {
    let mut visitor = Flatten::<B> { grads, parts: Vec::new(), entries: Vec::new() };
    model.visit(&mut visitor);
    let Flatten { parts, entries, .. } = visitor;
    (Tensor::cat(parts, 0), entries)
}

struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    entries: Vec<Entry>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let len = grad.shape().num_elements();
            self.entries.push(Entry { id: param.id, len, dtype: grad.dtype() });
            self.parts.push(grad.cast(FloatDType::F32).reshape([len]));
        }
    }
}

/// The inverse of [`flatten`]: each parameter's slice of `flat`, in its shape and dtype.
fn unflatten<B: AutodiffBackend>(
    model: &AnyModel<B>,
    flat: Tensor<B::InnerBackend, 1>,
    entries: &[Entry],
) -> GradientsParams {
    let mut visitor =
        Unflatten::<B> { flat, entries, next: 0, offset: 0, grads: GradientsParams::new() };
    model.visit(&mut visitor);
    visitor.grads
}

struct Unflatten<'a, B: AutodiffBackend> {
    flat: Tensor<B::InnerBackend, 1>,
    entries: &'a [Entry],
    next: usize,
    offset: usize,
    grads: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(entry) = self.entries.get(self.next).filter(|e| e.id == param.id) else {
            return;
        };
        let dims: [usize; D] = param.val().dims();
        let grad = self.flat.clone().slice(self.offset..self.offset + entry.len).reshape(dims);
        let grad =
            if entry.dtype == DType::F32 { grad } else { grad.cast(FloatDType::from(entry.dtype)) };
        self.grads.register::<B::InnerBackend, D>(param.id, grad);
        self.next += 1;
        self.offset += entry.len;
    }
}
