//! Plug your own feature extractor into FS-CT and CTX.
//!
//! A backbone is any Burn [`Module`] that implements [`Backbone`]: a `features` forward from
//! images `[n, C, H, W]` to maps `[n, c, h, w]`, and the map shape for a given input size, from
//! which the transformer is sized. Run with `cargo run --example custom_backbone`.

use burn::backend::{Autodiff, Flex};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::avg_pool2d;
use burn::tensor::Distribution;
use fsct::backbone::Backbone;
use fsct::transformer::{episode_accuracy, episode_loss, CtxConfig, FewShotModel, FsctConfig};

/// A tiny two-layer CNN with average pooling: the smallest useful backbone.
#[derive(Module, Debug)]
struct TinyCnn<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
}

impl<B: Backend> TinyCnn<B> {
    fn new(device: &B::Device) -> Self {
        let conv = |cin, cout| {
            Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Same).init(device)
        };
        Self { conv1: conv(3, 16), conv2: conv(16, 32) }
    }
}

impl<B: Backend> Backbone<B> for TinyCnn<B> {
    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = avg_pool2d(relu(self.conv1.forward(images)), [2, 2], [2, 2], [0, 0], true, false);
        avg_pool2d(relu(self.conv2.forward(x)), [2, 2], [2, 2], [0, 0], true, false)
    }

    fn feature_shape(&self, [_, h, w]: [usize; 3]) -> [usize; 3] {
        [32, h / 4, w / 4]
    }
}

fn main() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let (n_way, k_shot, n_query, side) = (5, 1, 4, 32);

    // FS-CT: size the transformer from the backbone's feature dimension at this image size.
    let backbone = TinyCnn::<B>::new(&device);
    let dim = backbone.feature_dim([3, side, side]);
    let mut model = FsctConfig::new(n_way, k_shot, dim).init(backbone, &device);
    let episode = Tensor::<B, 5>::random(
        [n_way, k_shot + n_query, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    if let Err(err) = model.check_episode(episode.dims()) {
        eprintln!("error: {err}");
        std::process::exit(2);
    }

    let mut optim = AdamWConfig::new().with_weight_decay(1e-5).with_epsilon(1e-8).init();
    for step in 0..3 {
        let out = model.forward_episode(episode.clone());
        let loss = episode_loss(out.scores.clone(), n_query);
        println!(
            "FS-CT step {step}: loss {:.4}, accuracy {:.2}",
            loss.clone().into_scalar(),
            episode_accuracy(out.scores, n_query)
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }

    // CTX keeps the feature maps: tell it their channel count.
    let backbone = TinyCnn::<B>::new(&device);
    let channels = backbone.feature_shape([3, side, side])[0];
    let ctx = CtxConfig::new(n_way, k_shot, channels).init(backbone, &device);
    let scores = ctx.forward(episode);
    println!("CTX scores: {:?}", scores.dims());
}
