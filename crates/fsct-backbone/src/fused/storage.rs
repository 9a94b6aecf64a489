//! Flex maps as slices: the element types they are stored in, one dtype dispatch for every op,
//! and the conversions between a contiguous `[n, c, h, w]` Flex tensor and its values.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{bf16, f16};

use super::kernels::{self, Dims};

/// An element type a Flex map is stored in: f32, f16 or bf16.
pub(super) trait Stored:
    kernels::Element + burn::tensor::Element + bytemuck::Pod + core::fmt::Debug
{
}
impl Stored for f32 {}
impl Stored for f16 {}
impl Stored for bf16 {}

/// Evaluates `$body` with the type alias `$E` set to the [`Stored`] type of `$dtype`: f16,
/// bf16, or f32 for everything else (the callers have checked the dtype is one of the three).
///
/// Under mixed precision a map stays in its half dtype: the kernels read and write half values
/// and compute in f32 (as the composed batch norm does), so outputs and input gradients come
/// back in the map's dtype.
macro_rules! with_stored_type {
    ($dtype:expr, $E:ident => $body:expr) => {
        match $dtype {
            burn::tensor::DType::F16 => {
                type $E = burn::tensor::f16;
                $body
            }
            burn::tensor::DType::BF16 => {
                type $E = burn::tensor::bf16;
                $body
            }
            _ => {
                type $E = f32;
                $body
            }
        }
    };
}
pub(super) use with_stored_type;

/// The sizes of a `[n, c, h, w]` Flex map.
pub(super) fn dims(x: &FlexTensor) -> Dims {
    let shape = x.layout().shape();
    Dims { n: shape[0], c: shape[1], h: shape[2], w: shape[3] }
}

/// The values of `x` as a contiguous `E` slice: borrowed when they already are, else copied (and
/// converted, should a gradient arrive in another dtype).
pub(super) fn values<E: Stored>(x: &FlexTensor) -> Cow<'_, [E]> {
    match x.as_slice::<E>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(
            x.clone().into_data().convert_dtype(E::dtype()).into_vec::<E>().unwrap_or_default(),
        ),
    }
}

/// A contiguous `[n, c, h, w]` Flex tensor holding `values`.
pub(super) fn flex_tensor<E: Stored>(values: Vec<E>, d: Dims) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, [d.n, d.c, d.h, d.w]))
}
