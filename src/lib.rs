//! `fsct`: one import for the whole workspace.
//!
//! Re-exports the model crates so a researcher can write `use fsct::backbone::...` and
//! `use fsct::transformer::...`. The examples and workspace-level benches live in this package.
pub use fsct_backbone as backbone;
pub use fsct_transformer as transformer;
