//! What a share's status takes from the index, kept until the index changes.

use super::Share;
use crate::ids::NodeId;
use crate::index::{Entry, VersionVector};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn differs(a: Option<&(VersionVector, bool)>, b: Option<&(VersionVector, bool)>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x.0 != y.0,
        (Some(x), None) | (None, Some(x)) => !x.1,
        (None, None) => false,
    }
}

/// What a share's status takes from the index: the counts of its files and, per
/// peer, how many paths each side still needs. Reading every entry of every peer
/// is the expensive part of `status` (0.75 s for 100 000 files and 3 peers on the
/// 2-core build machine), and `meshsync wait` asks twice a second, so it is kept
/// until the index changes.
#[derive(Clone, Debug, PartialEq)]
pub struct ShareSummary {
    /// Files present.
    pub files: u64,
    /// Directories present.
    pub dirs: u64,
    /// Bytes in files.
    pub bytes: u64,
    /// Local changes not announced (receive-only).
    pub local_changes: u64,
    /// The first [`LISTED_LOCAL_CHANGES`] local changes, by path.
    pub local_change_paths: Vec<String>,
    /// (peer, we need, they need), by peer id.
    pub peers: Vec<(NodeId, u64, u64)>,
}

/// What a [`ShareSummary`] was computed from: any change to it recomputes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SummaryKey {
    local_seq: u64,
    remote_generation: u64,
    participation: Vec<(NodeId, bool)>,
}

/// The last [`ShareSummary`] of one share and what it was computed from.
#[derive(Default)]
pub struct SummaryCache(Mutex<Option<(SummaryKey, Arc<ShareSummary>)>>);

impl SummaryCache {
    /// The share's summary, computed again only if its index or its peers' say changed.
    pub fn get_or_compute(&self, share: &Share) -> Arc<ShareSummary> {
        let idx = &share.ctx.index;
        let said = share.participation();
        let mut participation: Vec<(NodeId, bool)> = said.iter().map(|(p, b)| (*p, *b)).collect();
        participation.sort();
        // Read before the entries: a change while they are read makes the next call recompute.
        let key = SummaryKey {
            local_seq: idx.max_seq().unwrap_or(0),
            remote_generation: idx.remote_generation(),
            participation,
        };
        self.get_or(key, || summarize(share, &said))
    }

    /// The cached summary for `key`, or `compute`'s; kept only if `compute` read
    /// everything (a failed read shown once must not stay until the next change).
    fn get_or(&self, key: SummaryKey, compute: impl FnOnce() -> (ShareSummary, Read)) -> Arc<ShareSummary> {
        if let Some((k, sum)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if *k == key {
                return sum.clone();
            }
        }
        let (sum, read) = compute();
        let sum = Arc::new(sum);
        if read == Read::Complete {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, sum.clone()));
        }
        sum
    }
}

/// Whether a summary saw the whole index or shows what could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Complete,
    Partial,
}

fn summarize(share: &Share, said: &HashMap<NodeId, bool>) -> (ShareSummary, Read) {
    let idx = &share.ctx.index;
    let (locals, remotes) = (idx.all(), idx.all_remote());
    let read = if locals.is_ok() && remotes.is_ok() { Read::Complete } else { Read::Partial };
    let locals = locals.unwrap_or_default();
    let (mut files, mut dirs, mut bytes, mut local_changes) = (0, 0, 0, 0);
    let mut local_change_paths = Vec::new();
    let mut mine: HashMap<String, (VersionVector, bool)> = HashMap::new();
    for r in &locals {
        if r.local_change {
            local_changes += 1;
            if local_change_paths.len() < LISTED_LOCAL_CHANGES {
                local_change_paths.push(r.entry.path.as_str().to_string());
            }
        }
        if !r.entry.deleted {
            match r.entry.kind {
                crate::index::EntryKind::Dir => dirs += 1,
                _ => {
                    files += 1;
                    bytes += r.entry.size;
                }
            }
        }
        mine.insert(r.entry.path.as_str().to_string(), (r.entry.version.clone(), r.entry.deleted));
    }
    let mut theirs: HashMap<NodeId, HashMap<String, (VersionVector, bool)>> = HashMap::new();
    for (peer, e) in remotes.unwrap_or_default() {
        // Entries stay after a peer left the share; it is no longer waited for.
        if said.get(&peer) == Some(&false) {
            continue;
        }
        let Entry { path, version, deleted, .. } = e;
        theirs.entry(peer).or_default().insert(path.as_str().to_string(), (version, deleted));
    }
    // A peer that takes part but sent no index has nothing yet.
    for (peer, _) in said.iter().filter(|(_, takes_part)| **takes_part) {
        theirs.entry(*peer).or_default();
    }
    let mut peers = Vec::new();
    for (peer, map) in &theirs {
        let (mut we_need, mut they_need) = (0, 0);
        for (path, t) in map {
            let m = mine.get(path);
            if differs(m, Some(t)) {
                match m {
                    Some(m) if m.0.dominates_or_equals(&t.0) => they_need += 1,
                    _ => we_need += 1,
                }
            }
        }
        for (path, m) in &mine {
            if !map.contains_key(path) && differs(Some(m), None) {
                they_need += 1;
            }
        }
        peers.push((*peer, we_need, they_need));
    }
    peers.sort_by_key(|p| p.0.to_string());
    (ShareSummary { files, dirs, bytes, local_changes, local_change_paths, peers }, read)
}

/// How many local changes `status` names.
pub const LISTED_LOCAL_CHANGES: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_summary_is_reused_until_what_it_was_computed_from_changes() {
        let cache = SummaryCache::default();
        let key = |local_seq, remote_generation, said: &[(u8, bool)]| SummaryKey {
            local_seq,
            remote_generation,
            participation: said.iter().map(|(p, b)| (NodeId([*p; 32]), *b)).collect(),
        };
        let sum = |files| ShareSummary {
            files,
            dirs: 0,
            bytes: 0,
            local_changes: 0,
            local_change_paths: vec![],
            peers: vec![],
        };
        let mut computed = 0;
        let mut get_read = |k, read| {
            cache.get_or(k, || {
                computed += 1;
                (sum(computed), read)
            })
        };
        assert_eq!(get_read(key(1, 0, &[]), Read::Partial).files, 1);
        assert_eq!(get_read(key(1, 0, &[]), Read::Complete).files, 2, "a failed read is not kept");
        let mut get = |k| get_read(k, Read::Complete).files - 2;
        assert_eq!(get(key(1, 1, &[(2, true)])), 1);
        assert_eq!(get(key(1, 1, &[(2, true)])), 1, "nothing changed: reused");
        assert_eq!(get(key(2, 1, &[(2, true)])), 2, "a local change");
        assert_eq!(get(key(2, 2, &[(2, true)])), 3, "a peer's index changed");
        assert_eq!(get(key(2, 2, &[(2, false)])), 4, "a peer left the share");
        assert_eq!(get(key(2, 2, &[(2, false)])), 4);
    }
}
