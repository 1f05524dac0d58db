//! What the index knows of one path: the entry type shared by index, planner and wire.

use super::vv::{ShortId, VersionVector, VvOrder};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// One chunk of a file: its hash and length; its offset is the sum of the ones before.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct Block {
    /// blake3 of the chunk.
    pub hash: ChunkHash,
    /// Length in bytes.
    pub len: u32,
}

/// A path relative to a share root: `/`-separated, never empty, absolute or `..`.
///
/// The only way to build one is [`RelPath::parse`], so holding one means it was checked.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

/// Why a path from a peer (or the disk) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Empty string.
    #[error("empty path")]
    Empty,
    /// Starts with `/`.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// Has a `..`, `.` or empty component.
    #[error("path {0:?} has a `..`, `.` or empty component")]
    BadComponent(String),
    /// Has a NUL or backslash.
    #[error("path {0:?} has a NUL or backslash")]
    BadChar(String),
    /// Lies under the share's private `.meshsync/` folder.
    #[error("path {0:?} is inside the private .meshsync folder")]
    Private(String),
}

/// Name of the per-share private folder (temp files, never replicated).
pub const PRIVATE_DIR: &str = ".meshsync";

impl RelPath {
    /// Checks and wraps a relative path.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_string()));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(PathError::BadChar(s.to_string()));
        }
        for c in s.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(PathError::BadComponent(s.to_string()));
            }
        }
        if s == PRIVATE_DIR || s.starts_with(".meshsync/") {
            return Err(PathError::Private(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, if this is not at the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map(|(_, n)| n).unwrap_or(&self.0)
    }

    /// Number of components (used to order directory creation and removal).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// A sibling path with another final component.
    pub fn with_file_name(&self, name: &str) -> Result<RelPath, PathError> {
        match self.parent() {
            Some(p) => RelPath::parse(&format!("{}/{}", p.0, name)),
            None => RelPath::parse(name),
        }
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        RelPath::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Modification time with nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default)]
pub struct Mtime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
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
        let mut h = blake3::Hasher::new();
        h.update(&self.size.to_le_bytes());
        for b in &self.blocks {
            h.update(&b.hash.0);
            h.update(&b.len.to_le_bytes());
        }
        ContentId(*h.finalize().as_bytes())
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
    pub fn validate(&self) -> Result<(), String> {
        if !self.version.is_canonical() {
            return Err("version vector is not sorted, unique and non-zero".into());
        }
        if self.mtime.nanos >= 1_000_000_000 {
            return Err("mtime nanoseconds out of range".into());
        }
        if self.deleted {
            return Ok(());
        }
        if self.kind != EntryKind::File && (self.size != 0 || !self.blocks.is_empty()) {
            return Err("only files have a size and blocks".into());
        }
        if self.blocks.iter().any(|b| b.len > crate::proto::MAX_CHUNK) {
            return Err("block larger than the chunk limit".into());
        }
        match &self.kind {
            EntryKind::File => {
                let sum: u64 = self.blocks.iter().map(|b| b.len as u64).sum();
                if sum != self.size {
                    return Err(format!("blocks add up to {sum} bytes, size says {}", self.size));
                }
                if self.blocks.iter().any(|b| b.len == 0) {
                    return Err("empty block".into());
                }
            }
            EntryKind::Dir => {}
            EntryKind::Symlink { target } => {
                if !symlink_stays_inside(&self.path, target) {
                    return Err(format!("symlink target {target:?} leaves the share"));
                }
            }
        }
        Ok(())
    }
}

/// True when a relative symlink at `link` pointing to `target` resolves inside the share.
pub fn symlink_stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    // Depth of the directory holding the link, then walk the target lexically.
    // `..` is allowed only as a leading run: after a name, the name could be a
    // symlink and `..` would then climb from wherever that link points.
    let mut depth = link.depth() as i64 - 1;
    let mut descended = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if descended => return false,
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {
                descended = true;
                depth += 1;
            }
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relpath_refusals() {
        assert!(RelPath::parse("a/b c/ü.txt").is_ok());
        assert_eq!(RelPath::parse(""), Err(PathError::Empty));
        assert!(matches!(RelPath::parse("/etc/passwd"), Err(PathError::Absolute(_))));
        assert!(matches!(RelPath::parse("a/../../x"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse(".."), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a//b"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a/./b"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a\\..\\b"), Err(PathError::BadChar(_))));
        assert!(matches!(RelPath::parse(".meshsync/tmp"), Err(PathError::Private(_))));
        assert!(RelPath::parse(".meshsyncx").is_ok());
    }

    #[test]
    fn relpath_deserialize_refuses_escape() {
        let bad: Result<RelPath, _> = serde_json::from_str("\"../x\"");
        assert!(bad.is_err());
    }

    #[test]
    fn symlink_escape_rules() {
        let l = RelPath::parse("a/b/link").unwrap();
        assert!(symlink_stays_inside(&l, "target"));
        assert!(symlink_stays_inside(&l, "../../x"));
        assert!(!symlink_stays_inside(&l, "../../../x"));
        assert!(!symlink_stays_inside(&l, "/etc"));
        let top = RelPath::parse("link").unwrap();
        assert!(!symlink_stays_inside(&top, ".."));
        assert!(!symlink_stays_inside(&top, "d/../f"), "`..` after a name may climb through a link");
        assert!(!symlink_stays_inside(&l, "s/../../../x"));
    }

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
