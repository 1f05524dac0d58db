//! Watches a share for changes (inotify through `notify`) so a local change is
//! scanned within about a second instead of at the next full rescan, and only the
//! changed paths are looked at: a full walk of a share with millions of files is
//! minutes of `stat`, which the hourly rescan still does to catch missed events.
//!
//! A changed path is scanned once it has been quiet for [`SETTLE`]: a file still
//! being written keeps moving its deadline, so it is not hashed (and replicated)
//! half-written. The scanner checks size and mtime again after hashing as well, and
//! partial-download names (`*.filepart`, ...) are ignored whatever the timing.
//! `config::schedule` says when a share may transfer.

use crate::relpath::RelPath;
use crate::scan::Ignore;
use notify::event::ModifyKind;
use notify::{RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a path must go without events before it is scanned.
pub const SETTLE: Duration = Duration::from_secs(1);
/// A path written without pause is scanned this long after its first event anyway
/// (the scanner skips it if it changes while hashed), so a busy file is not left
/// for the hourly rescan.
pub const MAX_SETTLE: Duration = Duration::from_secs(10);

/// Why a share cannot be watched (it is then rescanned more often instead).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The kernel refused: usually `fs.inotify.max_user_watches` or `max_user_instances`.
    #[error("cannot watch {path}: {source} (on Linux, raise fs.inotify.max_user_watches / max_user_instances)")]
    Notify {
        /// The share root.
        path: String,
        /// What notify said.
        source: notify::Error,
    },
}

/// Paths with events, each with the time of its latest one; pure, the caller passes
/// the time.
#[derive(Debug, Default)]
pub struct Settle {
    /// Per path: its first and latest event since it was last taken.
    events: HashMap<RelPath, (Duration, Duration)>,
    overflow: bool,
}

impl Settle {
    /// Notes an event on `path` at `now`.
    pub fn record(&mut self, path: RelPath, now: Duration) {
        self.events.entry(path).and_modify(|e| e.1 = now).or_insert((now, now));
    }

    /// Notes that events were lost (queue overflow, watch error): only a full scan
    /// can tell what changed.
    pub fn overflowed(&mut self) {
        self.overflow = true;
    }

    /// True (once) if events were lost since the last call.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflow)
    }

    /// True if nothing waits to be scanned.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.overflow
    }

    /// When a path is due: quiet for `quiet`, or [`MAX_SETTLE`] after its first event.
    fn due_at((first, last): (Duration, Duration), quiet: Duration) -> Duration {
        (last + quiet).min(first + MAX_SETTLE)
    }

    /// When the earliest waiting path is due (see [`Settle::take_due`]).
    pub fn next_due(&self, quiet: Duration) -> Option<Duration> {
        self.events.values().map(|e| Self::due_at(*e, quiet)).min()
    }

    /// Removes and returns, in path order, the paths quiet for `quiet` at `now` or
    /// waiting since [`MAX_SETTLE`]; and, once one is due, with it every path quiet
    /// for half as long: a burst of events (an `rm -rf`, an untar) comes out as one
    /// batch, so the delete brake judges a large delete whole.
    pub fn take_due(&mut self, now: Duration, quiet: Duration) -> Vec<RelPath> {
        if !self.events.values().any(|e| Self::due_at(*e, quiet) <= now) {
            return Vec::new();
        }
        let mut due: Vec<RelPath> =
            self.events.iter().filter(|(_, e)| Self::due_at(**e, quiet / 2) <= now).map(|(p, _)| p.clone()).collect();
        due.sort();
        for p in &due {
            self.events.remove(p);
        }
        due
    }

    /// Forgets every waiting path (a full scan is about to look at all of them).
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

/// A change this node makes itself, whose event the watch is to drop: scanning it
/// would only find what the index already says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ours {
    /// A downloaded file renamed into place.
    RenamedInto,
    /// A path deleted because the mesh deleted it.
    Removed,
}

/// Most of this node's own changes waiting for their event; past it the oldest
/// expectations are simply forgotten (their events are then scanned, as before).
const MAX_OURS: usize = 100_000;

/// The events of one share, shared between notify's thread and the share worker.
#[derive(Debug)]
pub struct Pending {
    settle: Mutex<Settle>,
    /// This node's own changes whose one event is still to come.
    ours: Mutex<HashMap<RelPath, Ours>>,
    /// Woken when the first path waits or events were lost, so the worker can set
    /// its deadline (later events never bring it forward).
    pub wake: tokio::sync::Notify,
    /// Set when the kernel refused a watch after the start (a new directory past
    /// the inotify limit): changes there raise no event, so the share falls back to
    /// frequent full scans.
    degraded: AtomicBool,
    epoch: Instant,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            settle: Mutex::default(),
            ours: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            degraded: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Pending {
    /// Runs `f` on the settle state with the current time.
    pub fn with<T>(&self, f: impl FnOnce(&mut Settle, Duration) -> T) -> T {
        let now = self.epoch.elapsed();
        f(&mut self.settle.lock().unwrap_or_else(|e| e.into_inner()), now)
    }

    /// Notes a change this node is about to make at `path`: its event is dropped.
    /// Only that one event: a user's write to the path right after it raises other
    /// events (create, write, close), which are not dropped.
    pub fn ours(&self, path: RelPath, what: Ours) {
        let mut m = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_OURS {
            m.clear();
        }
        m.insert(path, what);
    }

    /// True (once) when `path`'s event of kind `kind` is the one this node expected.
    fn is_ours(&self, path: &RelPath, kind: &notify::EventKind) -> bool {
        use notify::event::{ModifyKind, RenameMode};
        let mut m = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        let fits = match (m.get(path), kind) {
            (Some(Ours::RenamedInto), notify::EventKind::Modify(ModifyKind::Name(mode))) => {
                matches!(mode, RenameMode::To | RenameMode::Both | RenameMode::Any)
            }
            // A deleted file kept as a version is renamed away, not removed.
            (Some(Ours::Removed), notify::EventKind::Remove(_)) => true,
            (Some(Ours::Removed), notify::EventKind::Modify(ModifyKind::Name(mode))) => {
                matches!(mode, RenameMode::From | RenameMode::Both | RenameMode::Any)
            }
            _ => false,
        };
        if fits {
            m.remove(path);
        }
        fits
    }

    /// True once a watch was refused after the start (see the field).
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The tokio instant at which the next path is due, if any waits.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        let due = self.with(|s, _| s.next_due(SETTLE))?;
        Some(tokio::time::Instant::from_std(self.epoch + due))
    }
}

/// A running watch of one share root; stops when dropped.
pub struct ShareWatch {
    _watcher: notify::RecommendedWatcher,
}

impl ShareWatch {
    /// Watches `root` recursively, feeding paths that are not ignored into `pending`.
    pub fn start(root: &Path, ignore: Ignore, pending: Arc<Pending>) -> Result<Self, WatchError> {
        let base: PathBuf = root.to_path_buf();
        // A new watch (the root was made again) starts with every directory watched.
        pending.degraded.store(false, Ordering::Relaxed);
        let err = |source| WatchError::Notify { path: root.display().to_string(), source };
        let handler = move |res: notify::Result<notify::Event>| {
            let ev = match res {
                Ok(ev) => ev,
                Err(e) => {
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                        if !pending.degraded.swap(true, Ordering::Relaxed) {
                            warn!(error = %e, "inotify watch limit reached (raise fs.inotify.max_user_watches); changes are now also found by full scans every few seconds");
                        }
                    } else {
                        warn!(error = %e, "file watch error; a full rescan follows");
                    }
                    pending.with(|s, _| s.overflowed());
                    pending.wake.notify_one();
                    return;
                }
            };
            // The root itself removed or renamed: its watch is gone with it, and
            // only a full scan (which restarts the watch) can tell what is there now.
            let root_gone =
                matches!(ev.kind, notify::EventKind::Remove(_) | notify::EventKind::Modify(ModifyKind::Name(_)))
                    && ev.paths.iter().any(|p| p == &base);
            if ev.need_rescan() || root_gone {
                pending.with(|s, _| s.overflowed());
                pending.wake.notify_one();
                return;
            }
            if !matters(&ev.kind) {
                return;
            }
            let rels: Vec<RelPath> = ev
                .paths
                .iter()
                .filter_map(|p| relative(&base, p, &ignore))
                .filter(|r| !pending.is_ours(r, &ev.kind))
                .collect();
            if rels.is_empty() {
                return;
            }
            // A new event never makes the earliest deadline earlier, so the worker
            // needs waking only when the first path arrives: a burst of 100 000
            // events then costs one wake-up, not 100 000 passes over the table.
            let was_empty = pending.with(|s, now| {
                let was_empty = s.is_empty();
                rels.into_iter().for_each(|r| s.record(r, now));
                was_empty
            });
            if was_empty {
                pending.wake.notify_one();
            }
        };
        // Not following symlinks: a link to a folder outside the share must not put
        // that folder's events (and files) into the share.
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut w = notify::RecommendedWatcher::new(handler, config).map_err(err)?;
        w.watch(root, RecursiveMode::Recursive).map_err(err)?;
        Ok(Self { _watcher: w })
    }
}

/// Reads (access events) change nothing; everything else may.
fn matters(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// The share-relative path of an event's `abs`, unless it is the root itself,
/// outside the share, not UTF-8, or ignored.
fn relative(root: &Path, abs: &Path, ignore: &Ignore) -> Option<RelPath> {
    let rel = abs.strip_prefix(root).ok()?.to_str()?;
    if rel.is_empty() || ignore.covers(rel) {
        return None;
    }
    RelPath::parse(rel).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_nodes_own_change_is_dropped_once_and_other_events_are_kept() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        use notify::EventKind;
        let p = Pending::default();
        let f = RelPath::parse("f").unwrap();
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(!p.is_ours(&f, &rename), "nothing expected yet");
        p.ours(f.clone(), Ours::RenamedInto);
        assert!(!p.is_ours(&f, &EventKind::Create(CreateKind::File)), "a user's write is not ours");
        assert!(!p.is_ours(&f, &EventKind::Remove(RemoveKind::File)), "not the change expected");
        assert!(p.is_ours(&f, &rename));
        assert!(!p.is_ours(&f, &rename), "only the one event");
        p.ours(f.clone(), Ours::Removed);
        assert!(p.is_ours(&f, &EventKind::Remove(RemoveKind::Any)));
    }

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    const Q: Duration = SETTLE;

    #[test]
    fn a_path_is_due_only_after_it_has_been_quiet() {
        let mut s = Settle::default();
        let t = Duration::from_secs(10);
        s.record(p("a"), t);
        assert_eq!(s.next_due(Q), Some(t + Q));
        assert!(s.take_due(t + Q / 2, Q).is_empty(), "still settling");
        // Written again: the deadline moves.
        s.record(p("a"), t + Q / 2);
        assert!(s.take_due(t + Q, Q).is_empty(), "a new event restarts the quiet period");
        assert_eq!(s.take_due(t + Q / 2 + Q, Q), vec![p("a")]);
        assert!(s.is_empty());
        assert_eq!(s.next_due(Q), None);
    }

    #[test]
    fn due_paths_come_out_once_in_order_and_the_rest_wait() {
        let mut s = Settle::default();
        let t = Duration::from_secs(1);
        s.record(p("b"), t);
        s.record(p("a"), t);
        s.record(p("c"), t + Q);
        assert_eq!(s.take_due(t + Q, Q), vec![p("a"), p("b")]);
        assert!(s.take_due(t + Q, Q).is_empty(), "taken once");
        assert_eq!(s.next_due(Q), Some(t + 2 * Q));
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn a_burst_comes_out_as_one_batch() {
        let mut s = Settle::default();
        let t = Duration::from_secs(1);
        s.record(p("a"), t);
        s.record(p("b"), t + Q * 3 / 10);
        s.record(p("c"), t + Q * 8 / 10);
        assert!(s.take_due(t + Q / 2, Q).is_empty(), "nothing due yet");
        assert_eq!(s.take_due(t + Q, Q), vec![p("a"), p("b")], "b is quiet for 0.7 s: taken with a");
        assert_eq!(s.next_due(Q), Some(t + Q * 18 / 10), "c, written 0.2 s ago, waits");
    }

    #[test]
    fn a_path_written_without_pause_is_due_after_the_cap() {
        let mut s = Settle::default();
        let t = Duration::from_secs(5);
        let step = Q / 2;
        let mut now = t;
        while now < t + MAX_SETTLE {
            s.record(p("log"), now);
            assert!(s.take_due(now, Q).is_empty(), "never quiet, not yet capped at {now:?}");
            now += step;
        }
        assert_eq!(s.take_due(t + MAX_SETTLE, Q), vec![p("log")]);
    }

    #[test]
    fn lost_events_ask_for_one_full_scan() {
        let mut s = Settle::default();
        s.overflowed();
        assert!(!s.is_empty());
        assert!(s.take_overflow());
        assert!(!s.take_overflow(), "reported once");
        assert!(s.is_empty());
    }

    #[test]
    fn events_map_to_share_paths_and_skip_ignored_ones() {
        let ig = Ignore::new(&["*.log".into()]).unwrap();
        let root = Path::new("/srv/share");
        assert_eq!(relative(root, Path::new("/srv/share/d/f.txt"), &ig), Some(p("d/f.txt")));
        assert_eq!(relative(root, Path::new("/srv/share"), &ig), None, "the root itself");
        assert_eq!(relative(root, Path::new("/srv/other/f"), &ig), None, "outside the share");
        assert_eq!(relative(root, Path::new("/srv/share/x.log"), &ig), None, "configured pattern");
        assert_eq!(relative(root, Path::new("/srv/share/up.filepart"), &ig), None, "partial upload");
        assert_eq!(relative(root, Path::new("/srv/share/.meshsync/tmp/1.part"), &ig), None, "our temp files");
        let ig = Ignore::new(&["node_modules".into()]).unwrap();
        assert_eq!(relative(root, Path::new("/srv/share/app/node_modules/x/y.js"), &ig), None, "inside an ignored dir");
        assert_eq!(relative(root, Path::new("/srv/share/app/node_modules2"), &ig), Some(p("app/node_modules2")));
    }
}
