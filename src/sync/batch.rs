//! Small files travel in batches: many whole files fetched with a few requests,
//! written, made durable and recorded together. A swarm download per 4 KiB file
//! (its own scheduler, timers, request stream, progress maps, two fsyncs and an
//! index commit) held 20,000 files to 1.5k files/s with both cores busy. This is
//! the pure part: which actions go in a batch, how a pass is cut into jobs, and
//! which peer is asked for which chunks.

use super::planner::Action;
use crate::ids::NodeId;
use crate::proto::{ChunkRef, MAX_REQUEST_CHUNKS};
use std::collections::HashMap;

/// Largest file fetched in a batch; a bigger one gets its own swarm download
/// (rarest first, progress maps, relaying from a partial copy).
pub const SMALL_FILE: u64 = 256 << 10;
/// Most files in one batch: enough to make the fsyncs and the index commit per
/// batch cheap, few enough that a batch is on disk within milliseconds.
pub const BATCH_FILES: usize = 256;
/// Most bytes of one batch (held in memory until written).
pub const BATCH_BYTES: u64 = 8 << 20;
/// Most bytes one request of a batch asks for.
pub const REQUEST_BYTES: u64 = 1 << 20;

/// What a pass runs as one task.
#[derive(Debug, PartialEq, Eq)]
pub enum Job {
    /// One action on its own (a directory, a delete, a large file's download...).
    One(Action),
    /// Small whole files fetched and applied together.
    Batch(Vec<Action>),
}

/// True when an action is a small file's download that can go in a batch: a file
/// of at most [`SMALL_FILE`] bytes, fetched whole in one request, with no local
/// version to keep aside as a conflict copy.
pub fn batchable(a: &Action) -> bool {
    matches!(a, Action::Fetch { target, conflict: None, .. }
        if target.size <= SMALL_FILE && target.blocks.len() <= MAX_REQUEST_CHUNKS)
}

/// Cuts actions (in the order given) into jobs: the batchable ones in batches of
/// at most [`BATCH_FILES`] files and [`BATCH_BYTES`] bytes, in order, so a batch
/// holds neighbouring paths (its renames touch few directories); every other
/// action on its own, where it came (it does not cut the batch being filled).
pub fn jobs(actions: impl IntoIterator<Item = Action>) -> Vec<Job> {
    let mut out = Vec::new();
    let (mut batch, mut bytes) = (Vec::new(), 0u64);
    let flush = |batch: &mut Vec<Action>, bytes: &mut u64, out: &mut Vec<Job>| {
        match batch.len() {
            0 => {}
            // Nothing to share the costs with.
            1 => out.extend(batch.pop().map(Job::One)),
            _ => out.push(Job::Batch(std::mem::take(batch))),
        }
        *bytes = 0;
    };
    for a in actions {
        if !batchable(&a) {
            out.push(Job::One(a));
            continue;
        }
        let size = match &a {
            Action::Fetch { target, .. } => target.size,
            _ => 0,
        };
        if batch.len() >= BATCH_FILES || (!batch.is_empty() && bytes + size > BATCH_BYTES) {
            flush(&mut batch, &mut bytes, &mut out);
        }
        bytes += size;
        batch.push(a);
    }
    flush(&mut batch, &mut bytes, &mut out);
    out
}

/// Requests that fetch `chunks`, each chunk from one of the peers listed with it:
/// the peer with the fewest bytes asked of it so far (the first listed on a tie),
/// so a batch spreads over its sources. Each peer's chunks are cut into requests
/// of at most [`MAX_REQUEST_CHUNKS`] chunks and `max_bytes` bytes (a larger chunk
/// alone). Returns the requests and the chunks no listed peer can serve.
pub fn requests(chunks: &[(ChunkRef, Vec<NodeId>)], max_bytes: u64) -> (Vec<(NodeId, Vec<ChunkRef>)>, Vec<ChunkRef>) {
    let mut load: HashMap<NodeId, u64> = HashMap::new();
    // Per peer, in the order peers were first picked: requests come out in a
    // stable order for the same input.
    let mut per_peer: Vec<(NodeId, Vec<ChunkRef>)> = Vec::new();
    let mut orphans = Vec::new();
    for (c, peers) in chunks {
        let Some(peer) = peers.iter().min_by_key(|p| load.get(*p).copied().unwrap_or(0)) else {
            orphans.push(*c);
            continue;
        };
        *load.entry(*peer).or_default() += u64::from(c.len);
        match per_peer.iter_mut().find(|(p, _)| p == peer) {
            Some((_, list)) => list.push(*c),
            None => per_peer.push((*peer, vec![*c])),
        }
    }
    let mut out = Vec::new();
    for (peer, list) in per_peer {
        let (mut cur, mut bytes) = (Vec::new(), 0u64);
        for c in list {
            if !cur.is_empty() && (cur.len() >= MAX_REQUEST_CHUNKS || bytes + u64::from(c.len) > max_bytes) {
                out.push((peer, std::mem::take(&mut cur)));
                bytes = 0;
            }
            bytes += u64::from(c.len);
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push((peer, cur));
        }
    }
    (out, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShareMode;
    use crate::ids::{ChunkHash, ShortId};
    use crate::index::{Block, Entry, EntryKind, Mtime, VersionVector};
    use crate::relpath::RelPath;

    fn file(path: &str, size: u64, blocks: usize) -> Entry {
        Entry {
            path: RelPath::parse(path).unwrap(),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            mtime: Mtime::default(),
            version: VersionVector::new().bump(ShortId(1)).unwrap(),
            modified_by: ShortId(1),
            deleted: false,
            blocks: (0..blocks).map(|i| Block { hash: ChunkHash::of(&[i as u8]), len: 1 }).collect(),
        }
    }

    fn fetch(path: &str, size: u64) -> Action {
        Action::Fetch { target: file(path, size, 1), sources: vec![NodeId([1; 32])], conflict: None }
    }

    fn sizes(jobs: &[Job]) -> Vec<Option<usize>> {
        jobs.iter()
            .map(|j| match j {
                Job::One(_) => None,
                Job::Batch(b) => Some(b.len()),
            })
            .collect()
    }

    #[test]
    fn only_small_whole_file_downloads_without_a_conflict_are_batched() {
        assert!(batchable(&fetch("a", 4096)));
        assert!(batchable(&fetch("a", 0)), "an empty file");
        assert!(batchable(&fetch("a", SMALL_FILE)));
        assert!(!batchable(&fetch("a", SMALL_FILE + 1)));
        let sources = vec![NodeId([1; 32])];
        let many = Action::Fetch { target: file("a", 100, MAX_REQUEST_CHUNKS + 1), sources, conflict: None };
        assert!(!batchable(&many), "more chunks than one request names");
        let conflict = RelPath::parse("a.sync-conflict").ok();
        let kept = Action::Fetch { target: file("a", 10, 1), sources: vec![], conflict };
        assert!(!batchable(&kept), "a conflict copy is made by the single-file path");
        let dir = crate::sync::plan_path(None, &[(NodeId([1; 32]), dir_entry())], ShareMode::SendReceive).unwrap();
        assert!(!batchable(&dir));
    }

    fn dir_entry() -> Entry {
        Entry { kind: EntryKind::Dir, size: 0, blocks: vec![], ..file("d", 0, 0) }
    }

    #[test]
    fn jobs_keep_order_and_cut_batches_by_count_and_bytes() {
        let mut actions: Vec<Action> = (0..BATCH_FILES + 3).map(|i| fetch(&format!("f{i:04}"), 10)).collect();
        actions.push(fetch("big", SMALL_FILE + 1));
        actions.push(fetch("z1", 10));
        actions.push(fetch("z2", 10));
        let jobs = jobs(actions);
        assert_eq!(sizes(&jobs), vec![Some(BATCH_FILES), None, Some(5)]);
        let Job::Batch(first) = &jobs[0] else { panic!() };
        assert_eq!(first[0].path().as_str(), "f0000");
        assert_eq!(first[BATCH_FILES - 1].path().as_str(), format!("f{:04}", BATCH_FILES - 1));
        // A lone small file needs no batch.
        assert_eq!(sizes(&super::jobs(vec![fetch("a", 1)])), vec![None]);
        // Bytes cut a batch before the count does.
        let n = (BATCH_BYTES / SMALL_FILE) as usize;
        let heavy: Vec<Action> = (0..n + 1).map(|i| fetch(&format!("h{i}"), SMALL_FILE)).collect();
        assert_eq!(sizes(&super::jobs(heavy)), vec![Some(n), None]);
    }

    #[test]
    fn requests_spread_over_the_peers_and_stay_within_bounds() {
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let c = |i: u32, len| ChunkRef { hash: ChunkHash::of(&i.to_be_bytes()), len };
        // Every chunk on both peers: they take turns.
        let both: Vec<_> = (0..4).map(|i| (c(i, 10), vec![a, b])).collect();
        let (reqs, orphans) = requests(&both, REQUEST_BYTES);
        assert!(orphans.is_empty());
        assert_eq!(reqs, vec![(a, vec![c(0, 10), c(2, 10)]), (b, vec![c(1, 10), c(3, 10)])]);
        // Only one peer has some; a chunk nobody has is given back.
        let (reqs, orphans) = requests(&[(c(0, 10), vec![b]), (c(1, 10), vec![a, b]), (c(2, 5), vec![])], 100);
        assert_eq!(reqs, vec![(b, vec![c(0, 10)]), (a, vec![c(1, 10)])]);
        assert_eq!(orphans, vec![c(2, 5)]);
        // Cut by chunk count and by bytes; a chunk larger than the byte bound goes alone.
        let many: Vec<_> = (0..MAX_REQUEST_CHUNKS as u32 + 1).map(|i| (c(i, 1), vec![a])).collect();
        let (reqs, _) = requests(&many, REQUEST_BYTES);
        assert_eq!(reqs.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(), vec![MAX_REQUEST_CHUNKS, 1]);
        let (reqs, _) = requests(&[(c(0, 60), vec![a]), (c(1, 60), vec![a]), (c(2, 200), vec![a])], 100);
        assert_eq!(reqs.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
        let (reqs, _) = requests(&[(c(0, 40), vec![a]), (c(1, 60), vec![a]), (c(2, 1), vec![a])], 100);
        assert_eq!(reqs.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(), vec![2, 1]);
    }
}
