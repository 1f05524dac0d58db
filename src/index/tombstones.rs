//! What purging tombstones needs stored: when each path was recorded deleted here,
//! when each peer was last heard from about the share, the purge itself, and the
//! re-check of a member back from a long absence (`sync::tombstones` decides).

use super::{codec, remote_key, u64_at, Entry, IndexError, LocalRecord, ShareIndex, ShareTrees};
use crate::ids::NodeId;

/// A member of a share as this node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Who.
    pub id: NodeId,
    /// When it was last heard from about the share (Unix seconds).
    pub last_heard: u64,
    /// This node holds its index of the share (not dropped to be read again whole).
    pub index_held: bool,
}

/// Key in the meta tree: set while this node, back after longer than the purge
/// horizon, re-reads its peers' whole indexes.
const RECHECK: &str = "recheck";

/// Keeps `deleted_at` in step with a record being written: a tombstone is dated
/// now (again, if its version changed), anything else has no date.
pub(super) fn note_put(t: &ShareTrees, entry: &Entry) -> Result<(), IndexError> {
    if entry.deleted {
        t.deleted_at.insert(entry.path.as_str(), &unix_now().to_be_bytes())?;
    } else {
        t.deleted_at.remove(entry.path.as_str())?;
    }
    Ok(())
}

/// Seconds since the Unix epoch now (0 for a clock before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ShareIndex {
    /// This node's tombstones, each with when it was recorded. One from before
    /// dates were kept is dated `now`: it is forgotten no sooner than a new one.
    pub fn tombstones(&self, now: u64) -> Result<Vec<(LocalRecord, u64)>, IndexError> {
        let mut out = Vec::new();
        for v in self.inner.local.iter().values() {
            let rec: LocalRecord = codec::decode(&v?)?;
            if !rec.entry.deleted {
                continue;
            }
            let key = rec.entry.path.as_str().to_string();
            let at = match self.inner.deleted_at.get(&key)? {
                Some(v) => u64_at(&v),
                None => {
                    self.inner.deleted_at.insert(key, &now.to_be_bytes())?;
                    now
                }
            };
            out.push((rec, at));
        }
        Ok(out)
    }

    /// Notes that `peer` was heard from about this share at `now`.
    pub fn note_contact(&self, peer: &NodeId, now: u64) -> Result<(), IndexError> {
        self.inner.contact.insert(peer.0, &now.to_be_bytes())?;
        Ok(())
    }

    /// The share's members as this node knows them: every peer it heard from or
    /// holds an index of (one without a date is dated `now`), with when it was
    /// last heard from and whether this node holds its index.
    pub fn members(&self, now: u64) -> Result<Vec<Member>, IndexError> {
        for k in self.inner.remote_state.iter().keys() {
            let k = k?;
            if self.inner.contact.get(&k)?.is_none() {
                self.inner.contact.insert(k, &now.to_be_bytes())?;
            }
        }
        let mut out = Vec::new();
        for kv in self.inner.contact.iter() {
            let (k, v) = kv?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                let index_held = self.inner.remote_state.contains_key(&k)?;
                out.push(Member { id: NodeId(id), last_heard: u64_at(&v), index_held });
            }
        }
        Ok(out)
    }

    /// When any peer of the share was last heard from; `None` if none ever was.
    pub fn last_contact(&self) -> Result<Option<u64>, IndexError> {
        let mut last = None;
        for v in self.inner.contact.iter().values() {
            last = last.max(Some(u64_at(&v?)));
        }
        Ok(last)
    }

    /// Forgets the tombstone `tomb` (if the record is still exactly it) and the
    /// peers' entries of its path that `with_it` picks; true if it was forgotten.
    pub fn purge(&self, tomb: &Entry, with_it: impl Fn(&Entry) -> bool) -> Result<bool, IndexError> {
        let _guard = self.inner.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = self.get(&tomb.path)? else { return Ok(false) };
        if !rec.entry.deleted || rec.entry.version != tomb.version || rec.local_change {
            return Ok(false);
        }
        self.changing_remote(|| {
            for (peer, e) in self.remote_for(&tomb.path)? {
                if with_it(&e) {
                    self.inner.remote.remove(remote_key(&tomb.path, &peer))?;
                }
            }
            Ok(())
        })?;
        self.inner.by_seq.remove(rec.seq.to_be_bytes())?;
        self.inner.deleted_at.remove(tomb.path.as_str())?;
        self.inner.local.remove(tomb.path.as_str())?;
        Ok(true)
    }

    /// True while this node re-reads its peers' whole indexes after a long absence.
    pub fn recheck_pending(&self) -> Result<bool, IndexError> {
        Ok(self.inner.meta.get(RECHECK)?.is_some())
    }

    /// Starts the re-check of a member back after longer than the purge horizon
    /// (the caller asks each peer for its whole index again, dropping what it held
    /// of it first: a path the mesh forgot is then missing from every peer). Kept
    /// across restarts until [`ShareIndex::end_recheck`].
    pub fn begin_recheck(&self) -> Result<(), IndexError> {
        self.inner.meta.insert(RECHECK, &[])?;
        self.inner.meta.flush()?;
        Ok(())
    }

    /// Ends the re-check.
    pub fn end_recheck(&self) -> Result<(), IndexError> {
        self.inner.meta.remove(RECHECK)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Index, Mtime, VersionVector};
    use super::*;
    use crate::ids::ShortId;
    use crate::index::EntryKind;
    use crate::relpath::RelPath;

    fn entry(v: u64, deleted: bool) -> Entry {
        Entry {
            path: RelPath::parse("f").unwrap(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime: Mtime::default(),
            version: VersionVector::from_pairs([(ShortId(1), v)]),
            modified_by: ShortId(1),
            deleted,
            blocks: vec![],
        }
    }

    #[test]
    fn a_purge_forgets_the_tombstone_its_date_and_the_entries_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let s = Index::open(dir.path()).unwrap().share("s").unwrap();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        s.put(entry(1, false), 1, false).unwrap();
        assert!(s.tombstones(5).unwrap().is_empty());
        s.put(entry(2, true), 0, false).unwrap();
        let tombs = s.tombstones(5).unwrap();
        assert_eq!(tombs.len(), 1);
        assert!(tombs[0].1 > 1_600_000_000, "dated when recorded, not when asked");
        s.apply_remote(&a, 7, &[entry(2, true)], 3).unwrap();
        s.apply_remote(&b, 8, &[entry(1, false)], 4).unwrap();
        assert!(!s.purge(&entry(1, true), |_| true).unwrap(), "only the very tombstone recorded");
        let gen = s.remote_generation();
        assert!(s.purge(&entry(2, true), |e| e.version.get(ShortId(1)) == 1).unwrap());
        assert!(s.get(&entry(2, true).path).unwrap().is_none(), "the record is gone");
        assert!(s.since(0, u64::MAX, 10).unwrap().is_empty(), "and its sequence");
        assert_eq!(s.remote_for(&entry(2, true).path).unwrap(), vec![(a, entry(2, true))], "b's stale entry went");
        assert!(s.remote_generation() > gen, "status and downloads see the change");
        assert!(s.tombstones(5).unwrap().is_empty());
        // Members: peers heard from, and peers whose index is held, dated now if new.
        s.note_contact(&a, 100).unwrap();
        s.forget_peer(&a).unwrap();
        let mut m = s.members(500).unwrap();
        m.sort_by_key(|m| m.id);
        let held = |id, last_heard, index_held| Member { id, last_heard, index_held };
        assert_eq!(m, vec![held(a, 100, false), held(b, 500, true)]);
        assert_eq!(s.last_contact().unwrap(), Some(500));
    }

    #[test]
    fn a_recheck_survives_a_restart_and_keeps_when_peers_were_heard_from() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeId([1; 32]);
        {
            let s = Index::open(dir.path()).unwrap().share("s").unwrap();
            s.note_contact(&a, 100).unwrap();
            assert!(!s.recheck_pending().unwrap());
            s.begin_recheck().unwrap();
            s.forget_peer(&a).unwrap();
            assert_eq!(s.last_contact().unwrap(), Some(100), "forgetting a peer's index keeps when it was heard from");
        }
        let s = Index::open(dir.path()).unwrap().share("s").unwrap();
        assert!(s.recheck_pending().unwrap(), "kept across a restart");
        s.end_recheck().unwrap();
        assert!(!s.recheck_pending().unwrap());
    }
}
