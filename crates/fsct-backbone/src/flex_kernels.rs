//! A run-time warning when the backbones run on stock Flex instead of fsct's patched copy.
//!
//! fsct's convolution and pooling kernels reach Flex through a `[patch.crates-io]` that only the
//! workspace declaring it gets (see `build.rs` and `vendor/burn-flex/FSCT.md`). The build script
//! sets `cfg(fsct_stock_flex)` when burn-flex lacks them; a cargo warning is easy to miss (cargo
//! hides it for git and registry dependencies), so the first forward pass on Flex says it again.

use std::sync::Once;

use burn::prelude::Backend;

/// Whether this build links stock Flex (no fsct kernels): set by `build.rs`.
const STOCK_FLEX: bool = cfg!(fsct_stock_flex);

/// The `[patch.crates-io]` lines that fix it, from `build.rs`.
const PATCH: &str = env!("FSCT_FLEX_PATCH");

/// Logs one `tracing` warning per process the first time it is called for a backend that runs on
/// Flex while this build links stock Flex; does nothing otherwise.
pub(crate) fn warn_if_stock_flex<B: Backend>() {
    static WARNED: Once = Once::new();
    if STOCK_FLEX && runs_on_flex::<B>() {
        WARNED.call_once(|| {
            tracing::warn!(
                "fsct-backbone runs on stock burn-flex, not fsct's patched copy: convolution and \
                 pooling on the CPU are many times slower (a Conv4 training step 19.3 s instead \
                 of 0.7 s). Fix: add to your workspace's Cargo.toml: {PATCH}"
            );
        });
    }
}

/// Whether `B` computes on Flex: Flex itself or any wrapper of it (`Autodiff<Flex, _>`, ...).
///
/// By type name rather than `TypeId`, so that every wrapper counts: they all reach Flex's
/// convolution and pooling kernels.
fn runs_on_flex<B: Backend>() -> bool {
    std::any::type_name::<B>().contains("burn_flex::")
}

#[cfg(test)]
mod tests {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn::backend::{Autodiff, Flex};

    use super::*;

    #[test]
    fn flex_and_its_wrappers_run_on_flex() {
        assert!(runs_on_flex::<Flex>());
        assert!(runs_on_flex::<Autodiff<Flex>>());
        assert!(runs_on_flex::<Autodiff<Flex, BalancedCheckpointing>>());
    }

    #[test]
    fn this_workspace_links_the_patched_flex() {
        // A property of the build: checked when the test compiles.
        const { assert!(!STOCK_FLEX, "the workspace's [patch.crates-io] should give fsct's burn-flex") };
    }
}
