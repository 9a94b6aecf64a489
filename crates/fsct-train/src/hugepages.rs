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
/// without touching the kernel; a larger one is cut to size, a smaller one grown (`mremap`).
/// The cache holds at most [`cache_limit`](Self::cache_limit) bytes (default
/// [`DEFAULT_CACHE_LIMIT`]), and never raises the peak: a request that would map more large
/// memory than the process ever had at once first returns cached blocks (see `make_room`), so
/// the peak is that of the live buffers alone. The price is some page zeroing again where a
/// step's sizes churn around its peak (Conv4 at 84 px: the kernel's `clear_page` 0.6 % → 3.5 %
/// of the step; peak RSS 507 → 475 MiB; ResNet18 at 224 px: 3760 → 3301 MiB).
///
/// On Linux large blocks are anonymous mappings made here (`mmap`, `munmap`, `mremap`), not
/// glibc's: glibc serves blocks under its dynamic mmap threshold (up to 32 MiB) from per-thread
/// heaps that keep what is freed, which hid the memory the cache returned.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAllocator;

static CACHE_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_CACHE_LIMIT);

/// Freed blocks: `(address, size class)`, address 0 for an empty slot.
struct Cache {
    slots: [(usize, usize); SLOTS],
    bytes: usize,
    /// Bytes of large blocks mapped now (in use or cached), and the most there have been.
    mapped: usize,
    high_water: usize,
}

static CACHE: Mutex<Cache> =
    Mutex::new(Cache { slots: [(0, 0); SLOTS], bytes: 0, mapped: 0, high_water: 0 });

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
            cache.mapped -= cache.bytes - held;
            cache.bytes = held;
        }
        release_all(freed);
    }

    /// The current bound on cached bytes.
    pub fn cache_limit() -> usize {
        CACHE_LIMIT.load(Ordering::Relaxed)
    }
}

fn class_of(size: usize) -> usize {
    size.next_multiple_of(HUGE_PAGE)
}

#[cfg(not(target_os = "linux"))]
fn block_layout(class: usize) -> Layout {
    // `class` is a positive multiple of 2 MiB and the alignment a power of two.
    Layout::from_size_align(class, BLOCK_ALIGN).unwrap_or(Layout::new::<u8>())
}

fn cached(layout: Layout) -> bool {
    layout.size() >= THRESHOLD && layout.align() <= BLOCK_ALIGN
}

/// A cached block for `class`: one of exactly that size, else (on Linux, where blocks are
/// mappings) the smallest larger one with its excess tail unmapped. Reusing a larger block
/// spares the kernel's page faults and zeroing on the part kept; the tail goes back to the
/// kernel at once.
fn take(class: usize) -> Option<*mut u8> {
    let (ptr, size) = {
        let mut cache = cache();
        let exact = cache.slots.iter().position(|s| s.0 != 0 && s.1 == class);
        #[cfg(target_os = "linux")]
        let exact = exact.or_else(|| {
            let larger = cache.slots.iter().enumerate().filter(|(_, s)| s.0 != 0 && s.1 > class);
            larger.min_by_key(|(_, s)| s.1).map(|(i, _)| i)
        });
        let (ptr, size) = std::mem::take(&mut cache.slots[exact?]);
        cache.bytes -= size;
        cache.mapped -= size - class;
        (ptr, size)
    };
    if size > class {
        // SAFETY: the tail `[ptr + class, ptr + size)` is part of this block's mapping (both
        // multiples of 2 MiB), owned by no one.
        unsafe { release((ptr + class) as *mut u8, size - class) }
    }
    Some(ptr as *mut u8)
}

/// On a miss for `class`: picks the cached block to grow into it (on Linux, the largest one
/// smaller than `class`; returned, out of the cache), counts the growth as newly mapped and, if
/// that would raise the most ever mapped, first returns other cached blocks to the system to
/// make up the difference, so the cache only ever holds memory below the peak the step's live
/// blocks reach by themselves. Without this, blocks of sizes not asked for again sat in the
/// cache while the live memory peaked: a ResNet18 step at 224 px peaked at 3760 MiB with the
/// 1 GiB cache, 3301 MiB with this rule (fsct, 2026-12-01). Blocks below the mark stay cached,
/// so a step's repeated sizes still skip the kernel's page zeroing.
fn make_room(class: usize) -> Option<(usize, usize)> {
    let mut freed = [(0usize, 0usize); SLOTS];
    let grow = {
        let mut cache = cache();
        #[cfg(target_os = "linux")]
        let pick = {
            let smaller = cache.slots.iter().enumerate().filter(|(_, s)| s.0 != 0 && s.1 < class);
            smaller.max_by_key(|(_, s)| s.1).map(|(i, _)| i)
        };
        #[cfg(not(target_os = "linux"))]
        let pick: Option<usize> = None;
        let grow = pick.map(|i| std::mem::take(&mut cache.slots[i]));
        let reused = grow.map_or(0, |(_, size)| size);
        cache.bytes -= reused;
        // `mapped` still counts the block to grow: only the growth is new.
        let over = (cache.mapped + class - reused).saturating_sub(cache.high_water);
        let mut released = 0;
        for (slot, out) in cache.slots.iter_mut().zip(freed.iter_mut()) {
            if released >= over {
                break;
            }
            if slot.0 != 0 {
                released += slot.1;
                *out = std::mem::take(slot);
            }
        }
        cache.bytes -= released;
        cache.mapped = cache.mapped - released + class - reused;
        cache.high_water = cache.high_water.max(cache.mapped);
        grow
    };
    release_all(freed);
    grow
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
        // The whole block, not just its 2 MiB-aligned interior: advice on part of a mapping
        // splits it into several regions, and `mremap` refuses to grow a range that spans
        // more than one (kernels before 6.7 do not align large mappings to 2 MiB). The kernel
        // only backs aligned 2 MiB ranges with huge pages either way.
        // SAFETY: [ptr, ptr + len) is the allocation just made, page aligned; the advice
        // changes how pages are backed, not their contents. A failure only means small pages.
        unsafe {
            libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len, HUGE_PAGE);
}

/// A block the cache could not serve (after [`make_room`]): on Linux a cached smaller block
/// grown to size, else a fresh mapping that [`release`] gives back to the kernel at once
/// (through glibc, a ResNet18 step at 84 px peaked ~200 MiB higher once the cache started
/// returning blocks: glibc's heaps kept them).
unsafe fn fresh(class: usize, zeroed: bool) -> *mut u8 {
    let grow = make_room(class);
    #[cfg(target_os = "linux")]
    let ptr = match grow.and_then(|(ptr, size)| grown(ptr, size, class, zeroed)) {
        Some(ptr) => ptr,
        // SAFETY: an anonymous private mapping of `class` bytes (zero-filled by the kernel),
        // owned by the caller until `release` unmaps it.
        None => match unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                class,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } {
            libc::MAP_FAILED => std::ptr::null_mut(),
            p => p as *mut u8,
        },
    };
    #[cfg(not(target_os = "linux"))]
    let ptr = unsafe {
        debug_assert!(grow.is_none());
        let layout = block_layout(class);
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    if ptr.is_null() {
        cache().mapped -= class;
    } else {
        advise(ptr, class);
    }
    ptr
}

/// The block `make_room` picked (`size` bytes at `ptr`), grown to `class` in place or moved by
/// the kernel (`mremap`: page tables move, pages are neither copied nor faulted again), so only
/// the growth is new memory; zeroed when asked (the growth already is). `None` (the block
/// returned to the system) if the kernel refuses.
#[cfg(target_os = "linux")]
fn grown(ptr: usize, size: usize, class: usize, zeroed: bool) -> Option<*mut u8> {
    // SAFETY: `ptr` is a mapping of `size` bytes owned by no one; on success the old range is
    // gone and `[p, p + class)` is ours.
    let p = unsafe { libc::mremap(ptr as *mut libc::c_void, size, class, libc::MREMAP_MAYMOVE) };
    if p == libc::MAP_FAILED {
        // SAFETY: the mapping is untouched when mremap fails. The count stays: the fresh
        // mapping that replaces it is `class` bytes, what `make_room` counted for both.
        unsafe { release(ptr as *mut u8, size) };
        return None;
    }
    if zeroed {
        // SAFETY: the first `size` bytes hold the old contents, inside the new mapping.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, size) };
    }
    Some(p as *mut u8)
}

/// Releases the blocks taken out of the cache (`(address, class)`, address 0 for none), after
/// its lock is dropped.
fn release_all(freed: [(usize, usize); SLOTS]) {
    for (ptr, class) in freed {
        if ptr != 0 {
            // SAFETY: the block came from `fresh` with this class and left the cache.
            unsafe { release(ptr as *mut u8, class) }
        }
    }
}

/// Gives a block from [`fresh`] back to the system.
unsafe fn release(ptr: *mut u8, class: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `ptr` is a mapping of `class` bytes made by `fresh`, referenced by no one now.
    unsafe {
        libc::munmap(ptr as *mut libc::c_void, class);
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: the block came from `System` with this layout.
    unsafe {
        System.dealloc(ptr, block_layout(class))
    }
}

// SAFETY: small requests go to `System` unchanged. Large ones get whole blocks of exactly their
// size class (page aligned, so any alignment up to a page is met), either fresh from `fresh` or
// from the cache (cut or grown to the class), which only holds blocks no one else references;
// blocks go back through `release` with the length they were mapped with.
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
            cache().mapped -= class;
            unsafe { release(ptr, class) }
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

    /// The cache is one static: tests that use it take turns.
    static CACHE_USERS: Mutex<()> = Mutex::new(());

    #[test]
    fn large_and_small_buffers_round_trip_their_contents() {
        let _turn = CACHE_USERS.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Reuse by size (exact, else a larger block cut to size) and misses against the mark.
    #[cfg(target_os = "linux")]
    #[test]
    fn cached_blocks_are_cut_or_grown_to_size_and_misses_above_the_mark_return_them() {
        let _turn = CACHE_USERS.lock().unwrap_or_else(|p| p.into_inner());
        let a = HugePageAllocator;
        HugePageAllocator::set_cache_limit(0);
        HugePageAllocator::set_cache_limit(64 << 20);
        // The mark so far comes from other allocations: start this test's from what is mapped.
        let base = {
            let mut cache = cache();
            cache.high_water = cache.mapped;
            cache.mapped
        };
        let mib = |n: usize| Layout::from_size_align(n << 20, 64).unwrap();
        let held = || {
            let cache = cache();
            (cache.bytes >> 20, (cache.mapped - base) >> 20, (cache.high_water - base) >> 20)
        };
        // Contents a reused block keeps (a fresh mapping would read zero).
        // SAFETY (both): `ptr` is a live block of at least `n` MiB from this allocator.
        let mark =
            |ptr: *mut u8, n: usize, byte: u8| unsafe { std::ptr::write_bytes(ptr, byte, n << 20) };
        let kept = |ptr: *mut u8, n: usize, byte: u8| unsafe {
            *ptr == byte && *ptr.add((n << 20) - 1) == byte
        };
        unsafe {
            let (p, q) = (a.alloc(mib(16)), a.alloc(mib(4)));
            mark(p, 16, 1);
            mark(q, 4, 2);
            a.dealloc(p, mib(16));
            a.dealloc(q, mib(4));
            assert_eq!(held(), (20, 20, 20), "(cached, mapped, mark) in MiB");
            // 6 MiB: the 16 MiB block, its last 10 MiB unmapped.
            let c = a.alloc(mib(6));
            assert!(kept(c, 6, 1), "the cached 16 MiB block was reused");
            assert_eq!(held(), (4, 10, 20), "cut, not mapped afresh");
            // 8 MiB: nothing that large is cached; the cached 4 MiB block is grown to 8.
            let d = a.alloc(mib(8));
            assert!(kept(d, 4, 2), "the cached 4 MiB block was grown");
            assert_eq!(held(), (0, 14, 20));
            mark(d, 8, 3);
            a.dealloc(d, mib(8));
            // 12 MiB: the cached 8 MiB block grows by 4, under the mark.
            let e = a.alloc(mib(12));
            assert!(kept(e, 8, 3));
            assert_eq!(held(), (0, 18, 20));
            // Two misses with nothing cached raise the mark; then 4 and 6 MiB are cached.
            let (f, g) = (a.alloc(mib(4)), a.alloc(mib(6)));
            assert_eq!(held(), (0, 28, 28));
            mark(g, 6, 4);
            a.dealloc(f, mib(4));
            a.dealloc(g, mib(6));
            // 16 MiB grows the 6 MiB block (10 new) and would map 38 > 28: the other cached
            // block (4 MiB) goes back first; the mark rises by what is still missing.
            let h = a.alloc(mib(16));
            assert!(kept(h, 6, 4));
            assert_eq!(held(), (0, 34, 34));
            // An exact hit changes nothing.
            a.dealloc(e, mib(12));
            let e = a.alloc(mib(12));
            assert_eq!(held(), (0, 34, 34));
            // Zeroed requests are zero whatever block serves them.
            a.dealloc(e, mib(12));
            let z = a.alloc_zeroed(mib(14));
            assert!(std::slice::from_raw_parts(z, 14 << 20).iter().all(|&b| b == 0));
            for (ptr, n) in [(c, 6), (h, 16), (z, 14)] {
                a.dealloc(ptr, mib(n));
            }
        }
        HugePageAllocator::set_cache_limit(DEFAULT_CACHE_LIMIT);
    }
}
