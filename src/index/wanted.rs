//! Peers' entries to ask for whole: a delta (protocol minor 5) names the content
//! its runs refer to, and this node may have moved past it before the delta came.
//! Such a path is noted here in the same step that stores the batch, so the ask
//! survives a restart, and is cleared by the entry whenever it comes.

use super::{codec, remote_key, Entry, IndexError, ShareIndex};
use crate::ids::NodeId;
use crate::relpath::RelPath;

impl ShareIndex {
    /// Notes `wanted` as paths to ask `peer` for, and clears those whose entry came.
    pub(super) fn want<'a>(
        &self,
        peer: &NodeId,
        wanted: &[RelPath],
        came: impl Iterator<Item = &'a RelPath>,
    ) -> Result<(), IndexError> {
        // Every batch of an exchange passes here: nothing to write unless an ask
        // is noted or pending (the tree is nearly always empty).
        if wanted.is_empty() && self.inner.wanted.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for path in came {
            batch.remove(remote_key(path, peer));
        }
        for path in wanted {
            batch.insert(remote_key(path, peer), &[]);
        }
        self.inner.wanted.apply_batch(batch)?;
        Ok(())
    }

    /// Up to `limit` paths whose entries are to be asked of `peer` whole.
    pub fn wanted(&self, peer: &NodeId, limit: usize) -> Result<Vec<RelPath>, IndexError> {
        let mut out = Vec::new();
        for k in self.inner.wanted.iter().keys() {
            if out.len() >= limit {
                break;
            }
            let k = k?;
            if let Some(path) = path_of(&k, peer) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Stores what `peer` answered to an ask for whole entries under its index
    /// `index_id`: an entry older than the one stored meanwhile is not stored (the
    /// stream may have brought a newer one since the answer was made). Every
    /// answered path is no longer wanted. Returns the paths whose entry changed, or
    /// `None` if the answer is of another index of the peer than the one held.
    pub fn apply_remote_reply(
        &self,
        peer: &NodeId,
        index_id: u64,
        entries: &[Entry],
        absent: &[RelPath],
    ) -> Result<Option<Vec<RelPath>>, IndexError> {
        if self.remote_state(peer)?.is_none_or(|(id, _)| id != index_id) {
            return Ok(None);
        }
        let mut changed = Vec::new();
        self.changing_remote(|| {
            let mut batch = sled::Batch::default();
            for e in entries {
                let stored = self.remote_entry(&e.path, peer)?;
                if stored.is_none_or(|s| !s.version.dominates_or_equals(&e.version)) {
                    batch.insert(remote_key(&e.path, peer), codec::encode(e)?);
                    changed.push(e.path.clone());
                }
            }
            self.inner.remote.apply_batch(batch)?;
            self.want(peer, &[], entries.iter().map(|e| &e.path).chain(absent))
        })?;
        Ok(Some(changed))
    }

    /// Forgets every path wanted of `peer` (its index is dropped).
    pub(super) fn unwant_all(&self, peer: &NodeId) -> Result<(), IndexError> {
        for k in self.inner.wanted.iter().keys() {
            let k = k?;
            if k.len() > 33 && k[k.len() - 32..] == peer.0 {
                self.inner.wanted.remove(k)?;
            }
        }
        Ok(())
    }
}

/// The path of a wanted key if it is `peer`'s.
fn path_of(key: &[u8], peer: &NodeId) -> Option<RelPath> {
    let split = key.len().checked_sub(33)?;
    if key[split] != 0 || key[split + 1..] != peer.0 {
        return None;
    }
    RelPath::parse(std::str::from_utf8(&key[..split]).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::super::{sample_file as entry, Index, RemoteBatch};
    use super::*;

    #[test]
    fn a_wanted_path_stays_until_its_entry_comes_whole_and_an_older_answer_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = Index::open(dir.path()).unwrap();
        let s = db.share("s").unwrap();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let (f, g) = (RelPath::parse("d/f").unwrap(), RelPath::parse("g").unwrap());
        let batch = RemoteBatch { entries: &[entry("x", 1)], same: &[], wanted: &[f.clone(), g.clone()] };
        s.apply_remote_batch(&a, 7, &batch, 3).unwrap();
        s.apply_remote_batch(&b, 8, &RemoteBatch { wanted: std::slice::from_ref(&g), ..Default::default() }, 1)
            .unwrap();
        assert_eq!(s.wanted(&a, 10).unwrap(), vec![f.clone(), g.clone()]);
        assert_eq!(s.wanted(&a, 1).unwrap().len(), 1);
        // Still wanted after a reopen: the ask survives a restart.
        drop(s);
        let s = db.share("s").unwrap();
        assert_eq!(s.wanted(&a, 10).unwrap(), vec![f.clone(), g.clone()]);
        // g's entry came in a later batch of the stream: no longer wanted.
        s.apply_remote_batch(&a, 7, &RemoteBatch { entries: &[entry("g", 5)], ..Default::default() }, 4).unwrap();
        assert_eq!(s.wanted(&a, 10).unwrap(), vec![f.clone()]);
        // An answer under another index id is not taken.
        assert_eq!(s.apply_remote_reply(&a, 99, &[entry("d/f", 2)], &[]).unwrap(), None);
        assert_eq!(s.wanted(&a, 10).unwrap(), vec![f.clone()]);
        // The answer for g is older than what the stream brought: not stored.
        let changed = s.apply_remote_reply(&a, 7, &[entry("d/f", 2), entry("g", 4)], &[]).unwrap();
        assert_eq!(changed, Some(vec![f.clone()]));
        assert_eq!(s.remote_entry(&g, &a).unwrap().unwrap().version, entry("g", 5).version);
        assert_eq!(s.remote_entry(&f, &a).unwrap(), Some(entry("d/f", 2)));
        assert!(s.wanted(&a, 10).unwrap().is_empty());
        // Another peer's asks are its own, and go with its index.
        assert_eq!(s.wanted(&b, 10).unwrap(), vec![g.clone()]);
        s.apply_remote_reply(&b, 8, &[], std::slice::from_ref(&g)).unwrap();
        assert!(s.wanted(&b, 10).unwrap().is_empty(), "absent: answered");
        s.apply_remote_batch(&b, 8, &RemoteBatch { wanted: std::slice::from_ref(&g), ..Default::default() }, 2)
            .unwrap();
        s.forget_peer(&b).unwrap();
        assert!(s.wanted(&b, 10).unwrap().is_empty());
    }
}
