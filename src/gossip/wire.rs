//! Conversions between the wire's types (`proto`) and the index's (`index`): the
//! only place that knows both, so either format can change without the other.

use crate::ids::ShortId;
use crate::index::{Block, Entry, EntryError, EntryKind, KnownPeer, Mtime, VersionVector};
use crate::proto::{PeerInfo, WireBlock, WireEntry, WireKind, WireMtime};

impl From<PeerInfo> for KnownPeer {
    fn from(p: PeerInfo) -> Self {
        KnownPeer { id: p.id, name: p.name, addrs: p.addrs }
    }
}

impl From<KnownPeer> for PeerInfo {
    fn from(p: KnownPeer) -> Self {
        PeerInfo { id: p.id, name: p.name, addrs: p.addrs }
    }
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> Self {
        WireEntry { blocks: e.blocks.iter().map(|b| WireBlock { hash: b.hash, len: b.len }).collect(), ..head(e) }
    }
}

/// `e` on the wire without its blocks (a delta's entry carries runs instead).
pub fn head(e: &Entry) -> WireEntry {
    WireEntry {
        path: e.path.clone(),
        kind: match &e.kind {
            EntryKind::File => WireKind::File,
            EntryKind::Dir => WireKind::Dir,
            EntryKind::Symlink { target } => WireKind::Symlink { target: target.clone() },
        },
        size: e.size,
        mode: e.mode,
        mtime: WireMtime { secs: e.mtime.secs, nanos: e.mtime.nanos },
        version: pairs_of(&e.version),
        modified_by: e.modified_by.0,
        deleted: e.deleted,
        blocks: Vec::new(),
    }
}

impl TryFrom<WireEntry> for Entry {
    type Error = EntryError;

    /// Takes a peer's entry in, refusing one that does not hold together.
    fn try_from(mut w: WireEntry) -> Result<Self, EntryError> {
        let blocks = std::mem::take(&mut w.blocks).into_iter().map(|b| Block { hash: b.hash, len: b.len }).collect();
        entry_of(w, blocks)
    }
}

/// A version vector as the wire carries it: (short node id, counter) pairs.
pub fn pairs_of(v: &VersionVector) -> Vec<(u64, u64)> {
    v.pairs().iter().map(|(id, c)| (id.0, *c)).collect()
}

/// A version vector from the wire's pairs, if canonical.
pub fn version_of(pairs: Vec<(u64, u64)>) -> Option<VersionVector> {
    VersionVector::try_from_pairs(pairs.into_iter().map(|(id, c)| (ShortId(id), c)).collect())
}

/// A peer's entry with `blocks` (read from a delta, or its own), refused if it does
/// not hold together; `w.blocks` is not read.
pub fn entry_of(w: WireEntry, blocks: Vec<Block>) -> Result<Entry, EntryError> {
    let e = Entry {
        path: w.path,
        kind: match w.kind {
            WireKind::File => EntryKind::File,
            WireKind::Dir => EntryKind::Dir,
            WireKind::Symlink { target } => EntryKind::Symlink { target },
        },
        size: w.size,
        mode: w.mode,
        mtime: Mtime { secs: w.mtime.secs, nanos: w.mtime.nanos },
        version: version_of(w.version).ok_or(EntryError::BadVersion)?,
        modified_by: ShortId(w.modified_by),
        deleted: w.deleted,
        blocks,
    };
    e.validate()?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkHash;
    use crate::relpath::RelPath;

    fn entry() -> Entry {
        Entry {
            path: RelPath::parse("d/f").unwrap(),
            kind: EntryKind::File,
            size: 5,
            mode: 0o640,
            mtime: Mtime { secs: 7, nanos: 9 },
            version: VersionVector::from_pairs([(ShortId(3), 2), (ShortId(1), 4)]),
            modified_by: ShortId(3),
            deleted: false,
            blocks: vec![Block { hash: ChunkHash::of(b"hello"), len: 5 }],
        }
    }

    #[test]
    fn entries_cross_the_wire_unchanged_and_in_the_same_bytes() {
        let e = entry();
        let w = WireEntry::from(&e);
        assert_eq!(Entry::try_from(w.clone()).unwrap(), e);
        // The wire form encodes exactly as the index's form always did: the
        // protocol did not change when the two types were split.
        assert_eq!(crate::codec::encode(&w).unwrap(), crate::codec::encode(&e).unwrap());
    }

    #[test]
    fn refusals_are_typed() {
        let mut w = WireEntry::from(&entry());
        w.version = vec![(3, 1), (1, 1)];
        assert_eq!(Entry::try_from(w.clone()), Err(EntryError::BadVersion));
        w.version = vec![(1, u64::MAX)];
        assert_eq!(Entry::try_from(w.clone()), Err(EntryError::BadVersion), "a counter that could wrap");
        w.version = vec![(1, 1)];
        w.size = 6;
        assert_eq!(Entry::try_from(w.clone()), Err(EntryError::SizeMismatch { sum: 5, size: 6 }));
        w.size = 5;
        w.kind = WireKind::Symlink { target: "../../x".into() };
        w.blocks.clear();
        w.size = 0;
        assert_eq!(Entry::try_from(w), Err(EntryError::SymlinkEscapes("../../x".into())));
    }
}
