//! A counting global allocator: the heap bytes held and their peak, on every thread. The memory
//! planner ([`crate::plan`]) measures activations with it; the `fsct-train` binary installs it
//! around its own allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: fsct_train::alloc_count::CountingAlloc<fsct_train::hugepages::HugePageAllocator> =
//!     fsct_train::alloc_count::CountingAlloc::new(fsct_train::hugepages::HugePageAllocator);
//! ```
//!
//! The counts are the bytes requested (`Layout::size`), whatever the inner allocator keeps aside
//! (caches, page rounding). A process has one global allocator, so the counters are statics: a
//! process that does not install [`CountingAlloc`] reads 0 ([`is_counting`] says so).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Forwards every call to `A`, counting bytes (two relaxed atomics per call).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc<A> {
    inner: A,
}

impl<A> CountingAlloc<A> {
    /// Counts the allocations that `inner` serves (`const`: for a `#[global_allocator]` static).
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `A`; the wrapper only counts bytes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.inner.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

/// Whether this process's global allocator is a [`CountingAlloc`] (it has counted a byte).
pub fn is_counting() -> bool {
    // Any process has allocated by the time this is asked (the runtime's own buffers).
    drop(std::hint::black_box(Box::new(0u64)));
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes held now.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Starts a new peak window at the current usage; returns that usage.
pub fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The highest usage since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}
