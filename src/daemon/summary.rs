//! What a share's status takes from the index, kept until the index changes, and
//! counted again at most so often while it keeps changing.

use super::Share;
use crate::ids::NodeId;
use crate::index::{Entry, EntryKind, IndexError, LocalRecord};
use std::collections::HashMap;
use std::iter::Peekable;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a share's status takes from the index: the counts of its files and, per
/// peer, how many paths each side still needs. Counting reads every record and
/// every peer's entry (about 0.75 s for 100 000 files and 3 peers on the 2-core
/// build machine), and `meshsync wait` asks twice a second, so it is kept until
/// the index changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShareSummary {
    /// Files present.
    pub files: u64,
    /// Directories present.
    pub dirs: u64,
    /// Bytes in files.
    pub bytes: u64,
    /// Local changes not announced (receive-only).
    pub local_changes: u64,
    /// The first [`LISTED_PATHS`] local changes, by path.
    pub local_change_paths: Vec<String>,
    /// The first [`LISTED_PATHS`] paths a peer has a newer version of, by
    /// path: what `status` names when this node stays behind.
    pub needed_paths: Vec<String>,
    /// (peer, we need, they need), by peer id.
    pub peers: Vec<(NodeId, u64, u64)>,
}

/// A share's summary as `status` gets it.
#[derive(Clone, Debug)]
pub struct SummaryView {
    /// The figures.
    pub summary: Arc<ShareSummary>,
    /// False when they are from before the index's latest changes: it changes
    /// faster than counting it again is worth (see [`RECOUNT_EVERY`]).
    pub current: bool,
}

/// While the index keeps changing (a scan, an index exchange), the summary is
/// counted again only once this many times the last count's duration has passed
/// since it ended: status costs at most a fifth of a core then, not a whole one
/// (a million files take seconds to count).
pub const RECOUNT_EVERY: u32 = 4;

/// What a [`ShareSummary`] was computed from: any change to it recomputes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SummaryKey {
    local_seq: u64,
    remote_generation: u64,
    participation: Vec<(NodeId, bool)>,
}

/// The last count of one share.
struct Counted {
    key: SummaryKey,
    summary: Arc<ShareSummary>,
    /// When it ended, and how long it took.
    at: Instant,
    took: Duration,
}

#[derive(Default)]
struct CacheState {
    last: Option<Counted>,
    /// A count runs now (another status answers with the last one meanwhile).
    counting: bool,
}

/// The last [`ShareSummary`] of one share and what it was computed from.
#[derive(Default)]
pub struct SummaryCache(Mutex<CacheState>);

impl SummaryCache {
    /// The share's summary, counted again if its index or its peers' say changed
    /// (and the last count is not too recent).
    pub fn get_or_compute(&self, share: &Share) -> SummaryView {
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
        self.get_or(key, Instant::now(), || {
            summarize(
                idx.local_records(),
                idx.remote_entries(),
                |peer: &NodeId| said.get(peer).copied(),
                said.iter().filter(|(_, takes_part)| **takes_part).map(|(p, _)| *p),
            )
        })
    }

    /// The cached summary for `key`, or `compute`'s; kept only if `compute` read
    /// everything (a failed read shown once must not stay until the next change).
    /// A summary for another key is still given, not current, while another call
    /// counts or within [`RECOUNT_EVERY`] times the last count's duration.
    fn get_or(&self, key: SummaryKey, now: Instant, compute: impl FnOnce() -> (ShareSummary, Read)) -> SummaryView {
        {
            let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = &st.last {
                if c.key == key {
                    return SummaryView { summary: c.summary.clone(), current: true };
                }
                let rest = now.saturating_duration_since(c.at) < c.took * RECOUNT_EVERY;
                if st.counting || rest {
                    return SummaryView { summary: c.summary.clone(), current: false };
                }
            }
            st.counting = true;
        }
        let start = Instant::now();
        let (sum, read) = compute();
        // What reading every entry left in the allocator.
        super::memory::give_back();
        let sum = Arc::new(sum);
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.counting = false;
        if read == Read::Complete {
            st.last = Some(Counted { key, summary: sum.clone(), at: Instant::now(), took: start.elapsed() });
        }
        SummaryView { summary: sum, current: true }
    }
}

/// Whether a summary saw the whole index or shows what could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Complete,
    Partial,
}

/// Counts per peer: paths it has a version of that we lack, that it lacks of
/// ours, and of our live paths how many it has an entry for.
#[derive(Default)]
struct PeerCount {
    we_need: u64,
    they_need: u64,
    live_held: u64,
}

/// Counts a share from this node's records and the peers' entries, both in path
/// order, in one pass: nothing but the counts is held. `said` is what each peer
/// said of taking part (entries of one that left are not waited for);
/// `participants` take part whether or not they sent entries.
fn summarize<L, R>(
    locals: L,
    remotes: R,
    said: impl Fn(&NodeId) -> Option<bool>,
    participants: impl Iterator<Item = NodeId>,
) -> (ShareSummary, Read)
where
    L: Iterator<Item = Result<LocalRecord, IndexError>>,
    R: Iterator<Item = Result<(NodeId, Entry), IndexError>>,
{
    let mut read = Read::Complete;
    let mut locals = Fallible::new(locals);
    let mut remotes = Fallible::new(remotes);
    let (mut files, mut dirs, mut bytes, mut local_changes) = (0, 0, 0, 0);
    let mut local_change_paths = Vec::new();
    let mut needed_paths: Vec<String> = Vec::new();
    let mut live_total = 0u64;
    let mut counts: HashMap<NodeId, PeerCount> = HashMap::new();
    loop {
        let path = match (locals.peek_path(), remotes.peek_path()) {
            (None, None) => break,
            (Some(l), Some(r)) => l.min(r),
            (Some(p), None) | (None, Some(p)) => p,
        }
        .to_string();
        let mine = locals.next_if_at(&path);
        if let Some(r) = &mine {
            if r.local_change {
                local_changes += 1;
                if local_change_paths.len() < LISTED_PATHS {
                    local_change_paths.push(path.clone());
                }
            }
            if !r.entry.deleted {
                live_total += 1;
                match r.entry.kind {
                    EntryKind::Dir => dirs += 1,
                    _ => {
                        files += 1;
                        bytes += r.entry.size;
                    }
                }
            }
        }
        let mine = mine.map(|r| (r.entry.version, r.entry.deleted));
        let mut needed = false;
        while let Some((peer, theirs)) = remotes.next_if_at(&path) {
            // Entries stay after a peer left the share; it is no longer waited for.
            if said(&peer) == Some(false) {
                continue;
            }
            let c = counts.entry(peer).or_default();
            match &mine {
                Some((v, deleted)) => {
                    c.live_held += u64::from(!deleted);
                    if *v != theirs.version {
                        if v.dominates_or_equals(&theirs.version) {
                            c.they_need += 1;
                        } else {
                            c.we_need += 1;
                            needed = true;
                        }
                    }
                }
                None => {
                    c.we_need += u64::from(!theirs.deleted);
                    needed |= !theirs.deleted;
                }
            }
        }
        if needed && needed_paths.len() < LISTED_PATHS {
            needed_paths.push(path);
        }
    }
    if locals.failed || remotes.failed {
        read = Read::Partial;
    }
    // A peer that takes part but sent no index has nothing yet.
    for p in participants {
        counts.entry(p).or_default();
    }
    let mut peers: Vec<(NodeId, u64, u64)> =
        counts.into_iter().map(|(p, c)| (p, c.we_need, c.they_need + (live_total - c.live_held))).collect();
    peers.sort_by_key(|p| p.0.to_string());
    (ShareSummary { files, dirs, bytes, local_changes, local_change_paths, needed_paths, peers }, read)
}

/// An iterator of index reads that stops at the first failure, noting it.
struct Fallible<I: Iterator> {
    inner: Peekable<I>,
    failed: bool,
}

impl<T, I: Iterator<Item = Result<T, IndexError>>> Fallible<I> {
    fn new(inner: I) -> Self {
        Self { inner: inner.peekable(), failed: false }
    }

    fn peek_ok(&mut self) -> Option<&T> {
        if matches!(self.inner.peek(), Some(Err(_))) {
            self.failed = true;
        }
        if self.failed {
            return None;
        }
        self.inner.peek().and_then(|r| r.as_ref().ok())
    }
}

impl<T: HasPath + 'static, I: Iterator<Item = Result<T, IndexError>>> Fallible<I> {
    /// The path of the next item.
    fn peek_path(&mut self) -> Option<&str> {
        self.peek_ok().map(HasPath::path)
    }

    /// The next item if it is at `path`.
    fn next_if_at(&mut self, path: &str) -> Option<T> {
        if self.peek_path() != Some(path) {
            return None;
        }
        self.inner.next().and_then(Result::ok)
    }
}

/// What the summary merges on.
trait HasPath {
    fn path(&self) -> &str;
}

impl HasPath for LocalRecord {
    fn path(&self) -> &str {
        self.entry.path.as_str()
    }
}

impl HasPath for (NodeId, Entry) {
    fn path(&self) -> &str {
        self.1.path.as_str()
    }
}

/// How many paths of each list `status` names (local changes, paths still needed).
pub const LISTED_PATHS: usize = 20;

#[cfg(test)]
mod tests;
