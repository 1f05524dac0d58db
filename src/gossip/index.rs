//! The index exchange: a node streams its changes of each share to every peer that
//! takes part ("everything since sequence N", so a reconnect sends only what
//! changed), and takes theirs in after checking every entry.

use super::delta;
use super::wire::{self, pairs_of, version_of};
use crate::ids::{ContentId, NodeId};
use crate::index::{batch_cost, Block, Entry, EntryKind, IndexError, RemoteBatch, ShareIndex, BATCH_CUT};
use crate::proto::{Control, DeltaEntry, SameVersion, WireEntry, MAX_BATCH_BLOCKS, MAX_BATCH_ENTRIES, MINOR_DELTA};
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
    let deltas = their_minor >= MINOR_DELTA;
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
            let mut out = Outgoing::default();
            // Looked up once per batch, not per record.
            let theirs_held = names_back && holds_their_index(&idx, &peer, their_index)?;
            for r in recs.iter().filter(|r| !r.local_change) {
                let theirs = if theirs_held { idx.remote_entry(&r.entry.path, &peer)? } else { None };
                match tell(theirs.as_ref(), &r.entry, deltas) {
                    Told::Same(s) => out.same.push(s),
                    Told::Delta(d) => out.deltas.push(d),
                    Told::Whole(w) => out.entries.push(w),
                }
            }
            Ok::<_, IndexError>(upto.map(|u| (u, out)))
        })
        .await;
        let (upto, out) = match batch {
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
        let Outgoing { entries, same, deltas: runs } = out;
        let msg = if deltas {
            Control::IndexDelta { share, index_id, entries, same, deltas: runs, upto_seq: upto }
        } else if names_back {
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

/// One batch as it goes out.
#[derive(Default)]
struct Outgoing {
    entries: Vec<WireEntry>,
    same: Vec<SameVersion>,
    deltas: Vec<DeltaEntry>,
}

/// How one of this node's entries goes to a peer.
#[derive(Debug)]
enum Told {
    /// By name: it is the very version the peer announced (a file this node just
    /// applied from it): the peer needs only to hear that this node has it now.
    Same(SameVersion),
    /// As runs of the version the peer announced, much shorter (minor 5).
    Delta(DeltaEntry),
    /// Whole.
    Whole(WireEntry),
}

/// How `mine` goes to a peer whose entry for the path is `theirs` (only what it
/// announced under its index id of now: [`holds_their_index`] is checked first);
/// `deltas` if the peer reads them.
fn tell(theirs: Option<&Entry>, mine: &Entry, deltas: bool) -> Told {
    match theirs {
        Some(t) if t.version == mine.version && t.same_content(mine) => {
            Told::Same(SameVersion { path: mine.path.clone(), version: pairs_of(&mine.version) })
        }
        Some(t) if deltas => delta_of(t, mine).map_or_else(|| Told::Whole(WireEntry::from(mine)), Told::Delta),
        _ => Told::Whole(WireEntry::from(mine)),
    }
}

/// `mine` as runs of `theirs` (the peer's entry for the path), when both are files
/// and the runs take at most half the bytes of the blocks.
fn delta_of(theirs: &Entry, mine: &Entry) -> Option<DeltaEntry> {
    let file = |e: &Entry| !e.deleted && e.kind == EntryKind::File;
    if !file(theirs) || !file(mine) {
        return None;
    }
    let runs = delta::diff(&theirs.blocks, &mine.blocks)?;
    let entry = wire::head(mine);
    Some(DeltaEntry { entry, base: theirs.content_id(), runs })
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
    /// Its changed entries, whole.
    pub entries: Vec<WireEntry>,
    /// Paths where it holds this node's version.
    pub same: Vec<SameVersion>,
    /// Its changed entries as runs of a version this node holds (minor 5).
    pub deltas: Vec<DeltaEntry>,
    /// The sequence the batch reaches.
    pub upto: u64,
}

/// What a batch changed.
pub struct Received {
    /// Paths whose entries from the peer changed (to plan again).
    pub paths: Vec<RelPath>,
    /// Some deltas named a version this node no longer holds: their entries are to
    /// be asked for whole ([`ShareIndex::wanted`]).
    pub wanted: bool,
}

/// Takes in a peer's batch of share `share_name`: every entry is checked, the good
/// ones stored. Refused entries are counted and logged.
pub async fn receive(
    index: ShareIndex,
    counters: &Counters,
    peer: NodeId,
    share_name: &str,
    batch: Batch,
) -> Result<Received, IndexError> {
    let Batch { index_id, entries, same, deltas, upto } = batch;
    Counters::add(&counters.entries_received, (entries.len() + deltas.len()) as u64);
    let (mut good, _) = checked(counters, share_name, entries, deltas.len());
    let mut named = Vec::with_capacity(same.len());
    for s in same {
        match version_of(s.version) {
            Some(v) => named.push((s.path, v)),
            None => refused(counters, share_name, &s.path, &"a version that is not canonical"),
        }
    }
    let (received, refusals) = tokio::task::spawn_blocking(move || {
        // Deltas are read against this node's own records, so here, off the async threads.
        let mut budget = MAX_BATCH_BLOCKS.saturating_sub(good.iter().map(|e| e.blocks.len()).sum());
        let (mut wanted, mut refusals) = (Vec::new(), Vec::new());
        for d in deltas {
            let path = d.entry.path.clone();
            match read_delta(&index, d, &mut budget)? {
                DeltaRead::Entry(e) => good.push(e),
                DeltaRead::BaseGone => wanted.push(path),
                DeltaRead::Refused(why) => refusals.push((path, why)),
            }
        }
        let batch = RemoteBatch { entries: &good, same: &named, wanted: &wanted };
        index.apply_remote_batch(&peer, index_id, &batch, upto)?;
        let paths = good.into_iter().map(|e| e.path).collect();
        Ok::<_, IndexError>((Received { paths, wanted: !wanted.is_empty() }, refusals))
    })
    .await
    .map_err(|e| IndexError::Task(e.to_string()))??;
    for (path, why) in refusals {
        refused(counters, share_name, &path, &why);
    }
    Ok(received)
}

/// What a peer's delta gave.
enum DeltaRead {
    /// The entry, whole.
    Entry(Entry),
    /// This node holds the content it names no longer: ask for the entry whole.
    BaseGone,
    /// Why it is refused.
    Refused(String),
}

/// A peer's delta read against the content it names. At most `budget` blocks are
/// made, and what is made is taken from it.
fn read_delta(index: &ShareIndex, d: DeltaEntry, budget: &mut usize) -> Result<DeltaRead, IndexError> {
    let Some(base) = base_blocks(index, &d.entry.path, &d.base)? else { return Ok(DeltaRead::BaseGone) };
    let blocks = match delta::patch(&base, &d.runs, *budget) {
        Ok(b) => b,
        Err(e) => return Ok(DeltaRead::Refused(e.to_string())),
    };
    *budget -= blocks.len();
    Ok(wire::entry_of(d.entry, blocks).map_or_else(|e| DeltaRead::Refused(e.to_string()), DeltaRead::Entry))
}

/// The blocks of `path` with content `content`: this node's own entry, or any
/// peer's (the id covers every block: whichever has it has the list the runs name).
fn base_blocks(index: &ShareIndex, path: &RelPath, content: &ContentId) -> Result<Option<Vec<Block>>, IndexError> {
    let fits = |e: &Entry| !e.deleted && e.kind == EntryKind::File && &e.content_id() == content;
    if let Some(r) = index.get(path)?.filter(|r| fits(&r.entry)) {
        return Ok(Some(r.entry.blocks));
    }
    Ok(index.remote_for(path)?.into_iter().map(|(_, e)| e).find(fits).map(|e| e.blocks))
}

/// A peer's whole entries, checked: the good ones (with room for `more`), and the
/// paths of those refused (counted and logged).
fn checked(counters: &Counters, share: &str, entries: Vec<WireEntry>, more: usize) -> (Vec<Entry>, Vec<RelPath>) {
    let (mut good, mut bad) = (Vec::with_capacity(entries.len() + more), Vec::new());
    for w in entries {
        let path = w.path.clone();
        match Entry::try_from(w) {
            Ok(e) => good.push(e),
            Err(why) => {
                refused(counters, share, &path, &why);
                bad.push(path);
            }
        }
    }
    (good, bad)
}

fn refused(counters: &Counters, share: &str, path: &RelPath, why: &dyn std::fmt::Display) {
    Counters::add(&counters.refused, 1);
    warn!(share, %path, %why, "refused entry from peer");
}

/// The answer to a peer's [`Control::EntriesWanted`] of share `share`: this node's
/// entries of `paths` as they are now, whole; a path this node has no entry of to
/// tell (none, or a local change it does not announce) is `absent`. Stops before
/// the frame's limit, answering at least one path: the peer asks again for the rest.
pub fn answer_wanted(index: &ShareIndex, share: String, paths: Vec<RelPath>) -> Result<Control, IndexError> {
    let (mut entries, mut absent, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    for path in paths.into_iter().take(MAX_BATCH_ENTRIES) {
        if bytes >= BATCH_CUT {
            break;
        }
        match index.get(&path)?.filter(|r| !r.local_change) {
            Some(r) => {
                bytes += batch_cost(&r.entry);
                entries.push(WireEntry::from(&r.entry));
            }
            None => absent.push(path),
        }
    }
    Ok(Control::EntriesReply { share, index_id: index.index_id()?, entries, absent })
}

/// Takes in a peer's [`Control::EntriesReply`]: returns the paths whose entries
/// changed, and whether to ask again (paths are still wanted, and this answer was
/// taken and answered some: an ask that gets nowhere is not repeated).
pub async fn receive_answer(
    index: ShareIndex,
    counters: &Counters,
    peer: NodeId,
    share_name: &str,
    (index_id, entries, mut absent): (u64, Vec<WireEntry>, Vec<RelPath>),
) -> Result<Received, IndexError> {
    let (good, bad) = checked(counters, share_name, entries, 0);
    // A refused entry is not asked for again: the same answer would come.
    absent.extend(bad);
    tokio::task::spawn_blocking(move || {
        let answered = !good.is_empty() || !absent.is_empty();
        let Some(paths) = index.apply_remote_reply(&peer, index_id, &good, &absent)? else {
            return Ok(Received { paths: Vec::new(), wanted: false });
        };
        let wanted = answered && !index.wanted(&peer, 1)?.is_empty();
        Ok(Received { paths, wanted })
    })
    .await
    .map_err(|e| IndexError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkHash;
    use crate::index::{Index, LocalRecord};
    use crate::proto::BlockRun;

    fn entry(version: u64) -> Entry {
        crate::index::sample_file("f", version)
    }

    /// A share "s" in a fresh index, a peer and counters.
    fn setup() -> (tempfile::TempDir, ShareIndex, NodeId, Counters) {
        let dir = tempfile::tempdir().unwrap();
        let here = Index::open(dir.path()).unwrap().share("s").unwrap();
        (dir, here, NodeId([1; 32]), Counters::default())
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
            let held = holds_their_index(&here, peer, index).unwrap();
            let t = if held { here.remote_entry(&rec.entry.path, peer).unwrap() } else { None };
            matches!(tell(t.as_ref(), &rec.entry, true), Told::Same(_))
        };
        assert!(theirs(&rec, &from, 7), "the peer it came from has it");
        assert!(!theirs(&rec, &other, 7), "everyone else gets the entry");
        assert!(!theirs(&rec, &from, 8), "the peer's index was reset since");
        // The source takes the name as this node holding its own entry.
        source.put(entry(3), 1, false).unwrap();
        let v = entry(3).version;
        let named = [(f.clone(), v.clone())];
        source.apply_remote_batch(&other, 5, &RemoteBatch { same: &named, ..Default::default() }, 1).unwrap();
        assert_eq!(source.remote_entry(&f, &other).unwrap(), Some(entry(3)));
        // A name for a version the source has moved past is not stored.
        source.put(entry(4), 1, false).unwrap();
        let named = [(f.clone(), v)];
        source.apply_remote_batch(&from, 5, &RemoteBatch { same: &named, ..Default::default() }, 1).unwrap();
        assert_eq!(source.remote_entry(&f, &from).unwrap(), None);
        // A newer local version goes to the peer whole.
        here.put(entry(4), 1, false).unwrap();
        let rec = here.get(&f).unwrap().unwrap();
        assert!(!theirs(&rec, &from, 7));
    }

    /// A file of `n` blocks from `seeds` at version `v` of node 9.
    fn big(seeds: impl Iterator<Item = u32>, v: u64) -> Entry {
        let blocks: Vec<Block> = seeds.map(|s| Block { hash: ChunkHash::of(&s.to_le_bytes()), len: 100 }).collect();
        Entry { size: blocks.len() as u64 * 100, blocks, ..entry(v) }
    }

    fn batch(deltas: Vec<DeltaEntry>, upto: u64) -> Batch {
        Batch { index_id: 7, entries: Vec::new(), same: Vec::new(), deltas, upto }
    }

    #[tokio::test]
    async fn a_changed_big_file_goes_as_runs_and_is_read_back_whole() {
        let (_dir, here, peer, counters) = setup();
        // Both hold version 1 of f: the peer announced it, this node has it too.
        let old = big(0..200, 1);
        here.put(old.clone(), 1, false).unwrap();
        // The peer's version 2: two blocks inserted in the middle.
        let new = big((0..100).chain([7000, 7001]).chain(100..200), 2);
        let Told::Delta(d) = tell(Some(&old), &new, true) else { panic!("a small change goes as runs") };
        let whole = crate::codec::encode(&WireEntry::from(&new)).unwrap().len();
        let runs = crate::codec::encode(&d).unwrap().len();
        assert!(runs * 10 < whole, "{runs} bytes of runs against {whole} whole");
        assert!(matches!(tell(Some(&old), &new, false), Told::Whole(_)), "a peer of minor 4 gets it whole");
        let got = receive(here.clone(), &counters, peer, "s", batch(vec![d], 3)).await.unwrap();
        assert_eq!(got.paths, vec![new.path.clone()]);
        assert!(!got.wanted);
        assert_eq!(here.remote_entry(&new.path, &peer).unwrap(), Some(new.clone()));
        assert_eq!(counters.snapshot().refused, 0);
    }

    #[tokio::test]
    async fn a_delta_of_a_version_no_longer_held_is_asked_for_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = Index::open(dir.path()).unwrap();
        let (here, there) = (db.share("s").unwrap(), db.share("t").unwrap());
        let peer = NodeId([1; 32]);
        let counters = Counters::default();
        let old = big(0..200, 1);
        let new = big((0..100).chain([7000]).chain(100..200), 2);
        let Told::Delta(d) = tell(Some(&old), &new, true) else { panic!("runs") };
        // This node moved past version 1 before the delta came (an edit of its own).
        here.put(big(300..500, 5), 1, false).unwrap();
        let got = receive(here.clone(), &counters, peer, "s", batch(vec![d.clone()], 3)).await.unwrap();
        assert!(got.paths.is_empty() && got.wanted);
        assert_eq!(here.wanted(&peer, 10).unwrap(), vec![new.path.clone()]);
        assert_eq!(here.remote_state(&peer).unwrap(), Some((7, 3)), "the stream goes on");
        // The peer answers from its index of now (id 7 here stands for it).
        there.put(new.clone(), 1, false).unwrap();
        let Control::EntriesReply { entries, absent, .. } =
            answer_wanted(&there, "s".into(), vec![new.path.clone(), RelPath::parse("gone").unwrap()]).unwrap()
        else {
            panic!("an answer")
        };
        assert_eq!(absent, vec![RelPath::parse("gone").unwrap()]);
        let got = receive_answer(here.clone(), &counters, peer, "s", (7, entries, absent)).await.unwrap();
        assert_eq!(got.paths, vec![new.path.clone()]);
        assert!(!got.wanted, "nothing left to ask");
        assert_eq!(here.remote_entry(&new.path, &peer).unwrap(), Some(new.clone()));
        // A delta whose base this node finds in another peer's entry is read from it.
        let other = NodeId([2; 32]);
        here.apply_remote(&other, 9, std::slice::from_ref(&old), 1).unwrap();
        let got =
            receive(here.clone(), &counters, other, "s", Batch { index_id: 9, ..batch(vec![d], 2) }).await.unwrap();
        assert!(!got.wanted);
        assert_eq!(here.remote_entry(&new.path, &other).unwrap(), Some(new));
    }

    #[tokio::test]
    async fn deltas_that_do_not_hold_together_are_refused() {
        let (_dir, here, peer, counters) = setup();
        let old = big(0..200, 1);
        here.put(old.clone(), 1, false).unwrap();
        let new = big((0..100).chain([7000]).chain(100..200), 2);
        let Told::Delta(good) = tell(Some(&old), &new, true) else { panic!("runs") };
        let mut outside = good.clone();
        outside.runs.push(BlockRun::Base { start: 199, len: 2 });
        let mut size = good.clone();
        size.entry.size += 1;
        // A few bytes naming the base over and over: stopped at the batch's block limit.
        let mut flood = good.clone();
        flood.runs = vec![BlockRun::Base { start: 0, len: 200 }; MAX_BATCH_BLOCKS / 200 + 1];
        let got = receive(here.clone(), &counters, peer, "s", batch(vec![outside, size, flood], 3)).await.unwrap();
        assert!(got.paths.is_empty() && !got.wanted);
        assert_eq!(counters.snapshot().refused, 3);
        assert_eq!(here.remote_entry(&new.path, &peer).unwrap(), None);
    }
}
