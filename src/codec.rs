//! The one place that knows the encoding (bincode 1.3, little endian, fixed ints)
//! and the framing (u32 big-endian length prefix), for the wire and the index
//! alike: swapping the codec is a change to this file. Imports nothing of the crate.

/// Largest frame either side accepts (an entry of a 1 TiB file is about 9.5 MiB).
pub const MAX_FRAME: usize = 32 << 20;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Encoding and framing failures.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
    /// A frame larger than its message's limit (at most [`MAX_FRAME`]).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes for this message")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The stream ended or failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// Encodes a value.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    use bincode::Options;
    Ok(options().serialize(v)?)
}

/// Decodes a value; trailing bytes and oversized input are errors.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    use bincode::Options;
    Ok(options().deserialize(b)?)
}

/// Writes one length-prefixed frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, v: &T) -> Result<(), CodecError> {
    write_body(w, &encode(v)?).await
}

/// Writes an encoded body as one length-prefixed frame.
pub async fn write_body<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), CodecError> {
    if body.len() > MAX_FRAME {
        return Err(CodecError::TooLarge { len: body.len(), max: MAX_FRAME });
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Frames up to this size are read into a buffer of their announced length;
/// larger ones grow as their bytes arrive, so a length prefix alone (a stranger's
/// 4 bytes claiming 32 MiB) costs nothing.
const PREALLOC: usize = 64 << 10;

/// A frame whose length prefix has been read and checked against its limit; its
/// body is still on the stream.
#[derive(Debug)]
pub struct FrameHead {
    len: usize,
    /// The body's first bytes (up to 4), read to learn its tag.
    start: Vec<u8>,
}

/// Reads a frame's length prefix and checks it against `max`, then reads the first
/// 4 bytes of its body and checks the length against `max_of(tag)`: `tag` is those
/// 4 bytes as a little-endian `u32`, which for an enum is its variant index, so a
/// limit can depend on the variant. (A body under 4 bytes is within any limit.)
/// `Ok(None)` on a clean end of stream.
///
/// Not cancel-safe (see [`read_frame`]).
pub async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    max_of: impl Fn(u32) -> usize,
) -> Result<Option<FrameHead>, CodecError> {
    let mut len = [0u8; 4];
    // End of stream is clean only between frames; inside a length prefix it is an error.
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    let mut start = vec![0u8; len.min(4)];
    r.read_exact(&mut start).await?;
    if let Ok(tag) = <[u8; 4]>::try_from(start.as_slice()) {
        let max = max_of(u32::from_le_bytes(tag)).min(max);
        if len > max {
            return Err(CodecError::TooLarge { len, max });
        }
    }
    Ok(Some(FrameHead { len, start }))
}

impl FrameHead {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the rest of the body from the stream the head came from and decodes it.
    pub async fn body<R: AsyncRead + Unpin, T: DeserializeOwned>(self, r: &mut R) -> Result<T, CodecError> {
        let mut body = self.start;
        if self.len <= PREALLOC {
            body.resize(self.len, 0);
            r.read_exact(&mut body[4.min(self.len)..]).await?;
        } else {
            // Grown by doubling, never past the announced length: the buffer is at most
            // twice what the peer really sent.
            let mut have = body.len();
            while have < self.len {
                let want = grown(have, self.len);
                body.reserve_exact(want - body.len());
                body.resize(want, 0);
                while have < want {
                    match r.read(&mut body[have..want]).await? {
                        0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                        n => have += n,
                    }
                }
            }
        }
        decode(&body)
    }
}

/// The buffer size to read into once `have` bytes of a `len`-byte body arrived:
/// twice that (at least twice [`PREALLOC`]), never past `len`.
fn grown(have: usize, len: usize) -> usize {
    (have.max(PREALLOC) * 2).min(len)
}

/// Reads one length-prefixed frame of at most `max` bytes; `Ok(None)` on a clean
/// end of stream. Memory follows the bytes that arrive, not the announced length.
///
/// Not cancel-safe: dropped part-way (a losing `select!` branch), the bytes it
/// read are gone and the stream is out of step. Read a long-lived stream from a
/// task of its own.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, CodecError> {
    read_frame_by(r, max, |_| max).await
}

/// [`read_frame`] with a limit by the body's tag as well (see [`read_head`]).
pub async fn read_frame_by<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
    max_of: impl Fn(u32) -> usize,
) -> Result<Option<T>, CodecError> {
    match read_head(r, max, max_of).await? {
        Some(head) => Ok(Some(head.body(r).await?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_body_grows_with_what_arrived() {
        let len = MAX_FRAME;
        let mut have = 4;
        let mut sizes = Vec::new();
        while have < len {
            let next = grown(have, len);
            assert!(next <= (2 * have).max(2 * PREALLOC) && next <= len, "{next} after {have}");
            sizes.push(next);
            have = next;
        }
        // 128 KiB, 256 KiB, ... 32 MiB: nine steps, each at most twice what arrived.
        assert_eq!(sizes.len(), 9, "{sizes:?}");
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_truncated_large_body_fails() {
        let mut wire = Vec::new();
        let big = vec![7u8; 300 << 10];
        write_frame(&mut wire, &big).await.unwrap();
        write_frame(&mut wire, &5u32).await.unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame::<_, Vec<u8>>(&mut r, MAX_FRAME).await.unwrap(), Some(big));
        assert_eq!(read_frame::<_, u32>(&mut r, 4).await.unwrap(), Some(5));
        assert_eq!(read_frame::<_, u32>(&mut r, 4).await.unwrap(), None);
        // A prefix claiming 32 MiB and 100 KiB behind it: the stream's end, not a 32 MiB buffer.
        let mut short = (MAX_FRAME as u32).to_be_bytes().to_vec();
        short.extend(vec![0u8; 100 << 10]);
        let e = read_frame::<_, Vec<u8>>(&mut short.as_slice(), MAX_FRAME).await.unwrap_err();
        assert!(matches!(e, CodecError::Io(_)), "{e}");
        let e = read_frame::<_, Vec<u8>>(&mut short.as_slice(), 1000).await.unwrap_err();
        assert!(matches!(e, CodecError::TooLarge { len: MAX_FRAME, max: 1000 }), "{e}");
    }
}
