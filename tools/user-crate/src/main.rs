//! One Conv4 forward pass on Flex through fsct-backbone, from outside the fsct workspace.
//!
//! With stock burn-flex, fsct-backbone logs a warning (shown here by a `tracing` subscriber on
//! stderr) on the first forward pass; with fsct's patched burn-flex it stays quiet. The shapes
//! are small and burn-flex is built unoptimised here (see Cargo.toml): this crate checks which
//! Flex a user gets, not its speed (`docs/performance-log.md` has the figures).

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use fsct_backbone::{Backbone, ConvNetConfig};

fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let device = Default::default();
    let conv4 = ConvNetConfig::conv(4).init::<Flex>(&device);
    let images = Tensor::<Flex, 4>::random([5, 3, 32, 32], Distribution::Default, &device);
    let start = Instant::now();
    let features = conv4.features(images);
    let dims = features.dims();
    println!(
        "Conv4 forward on Flex, 5 images of 32 px: features {dims:?} in {:.2?}",
        start.elapsed()
    );
}
