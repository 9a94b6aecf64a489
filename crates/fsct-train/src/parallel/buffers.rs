//! BatchNorm running statistics (`running_mean`, `running_var`: buffers the forward pass moves,
//! not parameters) in a data-parallel step.
//!
//! Every episode of a step starts from the step's running statistics, and after the step they
//! are the mean, over all the step's episodes and peers, of where each episode moved them: one
//! move per step towards the mean of the episodes' batch statistics, as one batch of all the
//! step's episodes would make (`r ← (1 − m)·r + m·mean_j(x_j)` for momentum `m`, whatever `m`).
//! The same on every peer for any number of peers, and, with one episode per step on one device,
//! exactly the single-device step's update. (PyTorch's DDP instead broadcasts rank 0's buffers,
//! which only ever see rank 0's episodes.)

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::model::AnyModel;

/// The field names of the buffers.
fn is_buffer(path: &[String]) -> bool {
    matches!(path.last().map(String::as_str), Some("running_mean" | "running_var"))
}

/// The model's running statistics, in the model's order, as one f32 vector (`None` without any).
/// Read through [`AutodiffModule::valid`], which first folds in the updates Burn's
/// `RunningState` still holds per thread (a visit alone reads the value before them).
///
/// # Shapes
/// `[total channels of every BatchNorm × 2]`.
pub(crate) fn read<B: AutodiffBackend>(model: &AnyModel<B>) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut reader = Read::<B::InnerBackend> { path: Vec::new(), parts: Vec::new() };
    model.valid().visit(&mut reader);
    (!reader.parts.is_empty()).then(|| Tensor::cat(reader.parts, 0))
}

/// Sets the model's running statistics from `values` (laid out as [`read`] gives them). Call it
/// after [`read`], which leaves no per-thread update pending that would later replace them.
pub(crate) fn write<B: AutodiffBackend>(
    model: AnyModel<B>,
    values: Tensor<B::InnerBackend, 1>,
) -> AnyModel<B> {
    let mut writer = Write::<B> { path: Vec::new(), values, offset: 0 };
    model.map(&mut writer)
}

struct Read<B: Backend> {
    path: Vec<String>,
    parts: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Read<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if is_buffer(&self.path) {
            let value = param.val();
            let len = value.shape().num_elements();
            self.parts.push(value.cast(burn::tensor::FloatDType::F32).reshape([len]));
        }
    }
}

struct Write<B: AutodiffBackend> {
    path: Vec<String>,
    values: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Write<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !is_buffer(&self.path) {
            return param;
        }
        let (id, old, _) = param.consume();
        let dims: [usize; D] = old.dims();
        let len = old.shape().num_elements();
        let dtype = old.dtype();
        let value = self.values.clone().slice(self.offset..self.offset + len).reshape(dims);
        let value = if dtype == burn::tensor::DType::F32 {
            value
        } else {
            value.cast(burn::tensor::FloatDType::from(dtype))
        };
        self.offset += len;
        Param::initialized(id, Tensor::from_inner(value))
    }
}
