//! Watches a share for changes (inotify through `notify`) so a local change is
//! scanned within about a second instead of at the next full rescan, and only the
//! changed paths are looked at: a full walk of a share with millions of files is
//! minutes of `stat`, which the hourly rescan still does to catch missed events.
//!
//! A changed path is scanned once it has been quiet for [`SETTLE`]: a file still
//! being written keeps moving its deadline, so it is not hashed (and replicated)
//! half-written. The scanner checks size and mtime again after hashing as well, and
//! partial-download names (`*.filepart`, ...) are ignored whatever the timing.

use crate::index::RelPath;
use crate::scan::Ignore;
use notify::{RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a path must go without events before it is scanned.
pub const SETTLE: Duration = Duration::from_secs(1);

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
    last: HashMap<RelPath, Duration>,
    overflow: bool,
}

impl Settle {
    /// Notes an event on `path` at `now`.
    pub fn record(&mut self, path: RelPath, now: Duration) {
        self.last.insert(path, now);
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
        self.last.is_empty() && !self.overflow
    }

    /// When the earliest waiting path will have been quiet for `quiet`.
    pub fn next_due(&self, quiet: Duration) -> Option<Duration> {
        self.last.values().min().map(|t| *t + quiet)
    }

    /// Removes and returns the paths quiet for `quiet` at `now`, in path order.
    pub fn take_due(&mut self, now: Duration, quiet: Duration) -> Vec<RelPath> {
        let mut due: Vec<RelPath> =
            self.last.iter().filter(|(_, t)| now.saturating_sub(**t) >= quiet).map(|(p, _)| p.clone()).collect();
        due.sort();
        for p in &due {
            self.last.remove(p);
        }
        due
    }

    /// Forgets every waiting path (a full scan is about to look at all of them).
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

/// The events of one share, shared between notify's thread and the share worker.
#[derive(Debug)]
pub struct Pending {
    settle: Mutex<Settle>,
    /// Woken on every event, so the worker can recompute its deadline.
    pub wake: tokio::sync::Notify,
    epoch: Instant,
}

impl Default for Pending {
    fn default() -> Self {
        Self { settle: Mutex::default(), wake: tokio::sync::Notify::new(), epoch: Instant::now() }
    }
}

impl Pending {
    /// Runs `f` on the settle state with the current time.
    pub fn with<T>(&self, f: impl FnOnce(&mut Settle, Duration) -> T) -> T {
        let now = self.epoch.elapsed();
        f(&mut self.settle.lock().unwrap_or_else(|e| e.into_inner()), now)
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
        let err = |source| WatchError::Notify { path: root.display().to_string(), source };
        let handler = move |res: notify::Result<notify::Event>| {
            let ev = match res {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(error = %e, "file watch error; a full rescan follows");
                    pending.with(|s, _| s.overflowed());
                    pending.wake.notify_one();
                    return;
                }
            };
            if ev.need_rescan() {
                pending.with(|s, _| s.overflowed());
            } else if !matters(&ev.kind) {
                return;
            }
            let rels: Vec<RelPath> = ev.paths.iter().filter_map(|p| relative(&base, p, &ignore)).collect();
            if rels.is_empty() && !ev.need_rescan() {
                return;
            }
            pending.with(|s, now| rels.into_iter().for_each(|r| s.record(r, now)));
            pending.wake.notify_one();
        };
        let mut w = notify::recommended_watcher(handler).map_err(err)?;
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
    if rel.is_empty() || ignore.is_ignored(rel) {
        return None;
    }
    RelPath::parse(rel).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
