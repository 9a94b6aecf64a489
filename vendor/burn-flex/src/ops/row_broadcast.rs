//! fsct: element-wise binary kernels for operands that broadcast whole rows.
//!
//! Batch norm applies per-channel statistics to `[N, C, H, W]` maps: `x - mean`, `x * scale`
//! with `mean: [1, C, 1, 1]`. After broadcasting, such an operand has strides `[0, 1, 0, 0]`:
//! one scalar per `(n, c)` row of `H·W` elements. Flex 0.21 walked these with a per-element
//! strided iterator (index arithmetic for every element), which dominated a Conv4 training
//! step. Here the trailing dims are split off as rows that are either contiguous or one
//! repeated scalar for each operand; only the outer dims are walked with an index odometer, and
//! each row is a plain loop the compiler vectorises.

use alloc::vec::Vec;

use crate::Layout;

/// How one operand looks inside a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    /// `row_len` consecutive elements.
    Contiguous,
    /// One element repeated `row_len` times.
    Scalar,
}

/// Rows shorter than this are not worth the set-up; the caller's generic path handles them.
const MIN_ROW: usize = 4;

/// `op(lhs, rhs)` over two operands of the same logical shape, or `None` when the layouts do not
/// split into broadcast rows (the caller then takes its generic path).
pub(crate) fn apply<E: Copy, R, Op: Fn(E, E) -> R>(
    lhs: &[E],
    rhs: &[E],
    lhs_layout: &Layout,
    rhs_layout: &Layout,
    op: Op,
) -> Option<Vec<R>> {
    let shape = lhs_layout.shape();
    let nd = shape.num_dims();
    if nd == 0 || rhs_layout.shape() != shape {
        return None;
    }
    let (ls, rs) = (lhs_layout.strides(), rhs_layout.strides());
    if ls.iter().chain(rs).any(|&s| s < 0) {
        return None;
    }
    let kind = |s: isize| match s {
        1 => Some(Row::Contiguous),
        0 => Some(Row::Scalar),
        _ => None,
    };
    let (mut lk, mut rk) = (kind(ls[nd - 1]).or((shape[nd - 1] == 1).then_some(Row::Contiguous))?, kind(rs[nd - 1]).or((shape[nd - 1] == 1).then_some(Row::Contiguous))?);
    if shape[nd - 1] == 1 {
        // A size-1 last dim fits either kind; let the next dim decide.
        lk = if nd > 1 && ls[nd - 2] == 0 { Row::Scalar } else { lk };
        rk = if nd > 1 && rs[nd - 2] == 0 { Row::Scalar } else { rk };
    }
    // Grow the row over trailing dims while both operands keep their kind.
    let mut split = nd - 1;
    let mut row_len = shape[nd - 1];
    while split > 0 {
        let d = split - 1;
        let fits = |s: isize, k: Row| shape[d] == 1 || (k == Row::Contiguous && s as usize == row_len) || (k == Row::Scalar && s == 0);
        if !(fits(ls[d], lk) && fits(rs[d], rk)) {
            break;
        }
        row_len *= shape[d];
        split = d;
    }
    if row_len < MIN_ROW || (lk == Row::Contiguous && rk == Row::Contiguous && split == 0) {
        // Too short, or fully contiguous (the callers' own fast paths cover that).
        return None;
    }
    let total = shape.num_elements();
    let mut out = Vec::with_capacity(total);
    let outer = &shape[..split];
    let mut idx = alloc::vec![0usize; split];
    let (mut lo, mut ro) = (lhs_layout.start_offset(), rhs_layout.start_offset());
    for _ in 0..total / row_len.max(1) {
        match (lk, rk) {
            (Row::Contiguous, Row::Contiguous) => {
                out.extend(lhs[lo..lo + row_len].iter().zip(&rhs[ro..ro + row_len]).map(|(&a, &b)| op(a, b)))
            }
            (Row::Contiguous, Row::Scalar) => {
                let b = rhs[ro];
                out.extend(lhs[lo..lo + row_len].iter().map(|&a| op(a, b)))
            }
            (Row::Scalar, Row::Contiguous) => {
                let a = lhs[lo];
                out.extend(rhs[ro..ro + row_len].iter().map(|&b| op(a, b)))
            }
            (Row::Scalar, Row::Scalar) => {
                let (a, b) = (lhs[lo], rhs[ro]);
                out.extend((0..row_len).map(|_| op(a, b)))
            }
        }
        // Odometer over the outer dims.
        for d in (0..split).rev() {
            idx[d] += 1;
            lo += ls[d] as usize;
            ro += rs[d] as usize;
            if idx[d] < outer[d] {
                break;
            }
            lo -= ls[d] as usize * outer[d];
            ro -= rs[d] as usize * outer[d];
            idx[d] = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_std::Shape;

    fn strided_reference(l: &[f32], r: &[f32], ll: &Layout, rl: &Layout) -> Vec<f32> {
        let li = crate::strided_index::StridedIter::new(ll);
        let ri = crate::strided_index::StridedIter::new(rl);
        li.zip(ri).map(|(a, b)| l[a] - 2.0 * r[b]).collect()
    }

    #[test]
    fn matches_the_strided_walk() {
        let data: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.37).sin()).collect();
        let shape = Shape::from(alloc::vec![3, 4, 5, 6]);
        let full = Layout::contiguous(shape.clone());
        let cases: Vec<(Layout, Layout)> = alloc::vec![
            // x - mean[1, C, 1, 1]
            (full.clone(), Layout::new(shape.clone(), alloc::vec![0, 1, 0, 0], 7)),
            // mean - x
            (Layout::new(shape.clone(), alloc::vec![0, 1, 0, 0], 3), full.clone()),
            // x - m[N, C, 1, 1]
            (full.clone(), Layout::new(shape.clone(), alloc::vec![4, 1, 0, 0], 0)),
            // x - row[1, 1, H, W]: shared contiguous rows
            (full.clone(), Layout::new(shape.clone(), alloc::vec![0, 0, 6, 1], 11)),
            // x[N, C, H, 1] style scalar per (n, c, h)
            (full.clone(), Layout::new(shape.clone(), alloc::vec![20, 5, 1, 0], 2)),
        ];
        for (ll, rl) in cases {
            let got = apply(&data, &data, &ll, &rl, |a, b| a - 2.0 * b).expect("fast path taken");
            assert_eq!(got, strided_reference(&data, &data, &ll, &rl));
        }
    }
}
