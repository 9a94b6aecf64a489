//! fsct: tells the crates that depend on burn-flex that this is fsct's patched copy.
//!
//! `links = "burn_flex"` in Cargo.toml makes cargo hand this script's metadata to the build
//! scripts of direct dependents as `DEP_BURN_FLEX_FSCT_KERNELS`: fsct-backbone's build script
//! warns when it is absent (the stock crates.io Flex, whose convolution and pooling are many
//! times slower). The value is the revision of fsct's kernel set, raised when fsct starts to
//! rely on a new kernel here. See FSCT.md.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:fsct_kernels=1");
}
