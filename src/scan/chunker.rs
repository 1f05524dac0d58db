//! Content-defined chunking (fastcdc 2020) with blake3 per chunk.

use crate::index::{Block, ChunkHash};
use std::io::Read;

/// fastcdc size bounds for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// Smallest chunk (except the last).
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

/// Files up to this many chunks keep the small 16/64/256 KiB parameters.
const TARGET_CHUNKS: u64 = 16 * 1024;

/// Chunk sizes for a file of `size` bytes: 64 KiB average for small and medium
/// files, growing with the size so that one entry stays bounded (a 1 TiB file gets
/// 4 MiB chunks, about 262k blocks, about 9.5 MiB of entry).
pub fn params_for(size: u64) -> ChunkParams {
    let want = (size / TARGET_CHUNKS).max(64 << 10);
    let avg = want.next_power_of_two().min(fastcdc::v2020::AVERAGE_MAX as u64) as u32;
    ChunkParams { min: avg / 4, avg, max: (avg * 4).min(fastcdc::v2020::MAXIMUM_MAX) }
}

/// Chunks a stream of `size` bytes (the size selects the parameters).
pub fn chunk_reader<R: Read>(r: R, size: u64) -> std::io::Result<Vec<Block>> {
    let p = params_for(size);
    let mut out = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(r, p.min, p.avg, p.max) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        out.push(Block { hash: ChunkHash::of(&c.data), len: c.length as u32 });
    }
    Ok(out)
}

/// Chunks a byte slice.
pub fn chunk_bytes(data: &[u8]) -> Vec<Block> {
    chunk_reader(data, data.len() as u64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn params_scale_with_size() {
        assert_eq!(params_for(0), ChunkParams { min: 16 << 10, avg: 64 << 10, max: 256 << 10 });
        assert_eq!(params_for(1 << 30).avg, 64 << 10);
        assert_eq!(params_for(4 << 30).avg, 256 << 10);
        let tib = params_for(1 << 40);
        assert_eq!(tib.avg, 4 << 20);
        assert!((1u64 << 40) / tib.min as u64 <= 1 << 20, "a 1 TiB entry stays bounded");
    }

    #[test]
    fn blocks_cover_the_input() {
        let d = random(3 << 20, 1);
        let b = chunk_bytes(&d);
        assert_eq!(b.iter().map(|b| b.len as usize).sum::<usize>(), d.len());
        assert!(b.len() > 10);
        assert!(chunk_bytes(&[]).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Inserting bytes in the middle changes only the chunks around the insertion.
        #[test]
        fn insertion_is_local(seed in any::<u64>(), at_frac in 0.1f64..0.9, ins_len in 1usize..100_000) {
            let base = random(4 << 20, seed);
            let at = (base.len() as f64 * at_frac) as usize;
            let mut edited = base[..at].to_vec();
            edited.extend_from_slice(&random(ins_len, seed ^ 0xdead));
            edited.extend_from_slice(&base[at..]);
            let a = chunk_bytes(&base);
            let b = chunk_bytes(&edited);
            let set_a: std::collections::HashSet<_> = a.iter().map(|b| b.hash).collect();
            let new_bytes: u64 = b.iter().filter(|x| !set_a.contains(&x.hash)).map(|x| x.len as u64).sum();
            // At most the insertion plus a few max-size chunks on each side differ.
            let max = params_for(edited.len() as u64).max as u64;
            prop_assert!(new_bytes <= ins_len as u64 + 3 * max, "new {new_bytes} for insert {ins_len}");
            // The chunks before the insertion point are untouched.
            let prefix_same = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
            let mut off = 0u64;
            let mut first_touched = 0;
            for (i, blk) in a.iter().enumerate() {
                if off + blk.len as u64 > at as u64 { first_touched = i; break; }
                off += blk.len as u64;
            }
            prop_assert!(prefix_same + 1 >= first_touched, "prefix {prefix_same} first touched {first_touched}");
        }
    }
}
