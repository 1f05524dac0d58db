//! Forgetting: a share this node no longer takes part in (`meshsync share remove`),
//! and a member that left the mesh (`meshsync leave` on it, `peers forget` here).

use super::{codec, u64_at, Index, IndexError, LocalRecord, ShareIndex, VersionVector};
use crate::ids::ShortId;

/// Tree: share name -> the highest version counter the share's trees held when it
/// was last removed.
const FLOORS: &str = "share_floors";
/// Tree: ids of members that left the mesh; never learned again.
const LEFT: &str = "peers_left";
/// Key of a share's counter floor in its meta tree.
const FLOOR_KEY: &str = "counter_floor";

impl Index {
    /// Forgets a share: drops its trees. Added again, it starts afresh (a new index
    /// id, so peers send everything again), and the versions this node gives its
    /// files start above every counter the share held: a file changed while the
    /// share was away must not get a version a peer already holds for other content
    /// (the peer's content would then win without a conflict copy).
    pub fn forget_share(&self, name: &str) -> Result<(), IndexError> {
        let share = self.share(name)?;
        let floor = share.highest_counter()?;
        drop(share);
        self.db.open_tree(FLOORS)?.insert(name, &floor.to_be_bytes())?;
        self.drop_share(name)
    }

    /// Gives a share's fresh trees the counter floor of its removed predecessor.
    pub(super) fn carry_counter_floor(&self, name: &str, share: &ShareIndex) -> Result<(), IndexError> {
        if let Some(v) = self.db.open_tree(FLOORS)?.get(name)? {
            share.inner.meta.insert(FLOOR_KEY, v)?;
        }
        Ok(())
    }

    /// Forgets a member that left the mesh: it is no longer a known peer, and no
    /// other member's gossip makes it one again.
    pub fn forget_member(&self, id: &[u8; 32]) -> Result<(), IndexError> {
        self.forget_known_peer(id)?;
        self.db.open_tree(LEFT)?.insert(id, &[])?;
        Ok(())
    }

    /// True if the member left the mesh (see [`Index::forget_member`]).
    pub fn has_left(&self, id: &[u8; 32]) -> Result<bool, IndexError> {
        Ok(self.db.open_tree(LEFT)?.contains_key(id)?)
    }
}

impl ShareIndex {
    /// The version a path this node holds no record of starts from (it is bumped
    /// before use): empty, or this node at the counter floor of a share removed and
    /// added again (see [`Index::forget_share`]).
    pub fn new_path_base(&self, me: ShortId) -> Result<VersionVector, IndexError> {
        let floor = self.inner.meta.get(FLOOR_KEY)?.map(|v| u64_at(&v)).unwrap_or(0);
        Ok(VersionVector::from_pairs([(me, floor)]))
    }

    /// The highest counter in any of this node's records, or the floor carried in.
    fn highest_counter(&self) -> Result<u64, IndexError> {
        let mut high = self.inner.meta.get(FLOOR_KEY)?.map(|v| u64_at(&v)).unwrap_or(0);
        for v in self.inner.local.iter().values() {
            let rec: LocalRecord = codec::decode(&v?)?;
            high = high.max(rec.entry.version.pairs().iter().map(|(_, c)| *c).max().unwrap_or(0));
        }
        Ok(high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Entry, EntryKind, Mtime};
    use crate::relpath::RelPath;

    fn entry(path: &str, version: VersionVector) -> Entry {
        Entry {
            path: RelPath::parse(path).unwrap(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime: Mtime::default(),
            version,
            modified_by: ShortId(1),
            deleted: false,
            blocks: vec![],
        }
    }

    #[test]
    fn a_share_added_again_starts_afresh_above_its_old_counters() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let me = ShortId(1);
        let s = idx.share("www").unwrap();
        assert!(s.new_path_base(me).unwrap().is_empty(), "a new share starts from nothing");
        s.put(entry("a", VersionVector::from_pairs([(me, 3), (ShortId(2), 7)])), 1, false).unwrap();
        s.put(entry("b", VersionVector::from_pairs([(me, 5)])), 2, false).unwrap();
        let old_id = s.index_id().unwrap();
        drop(s);
        idx.forget_share("www").unwrap();
        let again = idx.share("www").unwrap();
        assert_ne!(again.index_id().unwrap(), old_id, "peers must send everything again");
        assert!(again.all().unwrap().is_empty(), "nothing of the old index is left");
        let base = again.new_path_base(me).unwrap();
        assert_eq!(base.bump(me).unwrap(), VersionVector::from_pairs([(me, 8)]), "above every old counter");
        drop(again);
        // Removed again before anything was scanned: the floor is kept, not lost.
        idx.forget_share("www").unwrap();
        assert_eq!(idx.share("www").unwrap().new_path_base(me).unwrap().get(me), 7);
        assert!(idx.share("other").unwrap().new_path_base(me).unwrap().is_empty());
    }

    #[test]
    fn a_member_that_left_is_forgotten_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let p = super::super::KnownPeer { id: [4; 32], name: "web4".into(), addrs: vec![] };
        idx.put_peer_from(&p, super::super::AddrOrigin::Itself).unwrap();
        assert!(!idx.has_left(&p.id).unwrap());
        idx.forget_member(&p.id).unwrap();
        assert!(idx.peers().unwrap().is_empty());
        assert_eq!(idx.peer_origin(&p.id).unwrap(), None);
        assert!(idx.has_left(&p.id).unwrap());
    }
}
