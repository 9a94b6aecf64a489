//! One Conv4 forward pass on Flex through fsct-backbone, from outside the fsct workspace.
//!
//! With stock burn-flex, fsct-backbone logs a warning (shown here by a `tracing` subscriber on
//! stderr) on the first forward pass; with fsct's patched burn-flex it stays quiet. The timing
//! shows the difference the warning is about.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use fsct_backbone::{Backbone, ConvNetConfig};

fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let device = Default::default();
    let conv4 = ConvNetConfig::conv(4).init::<Flex>(&device);
    let images = Tensor::<Flex, 4>::random([25, 3, 84, 84], Distribution::Default, &device);
    let start = Instant::now();
    let features = conv4.features(images);
    let dims = features.dims();
    println!(
        "Conv4 forward on Flex, 25 images of 84 px: features {dims:?} in {:.2?}",
        start.elapsed()
    );
}
