//! Chunk payloads compressed with zstd ([`super::ChunkReply::Zstd`]): the sender's
//! compressor, and the receiver's decompression, bounded so that a hostile peer
//! can make it allocate no more than the chunk it was asked for.

use crate::ids::MAX_CHUNK;

/// zstd level of chunk payloads: the fastest, as one core must keep up with a
/// 1 Gbit/s link and log-like data still shrinks to a fifth or less.
pub const LEVEL: i32 = 1;

/// Why a compressed chunk from a peer is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZstdError {
    /// The chunk asked for is longer than any chunk may be.
    #[error("compressed chunk of {raw} bytes: at most {MAX_CHUNK} expected")]
    ChunkTooLong {
        /// The requested chunk's length.
        raw: u32,
    },
    /// A compressed payload is only sent when shorter than the chunk.
    #[error("compressed chunk of {compressed} bytes for a chunk of {raw}: fewer than {raw} expected")]
    NotSmaller {
        /// Compressed bytes announced.
        compressed: u32,
        /// The requested chunk's length.
        raw: u32,
    },
    /// Not a zstd frame, or one that decompresses past the chunk's length.
    #[error("compressed chunk does not decompress to at most {raw} bytes: {why}")]
    Corrupt {
        /// The requested chunk's length.
        raw: u32,
        /// What zstd said.
        why: String,
    },
    /// Decompressed to fewer bytes than the chunk's length.
    #[error("compressed chunk decompressed to {got} bytes: {raw} expected")]
    WrongLength {
        /// Bytes it decompressed to.
        got: usize,
        /// The requested chunk's length.
        raw: u32,
    },
}

/// Checks the header of a compressed chunk before its payload is read: at most
/// `compressed` bytes are then read, and fewer than the chunk asked for.
pub fn check_header(compressed: u32, raw: u32) -> Result<(), ZstdError> {
    if raw > MAX_CHUNK {
        return Err(ZstdError::ChunkTooLong { raw });
    }
    if compressed >= raw {
        return Err(ZstdError::NotSmaller { compressed, raw });
    }
    Ok(())
}

/// Decompresses a chunk announced as `raw` bytes long: exactly `raw` bytes or an
/// error, never an allocation larger than `raw` (itself at most [`MAX_CHUNK`]).
pub fn decompress(z: &[u8], raw: u32) -> Result<Vec<u8>, ZstdError> {
    check_header(u32::try_from(z.len()).unwrap_or(u32::MAX), raw)?;
    // `bulk::decompress` allocates `raw` bytes of capacity and fails rather than
    // grow past it, whatever the frame header claims.
    let out = zstd::bulk::decompress(z, raw as usize).map_err(|e| ZstdError::Corrupt { raw, why: e.to_string() })?;
    if out.len() != raw as usize {
        return Err(ZstdError::WrongLength { got: out.len(), raw });
    }
    Ok(out)
}

/// A zstd compressor whose context is reused from chunk to chunk.
pub struct Compressor(Option<zstd::bulk::Compressor<'static>>);

thread_local! {
    /// One context per thread: a new one for every request (a request is often one
    /// chunk) was 1 % of a swarm transfer's CPU in `ZSTD_createCCtx`.
    static THREAD: std::cell::RefCell<Compressor> = std::cell::RefCell::new(Compressor::default());
}

/// `data` compressed with this thread's context, or `None` if zstd failed.
pub fn compress_on_this_thread(data: &[u8]) -> Option<Vec<u8>> {
    THREAD.with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.compress(data)))
}

impl Default for Compressor {
    fn default() -> Self {
        // Without a context (out of memory), chunks go uncompressed.
        Self(zstd::bulk::Compressor::new(LEVEL).ok())
    }
}

impl Compressor {
    /// `data` compressed, or `None` if zstd failed.
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        self.0.as_mut()?.compress(data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let s: String =
            (0..n / 30 + 1).map(|i| format!("2026-12-05 01:{:02} INFO request {i} served\n", i % 60)).collect();
        s.into_bytes()[..n].to_vec()
    }

    #[test]
    fn a_chunk_crosses_compressed_and_back() {
        let raw = text(64 << 10);
        let z = Compressor::default().compress(&raw).unwrap();
        assert!(z.len() * 5 < raw.len(), "{} of {}", z.len(), raw.len());
        assert_eq!(decompress(&z, raw.len() as u32).unwrap(), raw);
    }

    #[test]
    fn a_chunk_longer_than_any_is_refused_before_reading() {
        assert_eq!(check_header(10, MAX_CHUNK + 1), Err(ZstdError::ChunkTooLong { raw: MAX_CHUNK + 1 }));
        assert_eq!(
            check_header(MAX_CHUNK, MAX_CHUNK),
            Err(ZstdError::NotSmaller { compressed: MAX_CHUNK, raw: MAX_CHUNK })
        );
        assert_eq!(check_header(u32::MAX, 100), Err(ZstdError::NotSmaller { compressed: u32::MAX, raw: 100 }));
        assert_eq!(check_header(99, 100), Ok(()));
    }

    #[test]
    fn a_frame_that_grows_past_the_chunk_is_refused() {
        // A bomb: 16 MiB of zeros compresses to a few hundred bytes; asked as a
        // 64 KiB chunk it must fail, not allocate the 16 MiB.
        let bomb = Compressor::default().compress(&vec![0u8; MAX_CHUNK as usize]).unwrap();
        assert!(bomb.len() < 4096, "{}", bomb.len());
        assert!(matches!(decompress(&bomb, 64 << 10), Err(ZstdError::Corrupt { raw: 65536, .. })));
    }

    #[test]
    fn a_frame_shorter_than_the_chunk_is_refused() {
        let raw = text(10_000);
        let z = Compressor::default().compress(&raw).unwrap();
        assert_eq!(decompress(&z, 10_001), Err(ZstdError::WrongLength { got: 10_000, raw: 10_001 }));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(decompress(b"not zstd at all", 100), Err(ZstdError::Corrupt { .. })));
        assert!(matches!(decompress(b"", 100), Err(ZstdError::Corrupt { .. } | ZstdError::WrongLength { got: 0, .. })));
        let mut z = Compressor::default().compress(&text(50_000)).unwrap();
        let mid = z.len() / 2;
        z.truncate(mid);
        assert!(matches!(decompress(&z, 50_000), Err(ZstdError::Corrupt { .. } | ZstdError::WrongLength { .. })));
    }
}
