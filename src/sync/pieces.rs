//! Pieces: runs of missing chunks that travel in one request.
//!
//! The swarm schedules pieces, not chunks. Chunks stay the unit of dedup and
//! verification (64 KiB on average for files up to 1 GiB), but one request per
//! chunk cost a stream, two blocking-pool trips and several thread wake-ups per
//! 64 KiB: a 1 GiB file between two nodes on loopback took 10.8 s with one chunk
//! per request and 7.6–8.2 s with 1 MiB requests. About 2048 pieces per file keep
//! enough of them for a large swarm to trade; a piece is passed on only once it
//! has arrived whole, so smaller pieces also fill a swarm faster at the start.
//! 256 MiB in 128 KiB pieces instead of 256 KiB, simulator: N = 8 1.034x -> 1.027x
//! at RTT 0 and 1.062x -> 1.039x at RTT 50 ms, N = 1000 (RTT 50 ms) 1.191x ->
//! 1.125x; N = 8 lab, six alternating pairs, last host 25.20 -> 25.02 s, median
//! host 24.84 -> 24.53 s.
//! The cost is one more stream and blocking-pool trip per 128 KiB: the N = 16 lab,
//! 17 daemons on 2 cores at 94 % busy, went from 28.3 to 29.5 s, and 1 GiB on
//! loopback from 3.6 to 3.9 s (rsync: 4.9 s).

use crate::ids::ChunkHash;
use crate::ids::MAX_CHUNK;
use crate::proto::{ChunkRef, MAX_REQUEST_CHUNKS};
use crate::sync::swarm::ChunkSet;

/// A file is cut into about this many pieces.
pub const TARGET_PIECES: u64 = 2048;
/// Smallest piece target (one average chunk of small and medium files).
pub const MIN_PIECE: u64 = 64 << 10;
/// Largest piece target.
pub const MAX_PIECE: u64 = 1 << 20;

/// Bytes a piece aims at in a file of `size` bytes.
pub fn piece_target(size: u64) -> u64 {
    (size / TARGET_PIECES).clamp(MIN_PIECE, MAX_PIECE)
}

/// The missing chunks of one download, grouped into pieces.
#[derive(Debug, Default)]
pub struct Pieces {
    pieces: Vec<Vec<ChunkRef>>,
}

impl Pieces {
    /// Groups chunks, given with their first offset in the file, into runs in file
    /// order of about `target` bytes (never more than one request may carry).
    pub fn new(mut missing: Vec<(ChunkRef, u64)>, target: u64) -> Self {
        missing.sort_by_key(|m| m.1);
        let limit = target.min(MAX_CHUNK as u64);
        let mut pieces: Vec<Vec<ChunkRef>> = Vec::new();
        let mut bytes = 0u64;
        for (c, _) in missing {
            let fits = pieces.last().is_some_and(|p| p.len() < MAX_REQUEST_CHUNKS && bytes + c.len as u64 <= limit);
            if !fits {
                pieces.push(Vec::new());
                bytes = 0;
            }
            bytes += c.len as u64;
            if let Some(p) = pieces.last_mut() {
                p.push(c);
            }
        }
        Self { pieces }
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// True when nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The chunks of piece `i`, in file order.
    pub fn chunks(&self, i: usize) -> &[ChunkRef] {
        &self.pieces[i]
    }

    /// What the swarm needs of each piece: an identity (its first chunk) and its size.
    pub fn for_swarm(&self) -> Vec<(ChunkHash, u32)> {
        self.pieces.iter().map(|p| (p[0].hash, p.iter().map(|c| c.len).sum())).collect()
    }

    /// Every missing chunk, piece by piece.
    pub fn missing(&self) -> impl Iterator<Item = &ChunkRef> {
        self.pieces.iter().flatten()
    }

    /// Where each piece's chunks sit in the file, given the first block of each
    /// hash, so a peer's per-block map is read without hashing.
    pub fn in_blocks(&self, first_block: impl Fn(&ChunkHash) -> Option<u32>) -> PieceBlocks {
        let place = |p: &Vec<ChunkRef>| {
            let blocks: Vec<Option<u32>> = p.iter().map(|c| first_block(&c.hash)).collect();
            let first = blocks.first().copied().flatten();
            let consecutive =
                first.is_some_and(|f| blocks.iter().enumerate().all(|(k, b)| *b == f.checked_add(k as u32)));
            match first {
                Some(first) if consecutive => Place::Run { first, len: blocks.len() as u32 },
                _ => Place::Scattered(blocks.into_boxed_slice()),
            }
        };
        PieceBlocks { pieces: self.pieces.iter().map(place).collect() }
    }
}

/// Where the chunks of each piece sit in the file, as block indexes.
#[derive(Debug, Default)]
pub struct PieceBlocks {
    pieces: Vec<Place>,
}

/// The blocks of one piece.
#[derive(Debug)]
enum Place {
    /// Blocks `first..first + len`: a piece cut from a run of missing chunks that
    /// the file holds once each, the usual case.
    Run { first: u32, len: u32 },
    /// Anything else: a chunk the file holds more than once, or one it does not
    /// hold at all (None: the piece is never complete anywhere).
    Scattered(Box<[Option<u32>]>),
}

impl PieceBlocks {
    /// The pieces a peer can serve whole, given which blocks it holds. Every
    /// announcement from every peer is mapped here (the hashing version of this took
    /// 15 % of a receiver's CPU in the N = 8 lab); runs are read in place, as a list
    /// of pieces each behind its own allocation was 1 % of the CPU at N = 16.
    pub fn complete(&self, has: impl Fn(usize) -> bool) -> ChunkSet {
        let mut set = ChunkSet::new(self.pieces.len());
        for (i, p) in self.pieces.iter().enumerate() {
            let whole = match p {
                Place::Run { first, len } => (*first as usize..*first as usize + *len as usize).all(&has),
                Place::Scattered(blocks) => blocks.iter().all(|b| b.is_some_and(|b| has(b as usize))),
            };
            if whole {
                set.insert(i);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u64, len: u32) -> (ChunkRef, u64) {
        (ChunkRef { hash: ChunkHash::of(&i.to_le_bytes()), len }, i * 1_000_000)
    }

    #[test]
    fn target_grows_with_the_file_within_bounds() {
        assert_eq!(piece_target(0), MIN_PIECE);
        assert_eq!(piece_target(256 << 20), 128 << 10);
        assert_eq!(piece_target(1 << 30), 512 << 10);
        assert_eq!(piece_target(4 << 30), 1 << 20);
        assert_eq!(piece_target(1 << 40), MAX_PIECE);
    }

    #[test]
    fn pieces_follow_file_order_and_stay_within_the_target() {
        // Given out of order: pieces are cut in file order.
        let missing: Vec<_> = (0..10u64).rev().map(|i| chunk(i, 100)).collect();
        let p = Pieces::new(missing, 300);
        assert_eq!(p.len(), 4);
        let first: Vec<_> = p.chunks(0).iter().map(|c| c.hash).collect();
        assert_eq!(first, (0..3u64).map(|i| chunk(i, 100).0.hash).collect::<Vec<_>>());
        assert!((0..p.len()).all(|i| p.chunks(i).iter().map(|c| c.len as u64).sum::<u64>() <= 300));
        assert_eq!(p.for_swarm()[3], (chunk(9, 100).0.hash, 100));
    }

    #[test]
    fn a_chunk_larger_than_the_target_is_a_piece_of_its_own() {
        let p = Pieces::new(vec![chunk(0, 50), chunk(1, 500), chunk(2, 50)], 100);
        assert_eq!(p.len(), 3);
        assert_eq!(p.chunks(1).len(), 1);
    }

    #[test]
    fn a_piece_never_names_more_chunks_than_a_request_may() {
        let missing: Vec<_> = (0..(MAX_REQUEST_CHUNKS as u64 + 1)).map(|i| chunk(i, 1)).collect();
        let p = Pieces::new(missing, 1 << 20);
        assert_eq!(p.len(), 2);
        assert_eq!(p.chunks(0).len(), MAX_REQUEST_CHUNKS);
    }

    #[test]
    fn a_peer_serves_only_pieces_it_holds_whole() {
        let p = Pieces::new((0..6u64).map(|i| chunk(i, 100)).collect(), 200);
        let h = |i: u64| chunk(i, 100).0.hash;
        // The file: a chunk that is not missing, then 0..6 with 5 twice.
        // Piece 0 = chunks 0,1; piece 1 = 2,3; piece 2 = 4,5.
        let blocks = [ChunkHash::of(b"not missing"), h(0), h(1), h(2), h(3), h(4), h(5), h(5)];
        let pb = p.in_blocks(|c| blocks.iter().position(|b| b == c).map(|i| i as u32));
        // Held: 0, 1, 2 and the second copy of 5 only; a peer sets every block of a
        // hash it gets, so the first block of a hash stands for all of them.
        let held = [false, true, true, true, false, false, false, true];
        let set = pb.complete(|b| held[b]);
        assert!(set.contains(0));
        assert!(!set.contains(1), "chunk 3 missing");
        assert!(!set.contains(2), "chunk 4 missing");
        let all = pb.complete(|_| true);
        assert_eq!(all.count(), 3);
    }

    #[test]
    fn a_piece_of_blocks_apart_needs_exactly_those_blocks() {
        let p = Pieces::new(vec![chunk(0, 100), chunk(1, 100)], 200);
        let h = |i: u64| chunk(i, 100).0.hash;
        // The file: chunk 0, a chunk this node already has, chunk 1.
        let blocks = [h(0), ChunkHash::of(b"not missing"), h(1)];
        let pb = p.in_blocks(|c| blocks.iter().position(|b| b == c).map(|i| i as u32));
        assert!(pb.complete(|b| b == 0 || b == 2).contains(0));
        assert!(!pb.complete(|b| b < 2).contains(0), "block 2, not block 1, holds chunk 1");
    }

    #[test]
    fn a_piece_whose_chunk_is_not_in_the_file_is_never_complete() {
        let p = Pieces::new(vec![chunk(0, 100), chunk(1, 100)], 100);
        let in_file = chunk(0, 100).0.hash;
        let pb = p.in_blocks(|c| (*c == in_file).then_some(0));
        let set = pb.complete(|_| true);
        assert!(set.contains(0));
        assert!(!set.contains(1));
    }

    proptest::proptest! {
        /// For any file (chunks may repeat) and any set of missing chunks: every
        /// missing chunk is in exactly one piece, pieces follow file order, stay
        /// within the target (or hold one larger chunk) and a request's chunk limit;
        /// and a peer can serve a piece exactly when it holds the first block of each
        /// of its chunks, whether the piece is a run of blocks or scattered.
        #[test]
        fn pieces_cover_the_missing_chunks_once_in_order(
            // Up to 200 distinct short chunks, so a piece can reach the request's
            // chunk limit (64) before its byte target.
            file in proptest::collection::vec((0u64..200, 1u32..40), 1..300),
            missing_bits in proptest::collection::vec(proptest::bool::ANY, 200),
            held in proptest::collection::vec(proptest::bool::ANY, 300),
            target in 1u64..4000,
        ) {
            let hash = |k: u64| ChunkHash::of(&k.to_le_bytes());
            // A chunk's length goes with its content: the first occurrence sets it.
            let len_of = |k: u64| file.iter().find(|(c, _)| *c == k).map_or(1, |(_, l)| *l);
            let mut offsets: Vec<(u64, u64)> = Vec::new();
            let mut off = 0u64;
            for (k, _) in &file {
                if !offsets.iter().any(|(c, _)| c == k) {
                    offsets.push((*k, off));
                }
                off += len_of(*k) as u64;
            }
            let missing: Vec<(ChunkRef, u64)> = offsets
                .iter()
                .filter(|(k, _)| missing_bits[*k as usize])
                .map(|(k, o)| (ChunkRef { hash: hash(*k), len: len_of(*k) }, *o))
                .collect();
            let p = Pieces::new(missing.clone(), target);
            let got: Vec<ChunkHash> = p.missing().map(|c| c.hash).collect();
            let mut want = missing.clone();
            want.sort_by_key(|m| m.1);
            proptest::prop_assert_eq!(got, want.iter().map(|m| m.0.hash).collect::<Vec<_>>());
            for i in 0..p.len() {
                let c = p.chunks(i);
                let bytes: u64 = c.iter().map(|c| c.len as u64).sum();
                proptest::prop_assert!(!c.is_empty() && c.len() <= MAX_REQUEST_CHUNKS);
                proptest::prop_assert!(c.len() == 1 || bytes <= target, "piece {i}: {bytes} bytes over {target}");
            }
            let first_block = |h: &ChunkHash| file.iter().position(|(k, _)| hash(*k) == *h).map(|b| b as u32);
            let pb = p.in_blocks(first_block);
            let set = pb.complete(|b| held[b]);
            for i in 0..p.len() {
                let whole = p.chunks(i).iter().all(|c| first_block(&c.hash).is_some_and(|b| held[b as usize]));
                proptest::prop_assert_eq!(set.contains(i), whole, "piece {}", i);
            }
        }
    }
}
