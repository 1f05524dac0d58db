//! A file's blocks told as runs of another version's blocks (protocol minor 5).
//!
//! An entry carries every block of its file: 36 bytes per chunk, 0.14 MiB for a
//! 256 MiB file, sent again on every change however small. A peer that already
//! holds a version of the path needs only the runs that changed. Pure functions:
//! which version to use as the base, and what to do when the receiver no longer
//! holds it, is `gossip::index`'s concern.

use crate::ids::ChunkHash;
use crate::index::Block;
use crate::proto::{BlockRun, WireBlock};
use std::collections::HashMap;

/// Files of fewer blocks go whole: the lookups would cost more than the bytes saved.
pub const MIN_DELTA_BLOCKS: usize = 32;

/// Bytes one block takes in an entry on the wire (hash and length).
const BLOCK_BYTES: usize = std::mem::size_of::<WireBlock>();
/// Bytes one `BlockRun::Base` takes on the wire (variant tag, start, length).
const RUN_BYTES: usize = 12;

/// Why runs do not make a block list out of a base.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// A run names blocks past the base's end.
    #[error("a run names blocks {start}..{start}+{len} of a base of {base} blocks")]
    OutsideBase {
        /// The run's first block.
        start: u32,
        /// Its length.
        len: u32,
        /// Blocks of the base.
        base: usize,
    },
    /// The runs make more blocks than allowed.
    #[error("the runs make more than {max} blocks")]
    TooManyBlocks {
        /// The limit.
        max: usize,
    },
}

/// The runs that make `new` out of `base`, or `None` when they would not take at
/// most half the bytes of `new`'s blocks whole.
pub fn diff(base: &[Block], new: &[Block]) -> Option<Vec<BlockRun>> {
    if new.len() < MIN_DELTA_BLOCKS || base.is_empty() {
        return None;
    }
    // First place of each hash: an edit in place, an insert and an append all keep
    // long runs of the base in order, which extending from there finds.
    let mut at: HashMap<ChunkHash, usize> = HashMap::with_capacity(base.len());
    for (i, b) in base.iter().enumerate().rev() {
        at.insert(b.hash, i);
    }
    let (mut runs, mut fresh, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    let mut i = 0;
    while i < new.len() {
        let Some(&j) = at.get(&new[i].hash).filter(|&&j| base[j].len == new[i].len) else {
            fresh.push(WireBlock { hash: new[i].hash, len: new[i].len });
            i += 1;
            continue;
        };
        let len = new[i..].iter().zip(&base[j..]).take_while(|(n, b)| n == b).count();
        if !fresh.is_empty() {
            bytes += fresh.len() * BLOCK_BYTES + RUN_BYTES;
            runs.push(BlockRun::New(std::mem::take(&mut fresh)));
        }
        // Positions fit in u32: an entry that fits in a frame has under a million blocks.
        runs.push(BlockRun::Base { start: j as u32, len: len as u32 });
        bytes += RUN_BYTES;
        i += len;
    }
    if !fresh.is_empty() {
        bytes += fresh.len() * BLOCK_BYTES + RUN_BYTES;
        runs.push(BlockRun::New(fresh));
    }
    (bytes * 2 <= new.len() * BLOCK_BYTES).then_some(runs)
}

/// The blocks `runs` make out of `base`, at most `max` of them.
pub fn patch(base: &[Block], runs: &[BlockRun], max: usize) -> Result<Vec<Block>, DeltaError> {
    let mut out: Vec<Block> = Vec::new();
    for run in runs {
        let more = match run {
            BlockRun::Base { len, .. } => *len as usize,
            BlockRun::New(blocks) => blocks.len(),
        };
        if out.len() + more > max {
            return Err(DeltaError::TooManyBlocks { max });
        }
        match run {
            BlockRun::Base { start, len } => {
                let from = *start as usize;
                let stretch = base.get(from..from + *len as usize).ok_or(DeltaError::OutsideBase {
                    start: *start,
                    len: *len,
                    base: base.len(),
                })?;
                out.extend_from_slice(stretch);
            }
            BlockRun::New(blocks) => out.extend(blocks.iter().map(|b| Block { hash: b.hash, len: b.len })),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blocks(seeds: &[u32]) -> Vec<Block> {
        seeds.iter().map(|s| Block { hash: ChunkHash::of(&s.to_le_bytes()), len: 1000 + s % 7 }).collect()
    }

    #[test]
    fn an_insert_in_the_middle_is_two_runs_of_the_base_around_the_new_blocks() {
        let base = blocks(&(0..100).collect::<Vec<_>>());
        let mut seeds: Vec<u32> = (0..50).collect();
        seeds.extend([1000, 1001]);
        seeds.extend(50..100);
        let new = blocks(&seeds);
        let runs = diff(&base, &new).unwrap();
        assert_eq!(
            runs,
            vec![
                BlockRun::Base { start: 0, len: 50 },
                BlockRun::New(new[50..52].iter().map(|b| WireBlock { hash: b.hash, len: b.len }).collect()),
                BlockRun::Base { start: 50, len: 50 },
            ]
        );
        assert_eq!(patch(&base, &runs, usize::MAX).unwrap(), new);
    }

    #[test]
    fn a_small_file_or_a_mostly_new_one_goes_whole() {
        let base = blocks(&(0..100).collect::<Vec<_>>());
        assert_eq!(diff(&base, &base[..MIN_DELTA_BLOCKS - 1]), None, "too few blocks");
        assert_eq!(diff(&[], &base), None, "no base");
        let new = blocks(&(60..160).collect::<Vec<_>>());
        assert_eq!(diff(&base, &new), None, "60 % new");
    }

    #[test]
    fn runs_outside_the_base_or_past_the_limit_are_refused() {
        let base = blocks(&[1, 2, 3]);
        let e = patch(&base, &[BlockRun::Base { start: 2, len: 2 }], 100).unwrap_err();
        assert_eq!(e, DeltaError::OutsideBase { start: 2, len: 2, base: 3 });
        let e = patch(&base, &[BlockRun::Base { start: u32::MAX, len: u32::MAX }], usize::MAX).unwrap_err();
        assert!(matches!(e, DeltaError::OutsideBase { .. }), "no overflow: {e}");
        // A few bytes of runs naming the base again and again stop at the limit.
        let many = vec![BlockRun::Base { start: 0, len: 3 }; 1000];
        assert_eq!(patch(&base, &many, 2999).unwrap_err(), DeltaError::TooManyBlocks { max: 2999 });
        assert_eq!(patch(&base, &many, 3000).unwrap().len(), 3000);
    }

    proptest! {
        /// Whatever the two lists, the runs make exactly the new one.
        #[test]
        fn patch_of_diff_is_the_new_list(
            base in prop::collection::vec(0u32..64, 0..200),
            new in prop::collection::vec(0u32..80, 0..200),
        ) {
            let (base, new) = (blocks(&base), blocks(&new));
            if let Some(runs) = diff(&base, &new) {
                prop_assert_eq!(patch(&base, &runs, new.len()).unwrap(), new);
            }
        }

        /// An edit of a few blocks anywhere in a long list always goes as runs.
        #[test]
        fn a_local_edit_always_goes_as_runs(len in 64usize..400, at in 0usize..400, cut in 0usize..4, add in 0u32..4) {
            let base = blocks(&(0..len as u32).collect::<Vec<_>>());
            let at = at.min(len);
            let mut seeds: Vec<u32> = (0..at as u32).collect();
            seeds.extend((0..add).map(|k| 10_000 + k));
            seeds.extend((at + cut).min(len) as u32..len as u32);
            let new = blocks(&seeds);
            prop_assume!(new.len() >= MIN_DELTA_BLOCKS);
            let runs = diff(&base, &new).expect("a few blocks changed");
            prop_assert_eq!(patch(&base, &runs, usize::MAX).unwrap(), new);
        }
    }
}
