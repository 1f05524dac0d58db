//! What the index knows of one path: the entry type shared by index, planner and wire.

use super::vv::{VersionVector, VvOrder};
use crate::ids::{ChunkHash, ContentId, ShortId, MAX_CHUNK};
use crate::relpath::{symlink_stays_inside, PathError, RelPath};
use serde::{Deserialize, Serialize};

/// One chunk of a file: its hash and length; its offset is the sum of the ones before.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct Block {
    /// blake3 of the chunk.
    pub hash: ChunkHash,
    /// Length in bytes.
    pub len: u32,
}

/// Modification time with nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default)]
pub struct Mtime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Mtime {
    /// A file's modification time, with nanoseconds.
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Mtime { secs: m.mtime(), nanos: m.mtime_nsec().clamp(0, 999_999_999) as u32 }
    }
}

/// What tells a file unchanged since it was indexed: size, mtime to the nanosecond
/// and inode (a file replaced by a rename has a new inode whatever its size and
/// mtime). The one rule the scanner (skip it), the assembler (never replace a file
/// whose stamp moved) and the chunk reader (trust its bytes unhashed) share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Mtime,
    /// Inode number.
    pub ino: u64,
}

impl FileStamp {
    /// The stamp of a file on disk.
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self { size: m.len(), mtime: Mtime::of(m), ino: m.ino() }
    }
}

/// What kind of thing a path is.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with a relative target that stays inside the share.
    Symlink {
        /// The link target as written in the link.
        target: String,
    },
}

/// One path's state in one node's index: the unit that travels in index updates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Entry {
    /// Path relative to the share root.
    pub path: RelPath,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Size in bytes (files only).
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Mtime,
    /// Causal version.
    pub version: VersionVector,
    /// The node that made this version (conflict tie-break, conflict-copy names).
    pub modified_by: ShortId,
    /// A tombstone: the path was deleted in this version.
    pub deleted: bool,
    /// Content, in order (files only).
    pub blocks: Vec<Block>,
}

impl Entry {
    /// True when two entries describe the same content (ignoring version and mtime).
    pub fn same_content(&self, other: &Entry) -> bool {
        self.deleted == other.deleted
            && (self.deleted || (self.kind == other.kind && self.size == other.size && self.blocks == other.blocks))
    }

    /// True when content, mode and mtime match: nothing to do on disk.
    pub fn same_on_disk(&self, other: &Entry) -> bool {
        self.same_content(other) && (self.deleted || (self.mode == other.mode && self.mtime == other.mtime))
    }

    /// The id of this content, shared by every node holding the same version.
    pub fn content_id(&self) -> ContentId {
        ContentId::of(self.size, self.blocks.iter().map(|b| (b.hash, b.len)))
    }

    /// Byte offset of each block.
    pub fn block_offsets(&self) -> impl Iterator<Item = (u64, &Block)> {
        let mut off = 0u64;
        self.blocks.iter().map(move |b| {
            let o = off;
            off += b.len as u64;
            (o, b)
        })
    }

    /// Checks internal consistency of an entry received from a peer.
    pub fn validate(&self) -> Result<(), EntryError> {
        if !self.version.is_canonical() {
            return Err(EntryError::BadVersion);
        }
        if self.mtime.nanos >= 1_000_000_000 {
            return Err(EntryError::BadMtime);
        }
        if self.deleted {
            return Ok(());
        }
        if self.kind != EntryKind::File && (self.size != 0 || !self.blocks.is_empty()) {
            return Err(EntryError::NotAFile);
        }
        if self.blocks.iter().any(|b| b.len > MAX_CHUNK) {
            return Err(EntryError::BlockTooLarge);
        }
        match &self.kind {
            EntryKind::File => {
                let sum: u64 = self.blocks.iter().map(|b| b.len as u64).sum();
                if sum != self.size {
                    return Err(EntryError::SizeMismatch { sum, size: self.size });
                }
                if self.blocks.iter().any(|b| b.len == 0) {
                    return Err(EntryError::EmptyBlock);
                }
            }
            EntryKind::Dir => {}
            EntryKind::Symlink { target } => {
                if !symlink_stays_inside(&self.path, target) {
                    return Err(EntryError::SymlinkEscapes(target.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Why an entry from a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// The version vector is unsorted, has duplicates, zero or oversized counters.
    #[error("version vector is not sorted, unique and non-zero, or has a counter past the limit")]
    BadVersion,
    /// Nanoseconds of a second past a second.
    #[error("mtime nanoseconds out of range")]
    BadMtime,
    /// A directory or symlink with a size or blocks.
    #[error("only files have a size and blocks")]
    NotAFile,
    /// A block over [`MAX_CHUNK`].
    #[error("block larger than the chunk limit")]
    BlockTooLarge,
    /// The blocks do not add up to the size.
    #[error("blocks add up to {sum} bytes, size says {size}")]
    SizeMismatch {
        /// What the blocks add up to.
        sum: u64,
        /// The size the entry claims.
        size: u64,
    },
    /// A block of length 0.
    #[error("empty block")]
    EmptyBlock,
    /// A symlink whose target leaves the share.
    #[error("symlink target {0:?} leaves the share")]
    SymlinkEscapes(String),
}

/// Picks the winner of two versions of one path, the same way on every node.
///
/// A version that includes the other wins. Concurrent versions: a change beats a
/// delete (no write is lost), then the later mtime, then the larger node id.
pub fn pick_winner<'a>(a: &'a Entry, b: &'a Entry) -> &'a Entry {
    match a.version.compare(&b.version) {
        VvOrder::Greater | VvOrder::Equal => a,
        VvOrder::Less => b,
        VvOrder::Concurrent => {
            if a.deleted != b.deleted {
                return if a.deleted { b } else { a };
            }
            match a.mtime.cmp(&b.mtime) {
                std::cmp::Ordering::Greater => a,
                std::cmp::Ordering::Less => b,
                std::cmp::Ordering::Equal => {
                    if a.modified_by >= b.modified_by {
                        a
                    } else {
                        b
                    }
                }
            }
        }
    }
}

/// The name a losing version is kept under: `name.sync-conflict-YYYYMMDD-HHMMSS-<node>.ext`.
pub fn conflict_name(loser: &Entry) -> Result<RelPath, PathError> {
    let name = loser.path.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let stamp = time::OffsetDateTime::from_unix_timestamp(loser.mtime.secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = stamp.format(&fmt).unwrap_or_else(|_| "00000000-000000".into());
    loser.path.with_file_name(&format!("{stem}.sync-conflict-{stamp}-{}{ext}", loser.modified_by))
}

/// A one-block file entry at `path`, at version `counter` of node 9 (for tests).
#[cfg(test)]
pub(crate) fn sample_file(path: &str, counter: u64) -> Entry {
    Entry {
        path: RelPath::parse(path).unwrap(),
        kind: EntryKind::File,
        size: 1,
        mode: 0o644,
        mtime: Mtime { secs: 1, nanos: 0 },
        version: VersionVector::from_pairs([(crate::ids::ShortId(9), counter)]),
        modified_by: crate::ids::ShortId(9),
        deleted: false,
        blocks: vec![Block { hash: ChunkHash::of(b"x"), len: 1 }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(node: u64, counter: u64, secs: i64) -> Entry {
        Entry {
            path: RelPath::parse("dir/report.txt").unwrap(),
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            mtime: Mtime { secs, nanos: 0 },
            version: VersionVector::from_pairs([(ShortId(node), counter)]),
            modified_by: ShortId(node),
            deleted: false,
            blocks: vec![],
        }
    }

    #[test]
    fn winner_is_symmetric() {
        let a = e(1, 1, 100);
        let b = e(2, 1, 200);
        assert_eq!(pick_winner(&a, &b), &b);
        assert_eq!(pick_winner(&b, &a), &b);
        let c = e(3, 1, 100);
        assert_eq!(pick_winner(&a, &c), &c);
        assert_eq!(pick_winner(&c, &a), &c);
        let mut d = e(9, 1, 900);
        d.deleted = true;
        assert_eq!(pick_winner(&a, &d), &a);
        assert_eq!(pick_winner(&d, &a), &a);
    }

    #[test]
    fn conflict_names() {
        let a = e(0x0102030405060708, 1, 1_700_000_000);
        let n = conflict_name(&a).unwrap();
        assert!(n.as_str().starts_with("dir/report.sync-conflict-20231114-221320-"), "{n}");
        assert!(n.as_str().ends_with(".txt"));
        let mut b = a.clone();
        b.path = RelPath::parse(".bashrc").unwrap();
        assert!(conflict_name(&b).unwrap().as_str().starts_with(".bashrc.sync-conflict-"));
    }
}
