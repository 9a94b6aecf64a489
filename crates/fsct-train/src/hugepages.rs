//! A global allocator that backs large buffers with transparent huge pages.
//!
//! Why: a training step on the CPU allocates and frees activation buffers of tens to hundreds
//! of MiB (a Conv4 block's output at 84 px is 190 MiB). glibc serves each from a fresh `mmap`,
//! and the kernel then faults it in 4 KiB page by page: on a Conv4 step that was about a quarter
//! of the time. Advising the kernel to use 2 MiB pages for such buffers (`MADV_HUGEPAGE`, which
//! works where `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`, the
//! common defaults) cuts the faults 512-fold; a bounded cache of freed large buffers then
//! spares most of the kernel's page zeroing (see [`HugePageAllocator`]). Pages are still only
//! backed when touched. Elsewhere (or if the advice is refused) the pages stay small.
//!
//! The `fsct-train` binary and the benches install it:
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: fsct_train::hugepages::HugePageAllocator = fsct_train::hugepages::HugePageAllocator;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers at least this large are advised and cached (smaller ones rarely span a whole huge
/// page, and glibc already recycles them).
pub const THRESHOLD: usize = 4 << 20;
/// Default bound on the bytes held by the cache of freed large buffers: 1 GiB. On a Conv4 step
/// at 84 px (peak RSS ~670 MiB) a 256 MiB bound still left the kernel zeroing ~20 % of the step;
/// 1 GiB removed it without raising the peak, because at the peak the buffers are in use, not
/// cached (docs/performance-log.md, line 8).
pub const DEFAULT_CACHE_LIMIT: usize = 1 << 30;
const HUGE_PAGE: usize = 2 << 20;
/// Alignment of the cached blocks: any request aligned up to a page can take any block.
const BLOCK_ALIGN: usize = 4096;
const SLOTS: usize = 64;

/// The system allocator, with `MADV_HUGEPAGE` on buffers of [`THRESHOLD`] bytes or more and a
/// bounded cache of freed large buffers.
///
/// The cache exists because fresh pages cost even as huge pages: the kernel zeroes every page
/// it hands out, and a training step allocates each activation size again and again. A freed
/// buffer whose size class (its size rounded up to 2 MiB) is requested again is handed back
/// without touching the kernel. The cache holds at most [`cache_limit`](Self::cache_limit)
/// bytes (default [`DEFAULT_CACHE_LIMIT`]): a bound on how much resident memory it can add.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAllocator;

static CACHE_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_CACHE_LIMIT);

/// Freed blocks: `(address, size class)`, address 0 for an empty slot.
struct Cache {
    slots: [(usize, usize); SLOTS],
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache { slots: [(0, 0); SLOTS], bytes: 0 });

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while the lock is held; recover the data if that ever changes.
    CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HugePageAllocator {
    /// Bounds the bytes held by the cache of freed large buffers (0 disables it). Blocks above
    /// the new bound are returned to the system.
    pub fn set_cache_limit(bytes: usize) {
        CACHE_LIMIT.store(bytes, Ordering::Relaxed);
        let mut freed = [(0usize, 0usize); SLOTS];
        {
            let mut cache = cache();
            let mut held = cache.bytes;
            for (slot, out) in cache.slots.iter_mut().zip(freed.iter_mut()) {
                if slot.0 != 0 && held > bytes {
                    held -= slot.1;
                    *out = std::mem::take(slot);
                }
            }
            cache.bytes = held;
        }
        for (ptr, class) in freed {
            if ptr != 0 {
                // SAFETY: the block came from `System` with this layout and left the cache.
                unsafe { System.dealloc(ptr as *mut u8, block_layout(class)) }
            }
        }
    }

    /// The current bound on cached bytes.
    pub fn cache_limit() -> usize {
        CACHE_LIMIT.load(Ordering::Relaxed)
    }
}

fn class_of(size: usize) -> usize {
    size.next_multiple_of(HUGE_PAGE)
}

fn block_layout(class: usize) -> Layout {
    // `class` is a positive multiple of 2 MiB and the alignment a power of two.
    Layout::from_size_align(class, BLOCK_ALIGN).unwrap_or(Layout::new::<u8>())
}

fn cached(layout: Layout) -> bool {
    layout.size() >= THRESHOLD && layout.align() <= BLOCK_ALIGN
}

fn take(class: usize) -> Option<*mut u8> {
    let mut cache = cache();
    let slot = cache.slots.iter_mut().find(|s| s.0 != 0 && s.1 == class)?;
    let (ptr, _) = std::mem::take(slot);
    cache.bytes -= class;
    Some(ptr as *mut u8)
}

/// Keeps a freed block if the bound allows; `false` means the caller returns it to the system.
fn keep(ptr: *mut u8, class: usize) -> bool {
    let mut cache = cache();
    if cache.bytes + class > CACHE_LIMIT.load(Ordering::Relaxed) {
        return false;
    }
    match cache.slots.iter_mut().find(|s| s.0 == 0) {
        Some(slot) => {
            *slot = (ptr as usize, class);
            cache.bytes += class;
            true
        }
        None => false,
    }
}

fn advise(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize + len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: [start, end) lies inside the allocation just made; the advice changes how
            // pages are backed, not their contents. A failure only means small pages.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len, HUGE_PAGE);
}

/// A fresh large block from the system.
unsafe fn fresh(class: usize, zeroed: bool) -> *mut u8 {
    let layout = block_layout(class);
    let ptr = unsafe {
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    if !ptr.is_null() {
        advise(ptr, class);
    }
    ptr
}

// SAFETY: small requests go to `System` unchanged. Large ones get whole blocks of their size
// class (page aligned, so any alignment up to a page is met), either fresh from `System` or
// from the cache, which only holds blocks no one else references; blocks go back to `System`
// with the layout they were allocated with.
unsafe impl GlobalAlloc for HugePageAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cached(layout) {
            return unsafe { System.alloc(layout) };
        }
        let class = class_of(layout.size());
        take(class).unwrap_or_else(|| unsafe { fresh(class, false) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cached(layout) {
            return unsafe { System.alloc_zeroed(layout) };
        }
        let class = class_of(layout.size());
        match take(class) {
            Some(ptr) => {
                // SAFETY: the block spans `class >= layout.size()` bytes.
                unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
                ptr
            }
            None => unsafe { fresh(class, true) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !cached(layout) {
            return unsafe { System.dealloc(ptr, layout) };
        }
        let class = class_of(layout.size());
        if !keep(ptr, class) {
            unsafe { System.dealloc(ptr, block_layout(class)) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (all branches): `layout` describes `ptr`; the new layout keeps its alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !cached(layout) && !cached(new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if cached(layout) && cached(new_layout) && class_of(layout.size()) == class_of(new_size) {
            return ptr;
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_buffers_round_trip_their_contents() {
        let a = HugePageAllocator;
        for size in [64, THRESHOLD - 1, THRESHOLD, 3 * THRESHOLD + 12345] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % 64, 0);
                std::ptr::write_bytes(p, 0xAB, size);
                let q = a.realloc(p, layout, size * 2);
                assert!(!q.is_null());
                assert_eq!(*q, 0xAB);
                assert_eq!(*q.add(size - 1), 0xAB);
                a.dealloc(q, Layout::from_size_align(size * 2, 64).unwrap());
                let z = a.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
