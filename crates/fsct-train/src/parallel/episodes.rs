//! Which episodes each peer takes, and building them ahead of the peer.
//!
//! Episodes come from the run's one seeded stream (episode `i` depends only on the seed and
//! `i`, see `fsct_episodes::loader`) and are dealt by index, so the episodes of a run, and the
//! ones that make each step, do not depend on the number of peers: step `s` of an epoch that
//! starts at episode `f` is episodes `f + s·E .. f + (s+1)·E` (`E` = `episodes.per_step`), of
//! which peer `r` of `P` takes the `r`-th block of `E / P`. Validation and test episode `i` goes
//! to peer `i mod P`.

use std::sync::mpsc::{sync_channel, Receiver};

use fsct_episodes::{Episode, EpisodeError, EpisodeLoader};

/// The training episodes peer `rank` of `peers` takes over `steps` steps of `per_step` episodes
/// from episode `first`, in the order it runs them.
pub fn train_share(
    first: u64,
    steps: usize,
    per_step: usize,
    peers: usize,
    rank: usize,
) -> Vec<u64> {
    let share = per_step / peers;
    (0..steps)
        .flat_map(|s| {
            let start = first + (s * per_step + rank * share) as u64;
            start..start + share as u64
        })
        .collect()
}

/// The evaluation episodes (`first .. first + n`) peer `rank` of `peers` takes.
pub fn eval_share(first: u64, n: usize, peers: usize, rank: usize) -> Vec<u64> {
    (rank..n).step_by(peers.max(1)).map(|i| first + i as u64).collect()
}

/// Builds the episodes `indices` in order on one background thread, at most `ahead` ahead of
/// the consumer. (The loader's own worker pool prefetches contiguous ranges only; a peer's
/// share is strided.)
pub fn prefetch(
    loader: EpisodeLoader,
    indices: Vec<u64>,
    ahead: usize,
) -> Receiver<Result<Episode, EpisodeError>> {
    let (tx, rx) = sync_channel(ahead.max(1));
    std::thread::spawn(move || {
        for index in indices {
            if tx.send(loader.episode(index)).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_holds_the_same_episodes_whatever_the_peers() {
        // 3 steps of 4 episodes from 100: one peer takes them all in order; two and four peers
        // split each step into blocks, and together hold exactly the same episodes per step.
        let one = train_share(100, 3, 4, 1, 0);
        assert_eq!(one, (100..112).collect::<Vec<_>>());
        for peers in [2, 4] {
            let shares: Vec<_> = (0..peers).map(|r| train_share(100, 3, 4, peers, r)).collect();
            for s in 0..3 {
                let mut step: Vec<u64> = shares
                    .iter()
                    .flat_map(|sh| sh[s * 4 / peers..(s + 1) * 4 / peers].to_vec())
                    .collect();
                step.sort();
                assert_eq!(step, one[s * 4..(s + 1) * 4]);
            }
        }
        assert_eq!(train_share(0, 2, 2, 2, 1), vec![1, 3]);
        assert_eq!(eval_share(10, 5, 2, 0), vec![10, 12, 14]);
        assert_eq!(eval_share(10, 5, 2, 1), vec![11, 13]);
    }
}
