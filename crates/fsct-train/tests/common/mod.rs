//! What the integration tests share.

/// The tiny synthetic run of the CLI tests: 3-way 2-shot, 16 px, a second or two.
pub const TINY: &str = r#"
[data]
kind = "synthetic"
synthetic_classes = 20
synthetic_images_per_class = 8
synthetic_native_size = 24
image_size = 16
threads = 1
[episodes]
n_way = 3
k_shot = 2
n_query = 2
train_episodes = 2
val_episodes = 2
test_episodes = 3
[model]
backbone = "Conv4"
[optim]
epochs = 1
"#;
