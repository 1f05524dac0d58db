//! Whether a chunk goes out compressed: the share's `compression` setting, the
//! requester's protocol minor, and (for `auto`) what the last chunks of the
//! request showed.
//!
//! `auto` must cost random data almost nothing: a large chunk is judged by
//! compressing a small sample first, and after a chunk that did not pay the next
//! ones are sent as they are without trying, more of them after each miss
//! (1, 3, 7, 15, 31): on incompressible data about one chunk in twenty is tried.

use crate::config::Compression;
use crate::proto::{zchunk, MINOR_ZSTD};

/// Bytes compressed to judge a chunk longer than [`SAMPLE`] × 4 under `auto`.
pub const SAMPLE: usize = 4 << 10;
/// Most chunks sent untried after misses.
const MAX_SKIP_SHIFT: u32 = 5;

/// A chunk as it goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Packed {
    /// As it is.
    Raw(Vec<u8>),
    /// Compressed (one zstd frame).
    Zstd(Vec<u8>),
}

impl Packed {
    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Packed::Raw(b) | Packed::Zstd(b) => b.len(),
        }
    }
}

/// True if compressing `raw` bytes to `z` saves at least a tenth.
pub fn pays(raw: usize, z: usize) -> bool {
    z.saturating_mul(10) <= raw.saturating_mul(9)
}

/// Decides, chunk after chunk of one request, what goes compressed.
pub struct Packer {
    mode: Compression,
    /// Chunks still to send untried.
    skip: u32,
    /// Misses in a row (under `auto`).
    misses: u32,
}

impl Packer {
    /// For a share set to `mode`, answering a requester of protocol minor `their_minor`:
    /// a requester older than [`MINOR_ZSTD`] gets nothing compressed.
    pub fn new(mode: Compression, their_minor: u32) -> Self {
        let mode = if their_minor < MINOR_ZSTD { Compression::Off } else { mode };
        Self { mode, skip: 0, misses: 0 }
    }

    /// The chunk as it goes on the wire.
    pub fn pack(&mut self, raw: Vec<u8>) -> Packed {
        match self.mode {
            Compression::Off => Packed::Raw(raw),
            Compression::On => match self.compress(&raw) {
                Some(z) if z.len() < raw.len() => Packed::Zstd(z),
                _ => Packed::Raw(raw),
            },
            Compression::Auto => self.auto(raw),
        }
    }

    fn auto(&mut self, raw: Vec<u8>) -> Packed {
        if self.skip > 0 {
            self.skip -= 1;
            return Packed::Raw(raw);
        }
        let sample_pays =
            raw.len() <= SAMPLE * 4 || self.compress(&raw[..SAMPLE]).is_some_and(|z| pays(SAMPLE, z.len()));
        let z = if sample_pays { self.compress(&raw).filter(|z| pays(raw.len(), z.len())) } else { None };
        match z {
            Some(z) => {
                self.misses = 0;
                Packed::Zstd(z)
            }
            None => {
                self.misses = (self.misses + 1).min(MAX_SKIP_SHIFT);
                self.skip = (1 << self.misses) - 1;
                Packed::Raw(raw)
            }
        }
    }

    fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        zchunk::compress_on_this_thread(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn text(n: usize) -> Vec<u8> {
        let s: String = (0..n / 10 + 1).map(|i| format!("GET /item/{} 200\n", i % 977)).collect();
        s.into_bytes()[..n].to_vec()
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn kinds(p: &mut Packer, chunks: Vec<Vec<u8>>) -> String {
        chunks
            .into_iter()
            .map(|c| match p.pack(c) {
                Packed::Raw(_) => 'r',
                Packed::Zstd(_) => 'z',
            })
            .collect()
    }

    #[test]
    fn a_tenth_saved_pays() {
        assert!(pays(100, 90));
        assert!(!pays(100, 91));
        assert!(pays(0, 0));
    }

    #[test]
    fn an_old_requester_gets_nothing_compressed() {
        for mode in [Compression::Auto, Compression::On, Compression::Off] {
            let mut p = Packer::new(mode, MINOR_ZSTD - 1);
            assert_eq!(kinds(&mut p, vec![text(64 << 10); 3]), "rrr", "{mode:?}");
        }
        assert_eq!(kinds(&mut Packer::new(Compression::Auto, MINOR_ZSTD), vec![text(64 << 10); 3]), "zzz");
    }

    #[test]
    fn off_never_and_on_whenever_smaller() {
        assert_eq!(kinds(&mut Packer::new(Compression::Off, MINOR_ZSTD), vec![text(64 << 10); 2]), "rr");
        let mut on = Packer::new(Compression::On, MINOR_ZSTD);
        let chunks = vec![random(64 << 10, 1), text(64 << 10), random(64 << 10, 2), text(1000)];
        assert_eq!(kinds(&mut on, chunks), "rzrz", "on tries every chunk");
    }

    #[test]
    fn compressed_chunks_decompress_to_themselves() {
        let raw = text(200_000);
        let Packed::Zstd(z) = Packer::new(Compression::Auto, MINOR_ZSTD).pack(raw.clone()) else {
            panic!("text must compress")
        };
        assert!(z.len() * 5 < raw.len());
        assert_eq!(crate::proto::zchunk::decompress(&z, raw.len() as u32).unwrap(), raw);
    }

    #[test]
    fn auto_backs_off_on_incompressible_chunks_and_comes_back() {
        let mut p = Packer::new(Compression::Auto, MINOR_ZSTD);
        let chunks: Vec<_> = (0..20).map(|i| random(64 << 10, i)).collect();
        // Tried at 0, 2, 6 and 14: skipping 1, 3, 7, then 15.
        assert_eq!(kinds(&mut p, chunks), "rrrrrrrrrrrrrrrrrrrr");
        assert_eq!((p.misses, p.skip), (4, 15 - 5));
        let mut p = Packer::new(Compression::Auto, MINOR_ZSTD);
        let mix = vec![random(64 << 10, 9), text(64 << 10), text(64 << 10), text(64 << 10)];
        assert_eq!(kinds(&mut p, mix), "rrzz", "one miss skips one chunk, then compressible data is found");
        assert_eq!(p.misses, 0);
    }

    #[test]
    fn auto_judges_a_large_chunk_by_a_sample() {
        // Random head, text tail: the sample says no, and the chunk is not compressed.
        let mut chunk = random(SAMPLE, 3);
        chunk.extend(text(60_000));
        assert_eq!(kinds(&mut Packer::new(Compression::Auto, MINOR_ZSTD), vec![chunk.clone()]), "r");
        assert_eq!(kinds(&mut Packer::new(Compression::On, MINOR_ZSTD), vec![chunk]), "z");
    }

    #[test]
    fn auto_keeps_only_what_saves_a_tenth() {
        // Text with a random tail: compresses, but by less than a tenth.
        let mut chunk = text(4000);
        chunk.extend(random(60_000, 4));
        let mut on = Packer::new(Compression::On, MINOR_ZSTD);
        assert_eq!(kinds(&mut on, vec![chunk.clone()]), "z");
        assert_eq!(kinds(&mut Packer::new(Compression::Auto, MINOR_ZSTD), vec![chunk]), "r");
    }
}
