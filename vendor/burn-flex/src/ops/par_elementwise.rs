//! fsct: element-wise kernels split across rayon's workers.
//!
//! Flex 0.21 ran every element-wise op (`binary_op`, `scalar_op`, `unary_op` and the SIMD
//! broadcast patterns) on the calling thread. In a training step those ops are issued from the
//! main thread between the convolutions (the optimizer's update, composed batch norms, the
//! transformer head), and while they run rayon's workers wait: on a ResNet18 84 px FS-CT step
//! the main thread was busy 17 % of the wall time with both workers idle. Here a contiguous
//! pass over at least [`MIN_PARALLEL`] elements is cut into a few chunks per worker; smaller
//! passes (and builds without `rayon`) run the same closure on the whole slice, so the serial
//! and parallel paths compute identical values (each element sees the same operation).

use alloc::vec::Vec;
use core::mem::MaybeUninit;

/// Passes shorter than this run on the calling thread: rayon's dispatch (a few µs) would cost
/// more than the pass itself (256 KiB of f32 stream through one core in ~10 µs).
pub(crate) const MIN_PARALLEL: usize = 1 << 16;

/// Smallest chunk handed to a worker, a multiple of 64 so SIMD loops end on full vectors.
const MIN_CHUNK: usize = 1 << 14;

/// Chunk length for a pass over `n` elements, or `None` to run it in one piece.
fn chunk_len(n: usize) -> Option<usize> {
    #[cfg(feature = "rayon")]
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && n >= MIN_PARALLEL {
            // A few chunks per worker so an interrupted worker does not hold the others up.
            return Some(n.div_ceil(4 * threads).next_multiple_of(64).max(MIN_CHUNK));
        }
    }
    let _ = n;
    None
}

/// `f(chunk)` over consecutive chunks of `data` covering it exactly once.
pub(crate) fn for_each_mut<T: Send>(data: &mut [T], f: impl Fn(&mut [T]) + Sync + Send) {
    match chunk_len(data.len()) {
        #[cfg(feature = "rayon")]
        Some(c) => {
            use rayon::prelude::*;
            data.par_chunks_mut(c).for_each(f);
        }
        _ => f(data),
    }
}

/// `f(dst_chunk, src_chunk)` over aligned chunks of `dst` and `src` (`src` at least as long).
pub(crate) fn zip_mut<T: Send, U: Sync>(dst: &mut [T], src: &[U], f: impl Fn(&mut [T], &[U]) + Sync + Send) {
    let src = &src[..dst.len()];
    match chunk_len(dst.len()) {
        #[cfg(feature = "rayon")]
        Some(c) => {
            use rayon::prelude::*;
            dst.par_chunks_mut(c).zip(src.par_chunks(c)).for_each(|(d, s)| f(d, s));
        }
        _ => f(dst, src),
    }
}

/// `f(chunk)` over chunks of whole rows of `row_len` elements; `f` gets the index of the chunk's
/// first row.
pub(crate) fn rows_mut<T: Send>(data: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let row_len = row_len.max(1);
    match chunk_len(data.len()) {
        #[cfg(feature = "rayon")]
        Some(c) => {
            use rayon::prelude::*;
            let rows = c.div_ceil(row_len);
            data.par_chunks_mut(rows * row_len).enumerate().for_each(|(i, d)| f(i * rows, d));
        }
        _ => f(0, data),
    }
}

/// `src.map(op).collect()`, written chunk by chunk into an uninitialised vector.
pub(crate) fn map<T: Copy + Sync, R: Send>(src: &[T], op: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    collect(src.len(), |start, out| {
        for (o, &x) in out.iter_mut().zip(&src[start..]) {
            o.write(op(x));
        }
    })
}

/// `a.zip(b).map(op).collect()` over the first `a.len()` elements of each.
pub(crate) fn zip_map<A: Copy + Sync, B: Copy + Sync, R: Send>(a: &[A], b: &[B], op: impl Fn(A, B) -> R + Sync + Send) -> Vec<R> {
    let b = &b[..a.len()];
    collect(a.len(), |start, out| {
        for ((o, &x), &y) in out.iter_mut().zip(&a[start..]).zip(&b[start..]) {
            o.write(op(x, y));
        }
    })
}

/// A vector of `n` elements whose every element `fill(start, chunk)` writes (`chunk` holds the
/// elements from `start` on).
fn collect<R: Send>(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<R>]) + Sync + Send) -> Vec<R> {
    let mut out: Vec<R> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    match chunk_len(n) {
        #[cfg(feature = "rayon")]
        Some(c) => {
            use rayon::prelude::*;
            spare.par_chunks_mut(c).enumerate().for_each(|(i, chunk)| fill(i * c, chunk));
        }
        _ => fill(0, spare),
    }
    // SAFETY: `fill` wrote every element of `spare`, the first `n` of the capacity (the callers
    // above write one element per element of their chunk).
    unsafe { out.set_len(n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths around the thresholds: serial, one past, several chunks with a short last one.
    const LENGTHS: [usize; 6] = [0, 1, 1000, MIN_PARALLEL - 1, MIN_PARALLEL, 3 * MIN_PARALLEL + 77];

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.25 - 100.0).collect()
    }

    #[test]
    fn every_helper_matches_a_serial_loop() {
        for n in LENGTHS {
            let a = values(n);
            let b: Vec<f32> = values(n + 5).into_iter().rev().collect();
            let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * 3.0 - y).collect();

            assert_eq!(zip_map(&a, &b, |x, y| x * 3.0 - y), expected, "zip_map, n = {n}");
            assert_eq!(map(&a, |x| x * 3.0), a.iter().map(|x| x * 3.0).collect::<Vec<_>>(), "map, n = {n}");

            let mut d = a.clone();
            zip_mut(&mut d, &b, |d, s| d.iter_mut().zip(s).for_each(|(x, y)| *x = *x * 3.0 - y));
            assert_eq!(d, expected, "zip_mut, n = {n}");

            let mut d = a.clone();
            for_each_mut(&mut d, |c| c.iter_mut().for_each(|x| *x += 1.0));
            assert_eq!(d, a.iter().map(|x| x + 1.0).collect::<Vec<_>>(), "for_each_mut, n = {n}");
        }
    }

    #[test]
    fn rows_mut_hands_out_whole_rows_with_their_index() {
        for (n_rows, row_len) in [(0, 3), (5, 7), (MIN_PARALLEL / 100 + 3, 100), (MIN_PARALLEL / 9, 4097)] {
            let mut d = vec![0u32; n_rows * row_len];
            rows_mut(&mut d, row_len, |first, chunk| {
                assert_eq!(chunk.len() % row_len, 0, "a chunk cut a row");
                for (r, row) in chunk.chunks_mut(row_len).enumerate() {
                    row.iter_mut().for_each(|x| *x += (first + r) as u32 + 1);
                }
            });
            let expected: Vec<u32> = (0..n_rows).flat_map(|r| core::iter::repeat_n(r as u32 + 1, row_len)).collect();
            assert_eq!(d, expected, "{n_rows} rows of {row_len}");
        }
    }
}
