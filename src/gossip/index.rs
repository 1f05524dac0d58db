//! The index exchange: a node streams its changes of each share to every peer that
//! takes part ("everything since sequence N", so a reconnect sends only what
//! changed), and takes theirs in after checking every entry.

use crate::ids::NodeId;
use crate::ids::ShortId;
use crate::index::VersionVector;
use crate::index::{Entry, IndexError, LocalRecord, ShareIndex};
use crate::proto::{Control, SameVersion, WireEntry, MAX_BATCH_ENTRIES};
use crate::relpath::RelPath;
use crate::stats::Counters;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// Streams this node's changes of share `name` to `peer`, from sequence `sent` on,
/// whenever `durable` (the share's newest sequence on disk) moves. Only what is on
/// disk leaves: a sequence number a peer holds but this node lost in a crash would
/// be given again to other entries after the restart, and the peer, asking from
/// the number it holds, would never get them (found by the fault suite: kill -9
/// during heavy writes). `their_minor` is the peer's protocol minor: from 1 on, a
/// version applied from the peer goes back as a name. `their_index` is the peer's
/// index id for the share, as it announced it.
pub async fn send(
    name: String,
    index: ShareIndex,
    (peer, their_minor, their_index): (NodeId, u32, u64),
    mut durable: watch::Receiver<u64>,
    tx: mpsc::Sender<Control>,
    mut sent: u64,
) {
    let names_back = their_minor >= 1;
    loop {
        let upto_durable = *durable.borrow_and_update();
        let idx = index.clone();
        let from = sent;
        let batch = tokio::task::spawn_blocking(move || {
            let recs = idx.since(from, upto_durable, MAX_BATCH_ENTRIES)?;
            // Sequences past the last record, up to the newest on disk, were records
            // purged since (forgotten deletes): a batch that ends the index says it
            // reaches that newest, so a peer reading this index whole can tell it has
            // all of it.
            let upto = match recs.last().map(|r| r.seq) {
                Some(last) if idx.since(last, upto_durable, 1)?.is_empty() => Some(last.max(upto_durable)),
                Some(last) => Some(last),
                None => (upto_durable > from).then_some(upto_durable),
            };
            let (mut entries, mut same) = (Vec::with_capacity(recs.len()), Vec::new());
            // Looked up once per batch, not per record.
            let names_back = names_back && holds_their_index(&idx, &peer, their_index)?;
            for r in recs.iter().filter(|r| !r.local_change) {
                if names_back && is_theirs(&idx, r, &peer)? {
                    let version = r.entry.version.pairs().iter().map(|(id, c)| (id.0, *c)).collect();
                    same.push(SameVersion { path: r.entry.path.clone(), version });
                } else {
                    entries.push(WireEntry::from(&r.entry));
                }
            }
            Ok::<_, IndexError>(upto.map(|u| (u, entries, same)))
        })
        .await;
        let (upto, entries, same) = match batch {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => {
                if durable.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Err(e)) => {
                warn!(error = %e, "index read failed");
                return;
            }
            Err(_) => return,
        };
        let (share, index_id) = (name.clone(), index.index_id().unwrap_or(0));
        let msg = if names_back {
            Control::IndexBatch { share, index_id, entries, same, upto_seq: upto }
        } else {
            Control::Index { share, index_id, entries, upto_seq: upto }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
        debug!(upto, "index batch sent");
        sent = upto;
    }
}

/// True when a record is the very version `peer` announced (a file this node just
/// applied from it): the peer needs only to hear that this node has it now, not
/// the entry with every block again. Only what the peer announced under its index
/// id of now counts, which [`holds_their_index`] checks first.
fn is_theirs(index: &ShareIndex, r: &LocalRecord, peer: &NodeId) -> Result<bool, IndexError> {
    let theirs = index.remote_entry(&r.entry.path, peer)?;
    Ok(theirs.is_some_and(|t| t.version == r.entry.version && t.same_content(&r.entry)))
}

/// True when what this node holds of `peer`'s index is from its index of now
/// (`their_index`): a peer whose index was reset (its share removed and added
/// again) no longer holds what it announced before, and takes a name for nothing.
fn holds_their_index(index: &ShareIndex, peer: &NodeId, their_index: u64) -> Result<bool, IndexError> {
    Ok(index.remote_state(peer)?.is_some_and(|(id, _)| id == their_index))
}

/// A peer's index batch as it arrived.
pub struct Batch {
    /// The peer's index id for the share.
    pub index_id: u64,
    /// Its changed entries.
    pub entries: Vec<WireEntry>,
    /// Paths where it holds this node's version.
    pub same: Vec<SameVersion>,
    /// The sequence the batch reaches.
    pub upto: u64,
}

/// Takes in a peer's batch of share `share_name`: every entry is checked, the good
/// ones stored; returns their paths (to plan again). Refused entries are counted
/// and logged.
pub async fn receive(
    index: ShareIndex,
    counters: &Counters,
    peer: NodeId,
    share_name: &str,
    batch: Batch,
) -> Result<Vec<RelPath>, IndexError> {
    let Batch { index_id, entries, same, upto } = batch;
    Counters::add(&counters.entries_received, entries.len() as u64);
    let mut good = Vec::with_capacity(entries.len());
    for w in entries {
        let path = w.path.clone();
        match Entry::try_from(w) {
            Ok(e) => good.push(e),
            Err(why) => {
                Counters::add(&counters.refused, 1);
                warn!(share = share_name, %path, %why, "refused entry from peer");
            }
        }
    }
    let mut named = Vec::with_capacity(same.len());
    for s in same {
        match VersionVector::try_from_pairs(s.version.into_iter().map(|(id, c)| (ShortId(id), c)).collect()) {
            Some(v) => named.push((s.path, v)),
            None => {
                Counters::add(&counters.refused, 1);
                warn!(share = share_name, path = %s.path, "refused a version from peer: not canonical");
            }
        }
    }
    let paths: Vec<RelPath> = good.iter().map(|e| e.path.clone()).collect();
    tokio::task::spawn_blocking(move || index.apply_remote_batch(&peer, index_id, &good, &named, upto))
        .await
        .map_err(|e| IndexError::Task(e.to_string()))??;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChunkHash, ShortId};
    use crate::index::{Block, EntryKind, Index, Mtime, VersionVector};

    fn entry(version: u64) -> Entry {
        Entry {
            path: RelPath::parse("f").unwrap(),
            kind: EntryKind::File,
            size: 1,
            mode: 0o644,
            mtime: Mtime { secs: 1, nanos: 0 },
            version: VersionVector::from_pairs([(ShortId(9), version)]),
            modified_by: ShortId(9),
            deleted: false,
            blocks: vec![Block { hash: ChunkHash::of(b"x"), len: 1 }],
        }
    }

    #[test]
    fn a_version_applied_from_a_peer_goes_back_by_name_and_is_stored_as_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = Index::open(dir.path()).unwrap();
        let (here, source) = (db.share("s").unwrap(), db.share("t").unwrap());
        let (from, other) = (NodeId([1; 32]), NodeId([2; 32]));
        here.apply_remote(&from, 7, &[entry(3)], 1).unwrap();
        // Applied here: the same version now sits in this node's own records.
        here.put(entry(3), 1, false).unwrap();
        let f = RelPath::parse("f").unwrap();
        let rec = here.get(&f).unwrap().unwrap();
        let theirs = |rec: &LocalRecord, peer: &NodeId, index: u64| {
            holds_their_index(&here, peer, index).unwrap() && is_theirs(&here, rec, peer).unwrap()
        };
        assert!(theirs(&rec, &from, 7), "the peer it came from has it");
        assert!(!theirs(&rec, &other, 7), "everyone else gets the entry");
        assert!(!theirs(&rec, &from, 8), "the peer's index was reset since");
        // The source takes the name as this node holding its own entry.
        source.put(entry(3), 1, false).unwrap();
        let v = entry(3).version;
        source.apply_remote_batch(&other, 5, &[], &[(f.clone(), v.clone())], 1).unwrap();
        assert_eq!(source.remote_entry(&f, &other).unwrap(), Some(entry(3)));
        // A name for a version the source has moved past is not stored.
        source.put(entry(4), 1, false).unwrap();
        source.apply_remote_batch(&from, 5, &[], &[(f.clone(), v)], 1).unwrap();
        assert_eq!(source.remote_entry(&f, &from).unwrap(), None);
        // A newer local version goes to the peer whole.
        here.put(entry(4), 1, false).unwrap();
        let rec = here.get(&f).unwrap().unwrap();
        assert!(!theirs(&rec, &from, 7));
    }
}
