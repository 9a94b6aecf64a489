//! Notices when burn-flex is the stock crates.io release instead of fsct's patched copy.
//!
//! fsct's NCHW convolution and 2×2 max-pool kernels live in `vendor/burn-flex`, which the fsct
//! workspace applies through `[patch.crates-io]`. A patch only applies in the workspace that
//! declares it: a project depending on fsct-backbone gets stock Flex unless it patches burn-flex
//! too, and then trains ~25× slower on the CPU (a Conv4 step of 19.3 s instead of 0.7 s).
//!
//! The patched crate declares `links = "burn_flex"` and emits `fsct_kernels`, which cargo passes
//! here as `DEP_BURN_FLEX_FSCT_KERNELS`. When it is absent this script
//! - prints a cargo warning naming the fix (cargo shows it for path dependencies only), and
//! - sets `cfg(fsct_stock_flex)`, under which the backbones log one `tracing` warning on their
//!   first forward pass on Flex (`src/flex_kernels.rs`), which every dependent sees.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DEP_BURN_FLEX_FSCT_KERNELS");
    println!("cargo::rustc-check-cfg=cfg(fsct_stock_flex)");

    let fix = patch_lines();
    println!("cargo::rustc-env=FSCT_FLEX_PATCH={fix}");
    if env::var_os("DEP_BURN_FLEX_FSCT_KERNELS").is_some() {
        return;
    }
    println!("cargo::rustc-cfg=fsct_stock_flex");
    println!(
        "cargo::warning=burn-flex is the stock crates.io release, not fsct's patched copy: \
         CPU (Flex) convolution and pooling run many times slower (a Conv4 training step \
         19.3 s instead of 0.7 s)"
    );
    println!("cargo::warning=fix: add to your workspace's Cargo.toml: {fix}");
}

/// The `[patch.crates-io]` line a dependent needs: the vendored copy next to this crate when
/// there is one (a path or git dependency on fsct), and fsct's repository when the manifest
/// names one.
fn patch_lines() -> String {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = match Path::new(&manifest_dir).join("../../vendor/burn-flex").canonicalize() {
        Ok(path) => path.display().to_string(),
        Err(_) => "<your fsct checkout>/vendor/burn-flex".to_owned(),
    };
    let path = format!("[patch.crates-io] burn-flex = {{ path = \"{path}\" }}");
    match env::var("CARGO_PKG_REPOSITORY") {
        Ok(repository) if !repository.is_empty() => format!(
            "{path}, or [patch.crates-io] burn-flex = {{ git = \"{repository}\" }} (the source \
             and rev you take fsct-backbone from)"
        ),
        _ => path,
    }
}
