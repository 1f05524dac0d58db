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
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
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
    let body = encode(v)?;
    if body.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one length-prefixed frame; `Ok(None)` on a clean end of stream.
///
/// Not cancel-safe: dropped part-way (a losing `select!` branch), the bytes it
/// read are gone and the stream is out of step. Read a long-lived stream from a
/// task of its own.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, CodecError> {
    let mut len = [0u8; 4];
    // End of stream is clean only between frames; inside a length prefix it is an error.
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(decode(&body)?))
}
