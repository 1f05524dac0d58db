//! Recording many local changes at once (a batch of small files applied from
//! peers): one lock, one sequence read and one transaction, instead of five or
//! six separate writes per file.

use super::{chunk_key, codec, ChunkLocation, Entry, FileStamp, IndexError, LocalRecord, ShareIndex};
use sled::Transactional;
use std::collections::HashSet;

impl ShareIndex {
    /// Records changes as [`ShareIndex::put`] would one after another, in order,
    /// under consecutive sequence numbers; each comes with its file's inode.
    /// Returns the last sequence number (the current one if `changes` is empty).
    pub fn put_many(&self, changes: Vec<(Entry, u64)>, local_change: bool) -> Result<u64, IndexError> {
        // A path named twice: the second must see the first, which one batch per
        // tree cannot show it.
        let mut paths = HashSet::with_capacity(changes.len());
        if !changes.iter().all(|(e, _)| paths.insert(e.path.clone())) {
            let mut last = self.max_seq()?;
            for (entry, ino) in changes {
                last = self.put(entry, ino, local_change)?;
            }
            return Ok(last);
        }
        let _guard = self.inner.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut seq = self.max_seq()?;
        let (mut chunks, mut local, mut by_seq, mut dates) =
            (sled::Batch::default(), sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        for (entry, ino) in changes {
            seq += 1;
            if let Some(old) = self.get(&entry.path)? {
                by_seq.remove(&old.seq.to_be_bytes());
                if old.entry.blocks != entry.blocks || entry.deleted {
                    for b in &old.entry.blocks {
                        chunks.remove(chunk_key(&b.hash, &old.entry.path));
                    }
                }
            }
            if !entry.deleted {
                let file = Some(FileStamp { size: entry.size, mtime: entry.mtime, ino });
                for (off, b) in entry.block_offsets() {
                    let loc = ChunkLocation { path: entry.path.clone(), offset: off, file };
                    chunks.insert(chunk_key(&b.hash, &entry.path), loc.value());
                }
            }
            // As `tombstones::note_put`: a delete is dated, anything else is not one.
            if entry.deleted {
                dates.insert(entry.path.as_str(), &super::tombstones::unix_now().to_be_bytes());
            } else {
                dates.remove(entry.path.as_str());
            }
            let path = entry.path.clone();
            let rec = LocalRecord { entry, seq, ino, local_change };
            local.insert(path.as_str(), codec::encode(&rec)?);
            by_seq.insert(&seq.to_be_bytes(), path.as_str());
        }
        // One transaction: recovered whole or not at all. Written tree by tree, a
        // crash left records without their sequence keys (never sent to peers:
        // found by the small-file fault test, 256 files a peer never heard of), or
        // above the recorded newest sequence, whose numbers were then handed out
        // again.
        let t = &self.inner;
        let committed: sled::transaction::TransactionResult<(), ()> =
            (&t.meta, &t.chunks, &t.local, &t.by_seq, &t.deleted_at).transaction(|(meta, c, l, b, d)| {
                meta.insert("max_seq", &seq.to_be_bytes())?;
                c.apply_batch(&chunks)?;
                l.apply_batch(&local)?;
                b.apply_batch(&by_seq)?;
                d.apply_batch(&dates)?;
                Ok(())
            });
        committed.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => IndexError::Db(e),
            sled::transaction::TransactionError::Abort(()) => IndexError::Task("index transaction aborted".into()),
        })?;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Block, Index, Mtime, VersionVector};
    use super::*;
    use crate::ids::{ChunkHash, ShortId};
    use crate::index::EntryKind;
    use crate::relpath::RelPath;

    fn entry(path: &str, body: &[u8], secs: i64) -> Entry {
        Entry {
            path: RelPath::parse(path).unwrap(),
            kind: EntryKind::File,
            size: body.len() as u64,
            mode: 0o644,
            mtime: Mtime { secs, nanos: 0 },
            version: VersionVector::new().bump(ShortId(1)).unwrap(),
            modified_by: ShortId(1),
            deleted: false,
            blocks: vec![Block { hash: ChunkHash::of(body), len: body.len() as u32 }],
        }
    }

    /// Everything a reader can see of a share index: the newest sequence, the
    /// records in sequence order, and where each of `hashes` lies (path, inode).
    type State = (u64, Vec<LocalRecord>, Vec<Vec<(String, u64)>>);

    fn state(s: &ShareIndex, hashes: &[&[u8]]) -> State {
        let locs = hashes
            .iter()
            .map(|h| {
                let mut l: Vec<_> = s
                    .chunk_locations(&ChunkHash::of(h))
                    .unwrap()
                    .into_iter()
                    .map(|l| (l.path.as_str().to_string(), l.file.map_or(0, |f| f.ino)))
                    .collect();
                l.sort();
                l
            })
            .collect();
        (s.max_seq().unwrap(), s.since(0, u64::MAX, usize::MAX).unwrap(), locs)
    }

    #[test]
    fn many_at_once_is_the_same_as_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let (one, many) = (idx.share("one").unwrap(), idx.share("many").unwrap());
        for s in [&one, &many] {
            s.put(entry("a", b"old", 1), 1, false).unwrap();
            s.put(entry("b", b"bee", 1), 2, false).unwrap();
        }
        // "a" gets new content, "b" only a new mtime, "c" is new.
        let changes = vec![(entry("a", b"new", 2), 11), (entry("b", b"bee", 2), 12), (entry("c", b"new", 2), 13)];
        let mut last = 0;
        for (e, ino) in changes.clone() {
            last = one.put(e, ino, false).unwrap();
        }
        assert_eq!(many.put_many(changes, false).unwrap(), last);
        let hashes: [&[u8]; 3] = [b"old", b"new", b"bee"];
        assert_eq!(state(&one, &hashes), state(&many, &hashes));
        assert_eq!(state(&many, &hashes).1.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        // A path twice takes the later version, as two puts would.
        let twice = vec![(entry("d", b"1", 3), 21), (entry("d", b"2", 4), 22)];
        for (e, ino) in twice.clone() {
            one.put(e, ino, false).unwrap();
        }
        many.put_many(twice, false).unwrap();
        let hashes: [&[u8]; 2] = [b"1", b"2"];
        assert_eq!(state(&one, &hashes), state(&many, &hashes));
        assert_eq!(many.put_many(Vec::new(), false).unwrap(), many.max_seq().unwrap());
    }
}
