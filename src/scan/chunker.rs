//! Content-defined chunking (fastcdc 2020) with blake3 per chunk.

use crate::ids::ChunkHash;
use crate::index::Block;
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

/// Bytes read per round; at least this much (and two max-size chunks, so every round
/// cuts at least one) is cut at once. Two such buffers are in use while a file larger
/// than one is chunked: 32 MiB, or 64 MiB for files over 32 GiB (16 MiB chunks).
const READ_BUF: usize = 16 << 20;

/// Chunks a stream of `size` bytes (the size selects the parameters).
///
/// Reads big buffers and cuts them with fastcdc on this thread while the chunks of
/// the previous buffer are hashed on the other cores. On the 2-core build machine
/// 256 MiB in memory took 0.38 s cut-then-hash (cutting 0.13 s, hashing on both
/// cores 0.09 s, the rest copying) and 0.21 s pipelined; `StreamCDC` (which also
/// copies every chunk) took 2.9 s per GiB.
pub fn chunk_reader<R: Read>(r: R, size: u64) -> std::io::Result<Vec<Block>> {
    let p = params_for(size);
    chunk_buffered(r, p, READ_BUF.max(2 * p.max as usize), size)
}

/// A buffer of input: the bytes read (at most `cap`), and whether the input ended.
///
/// The bytes are read into the vector's spare capacity, never zeroed first: a
/// zeroed 16 MiB buffer per file was 16 % of all CPU when 10 000 small files were
/// scanned and synced (a memset of the whole buffer for every 10-byte file).
struct Filled {
    buf: Vec<u8>,
    cap: usize,
    eof: bool,
}

impl Filled {
    /// A buffer of `cap` bytes at most, room for `size` to start with: a small file
    /// gets a small buffer. (A 16 MiB one for every file was an mmap and munmap per
    /// file, 14 % of the daemon's CPU while 100 000 small files were indexed.) The
    /// byte past `size` lets the first read see the end.
    fn new(cap: usize, size: u64) -> Self {
        let room = usize::try_from(size).map_or(cap, |s| s.saturating_add(1).min(cap));
        Self { buf: Vec::with_capacity(room), cap, eof: false }
    }

    /// Reads until the buffer holds `cap` bytes or the input ends.
    fn fill<R: Read>(&mut self, r: &mut R) -> std::io::Result<()> {
        let want = self.cap.saturating_sub(self.buf.len());
        if want == 0 || self.eof {
            return Ok(());
        }
        // `read_to_end` retries interrupted reads and stops at the limit or the end.
        let n = r.by_ref().take(want as u64).read_to_end(&mut self.buf)?;
        self.eof = n < want;
        Ok(())
    }

    /// The chunks of the valid bytes; unless the input ended, the last one is left
    /// out: it may only be cut short by the buffer's end, and is redone with more
    /// data. Every earlier cut depends on bytes inside the buffer only.
    fn cuts(&self, p: ChunkParams) -> Vec<(usize, usize)> {
        let data = &self.buf[..];
        let mut cuts: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max).map(|c| (c.offset, c.length)).collect();
        if !self.eof {
            cuts.pop();
        }
        cuts
    }
}

/// Chunks `r` (about `size` bytes) reading up to `cap` bytes at a time.
fn chunk_buffered<R: Read>(mut r: R, p: ChunkParams, cap: usize, size: u64) -> std::io::Result<Vec<Block>> {
    let mut cur = Filled::new(cap, size);
    cur.fill(&mut r)?;
    if cur.eof {
        // Fits in one buffer (most files): no second thread.
        return Ok(hash_all(&cur.buf, &cur.cuts(p), cores()));
    }
    std::thread::scope(|s| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<(usize, usize)>)>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = s.spawn(move || {
            let mut out = Vec::new();
            // One core is cutting the next buffer meanwhile.
            let threads = cores().saturating_sub(1).max(1);
            for (buf, cuts) in full_rx {
                out.extend(hash_all(&buf, &cuts, threads));
                // The reader may be gone (an error): then the buffer is just dropped.
                let _ = empty_tx.send(buf);
            }
            out
        });
        let mut spare = Some(Vec::with_capacity(cap));
        let hasher_gone = || std::io::Error::other("the hashing thread stopped");
        let read = loop {
            let cuts = cur.cuts(p);
            // Where the bytes left for the next round start.
            let end = cuts.last().map_or(0, |&(o, l)| o + l);
            // The second buffer, then whichever one the hasher is done with.
            let Some(mut next) = spare.take().or_else(|| empty_rx.recv().ok()) else {
                break Err(hasher_gone());
            };
            next.clear();
            next.extend_from_slice(&cur.buf[end..]);
            let eof = cur.eof;
            let done = std::mem::replace(&mut cur, Filled { buf: next, cap, eof });
            if full_tx.send((done.buf, cuts)).is_err() {
                break Err(hasher_gone());
            }
            if cur.eof && cur.buf.is_empty() {
                break Ok(());
            }
            if let Err(e) = cur.fill(&mut r) {
                break Err(e);
            }
        };
        drop(full_tx);
        // A panicking hasher is a bug; report it as an error rather than crash the scan.
        let out = hasher.join().map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        read.map(|()| out)
    })
}

/// Cores to hash on (at most 8). Asked once: `available_parallelism` reads the
/// cgroup's CPU quota from files, and a scan chunks every new or changed file.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8))
}

/// Hashes chunks of `buf` on `threads` threads, in order.
fn hash_all(buf: &[u8], cuts: &[(usize, usize)], threads: usize) -> Vec<Block> {
    let hash = |part: &[(usize, usize)]| -> Vec<Block> {
        part.iter().map(|&(o, l)| Block { hash: ChunkHash::of(&buf[o..o + l]), len: l as u32 }).collect()
    };
    if threads < 2 || cuts.len() < 2 * threads {
        return hash(cuts);
    }
    let per = cuts.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = cuts.chunks(per).map(|part| s.spawn(move || hash(part))).collect();
        // A panicking hasher is a bug; fall back to hashing that part here.
        handles
            .into_iter()
            .zip(cuts.chunks(per))
            .flat_map(|(h, part)| h.join().unwrap_or_else(|_| hash(part)))
            .collect()
    })
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
    fn buffered_cutting_matches_one_pass_over_the_whole_input() {
        let d = random(5 << 20, 9);
        let p = params_for(d.len() as u64);
        let whole: Vec<Block> = fastcdc::v2020::FastCDC::new(&d, p.min, p.avg, p.max)
            .map(|c| Block { hash: ChunkHash::of(&d[c.offset..c.offset + c.length]), len: c.length as u32 })
            .collect();
        // Small buffers force many carried-over chunks; 1-byte reads force partial fills.
        assert_eq!(chunk_buffered(&d[..], p, 2 * p.max as usize, 0).unwrap(), whole);
        assert_eq!(chunk_buffered(&d[..], p, 4 * p.max as usize, d.len() as u64).unwrap(), whole);
        assert_eq!(chunk_buffered(&d[..], p, 4 * p.max as usize + 12345, 100).unwrap(), whole);
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(7777);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(chunk_buffered(Trickle(&d), p, 4 * p.max as usize, u64::MAX).unwrap(), whole);
        assert_eq!(chunk_reader(&d[..], d.len() as u64).unwrap(), whole);
    }

    #[test]
    fn a_read_error_after_several_buffers_is_returned() {
        let d = random(3 << 20, 4);
        let p = params_for(d.len() as u64);
        struct FailAfter<'a>(&'a [u8]);
        impl Read for FailAfter<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk gone"));
                }
                let n = out.len().min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let err = chunk_buffered(FailAfter(&d), p, 4 * p.max as usize, d.len() as u64).unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
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
