//! Index entries as they travel: plain data that decodes without judgement beyond
//! the path's own checks. `gossip::wire` turns them into the index's `Entry`,
//! refusing what does not hold together.

use crate::ids::{ChunkHash, ContentId};
use crate::relpath::RelPath;
use serde::{Deserialize, Serialize};

/// One path's state as a peer announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Path relative to the share root (checked when decoded).
    pub path: RelPath,
    /// File, directory or symlink.
    pub kind: WireKind,
    /// Size in bytes (files only).
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: WireMtime,
    /// Version vector: (short node id, counter) pairs.
    pub version: Vec<(u64, u64)>,
    /// Short id of the node that made this version.
    pub modified_by: u64,
    /// A tombstone.
    pub deleted: bool,
    /// Content, in order (files only).
    pub blocks: Vec<WireBlock>,
}

/// What kind of thing a path is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link target as written in the link.
        target: String,
    },
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMtime {
    /// Seconds.
    pub secs: i64,
    /// Nanoseconds.
    pub nanos: u32,
}

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBlock {
    /// blake3 of the chunk.
    pub hash: ChunkHash,
    /// Length in bytes.
    pub len: u32,
}

/// Minor 5: a file's entry whose blocks are told as runs of another content of the
/// same path the receiver holds (its own, or a peer's): a change in the middle of a
/// big file costs the blocks that changed, not the whole list again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// The entry, with `blocks` empty.
    pub entry: WireEntry,
    /// The content whose blocks the runs refer to: the receiver reads them against
    /// an entry of the same path with this content (its own, or a peer's).
    pub base: ContentId,
    /// The blocks in order: runs of the base's blocks, and new ones.
    pub runs: Vec<BlockRun>,
}

/// A stretch of a [`DeltaEntry`]'s blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockRun {
    /// `len` blocks of the base, from block `start` on.
    Base {
        /// First block of the base.
        start: u32,
        /// How many.
        len: u32,
    },
    /// Blocks the base does not hold at this place.
    New(Vec<WireBlock>),
}
