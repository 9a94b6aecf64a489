//! A last line of defence for dependencies that assert instead of returning errors.
//!
//! Burn's record loading builds tensors with `Tensor::from_data`, which asserts the rank and the
//! byte count: a crafted checkpoint (with a valid checksum) could reach such an assert. Every
//! cheap check runs before (checksums, shapes); [`catch_quietly`] turns what is left into an
//! error, with the panic's message kept off the user's screen. The panic hook is process-wide, so
//! silencing is per thread: the installed hook stays quiet only on a thread inside
//! `catch_quietly` and otherwise calls the hook it replaced.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err(message)` and prints nothing.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "an internal assertion failed".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch_quietly(|| 3), Ok(3));
        let err = catch_quietly(|| -> u8 { panic!("rank 3 expected") }).unwrap_err();
        assert_eq!(err, "rank 3 expected");
        let n = 7;
        let err = catch_quietly(|| -> u8 { panic!("shape {n}") }).unwrap_err();
        assert_eq!(err, "shape 7");
        assert!(!QUIET.with(Cell::get), "the flag is reset afterwards");
    }
}
