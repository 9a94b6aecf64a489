/// Errors from choosing or building a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// A backbone name that is not one of the built-in ones.
    #[error(
        "unknown backbone `{0}`: use one of Conv4, Conv6, Conv4NP, Conv6NP, Conv4S, Conv6S, \
         Conv4SNP, Conv6SNP, ResNet12, ResNet18, ResNet34"
    )]
    UnknownName(String),
    /// A backbone that cannot run on the requested input.
    #[error(
        "backbone {name} cannot take an input of {input:?} ([channels, height, width]): {why}"
    )]
    InputTooSmall {
        /// The backbone's name.
        name: String,
        /// The offending input shape.
        input: [usize; 3],
        /// What goes wrong.
        why: String,
    },
}
