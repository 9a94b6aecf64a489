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

/// Runs the `fsct-train` binary with `RUST_LOG` set to `log` (unset when `None`, so the
/// binary's own default applies) and returns its exit code, stdout and stderr; a panic in its
/// stderr fails the test.
#[allow(dead_code)] // not every test file drives the binary this way
pub fn run_binary(args: &[&str], log: Option<&str>) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fsct-train"));
    command.args(args);
    match log {
        Some(level) => command.env("RUST_LOG", level),
        None => command.env_remove("RUST_LOG"),
    };
    let out = command.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// A path as the `&str` a command line takes.
#[allow(dead_code)]
pub fn s(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}
