//! Advice shared by the messages of the scan, so that every damaged file gets the same words.

/// What to do about a file that holds less than it claims or is malformed.
pub(super) fn truncated_hint() -> &'static str {
    "the file is truncated or damaged: copy or download it again"
}

/// The refusal of a file written on a big-endian machine (zip `byteorder` member or legacy
/// system information).
pub(super) const BIG_ENDIAN: &str =
    "it was saved on a big-endian machine, which the reader does not support: load and save it \
     again on a little-endian one (x86, ARM)";
