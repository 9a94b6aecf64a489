//! Runs dependency code that may panic without letting the panic reach the user's screen.
//!
//! burn-store catches panics of its lazy tensor loaders itself (`TensorSnapshot::to_data`), but
//! Rust's panic hook has printed the message (and, with `RUST_BACKTRACE`, a backtrace) before the
//! catch. [`quietly`] catches what escapes and keeps panics *of the calling thread* quiet while it
//! runs. The panic hook is process-wide, so the silencing is a thread-local flag read by a hook
//! installed once, on first use, over the hook in place then: while no thread is inside
//! [`quietly`], and on every other thread, each panic goes to that previous hook, so the
//! process behaves exactly as before.
//!
//! The hook is wrapped once and never swapped back: swapping back would throw away any hook
//! installed over ours in the meantime, such as another crate's wrapper of the same kind
//! (fsct-train has one), whose silencing would then stop working. Wrappers stacked this way
//! compose: each is silent only on its own flag.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`quietly`] calls are running on this thread.
    static SILENCED: Cell<usize> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !SILENCED.try_with(|s| s.get() > 0).unwrap_or(false) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, returning its panic message instead of unwinding; nothing is printed for a panic
/// of this thread while `f` runs.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    SILENCED.with(|s| s.set(s.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    SILENCED.with(|s| s.set(s.get() - 1));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    /// The only test of this binary that touches the panic hook or calls `quietly`, so that the
    /// counting hook set here is the one `quietly` wraps on first use.
    #[test]
    fn silences_this_threads_panics_and_delegates_the_rest_to_the_previous_hook() {
        let original = panic::take_hook();
        panic::set_hook(Box::new(|_| {
            SEEN.fetch_add(1, Ordering::SeqCst);
        }));

        let caught = quietly(|| -> u32 { panic!("boom {}", 7) });
        assert_eq!(caught, Err("boom 7".to_string()));
        assert_eq!(quietly(|| 5), Ok(5));
        assert_eq!(SEEN.load(Ordering::SeqCst), 0, "the panic inside `quietly` reached the hook");

        // While one thread is inside `quietly`, another thread's panic still reaches the hook.
        let (inside, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                quietly(|| {
                    inside.wait();
                    release.wait();
                })
                .unwrap()
            });
            inside.wait();
            let other = std::thread::spawn(|| panic!("elsewhere")).join();
            assert!(other.is_err());
            release.wait();
        });
        assert_eq!(SEEN.load(Ordering::SeqCst), 1, "another thread's panic was silenced");

        // Afterwards, panics of this thread reach the previous hook again.
        let after = panic::catch_unwind(|| panic!("after"));
        assert!(after.is_err());
        assert_eq!(SEEN.load(Ordering::SeqCst), 2, "a panic after `quietly` was silenced");
        drop(panic::take_hook());
        panic::set_hook(original);
    }
}
