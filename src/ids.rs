//! The ground floor: who a node is and what a chunk is, by name. Node ids, their
//! short form inside version vectors, chunk and content hashes. Imports nothing of
//! the crate; every other module may use it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest chunk anyone makes, asks for or sends.
pub const MAX_CHUNK: u32 = 16 << 20;

/// A node id string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a node id: {0:?} (expected 52 base32 characters)")]
pub struct BadNodeId(pub String);

/// blake3 of a node's public key (SubjectPublicKeyInfo DER).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of a public key given as SPKI DER.
    pub fn from_spki(spki_der: &[u8]) -> Self {
        Self(*blake3::hash(spki_der).as_bytes())
    }

    /// The u64 form used in version vectors.
    pub fn short(&self) -> ShortId {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        ShortId(u64::from_be_bytes(b))
    }

    /// Parses the base32 form (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, BadNodeId> {
        let up = s.trim().to_ascii_uppercase();
        let v = data_encoding::BASE32_NOPAD.decode(up.as_bytes()).map_err(|_| BadNodeId(s.to_string()))?;
        let arr: [u8; 32] = v.try_into().map_err(|_| BadNodeId(s.to_string()))?;
        Ok(Self(arr))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::BASE32_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_string()[..7])
    }
}

/// The short (u64) form of a node id, used inside version vectors.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ShortId(pub u64);

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for ShortId {
    /// The first seven base32 characters, which equal the start of the full node id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = data_encoding::BASE32_NOPAD.encode(&self.0.to_be_bytes());
        f.write_str(&s[..7])
    }
}

/// The blake3 hash of one chunk's bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// Hashes bytes.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Names one version of a file's content: blake3 over its size and block hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The id of a file of `size` bytes made of these (hash, length) blocks.
    pub fn of(size: u64, blocks: impl Iterator<Item = (ChunkHash, u32)>) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&size.to_le_bytes());
        for (hash, len) in blocks {
            h.update(&hash.0);
            h.update(&len.to_le_bytes());
        }
        ContentId(*h.finalize().as_bytes())
    }
}
