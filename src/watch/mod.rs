//! Watches a share for changes (inotify through `notify`) so a local change is
//! scanned at once instead of at the next full rescan, and only the changed paths
//! are looked at: a full walk of a share with millions of files is minutes of
//! `stat`, which the hourly rescan still does to catch missed events.
//!
//! `settle` decides when a changed path is scanned: a file closed after writing or
//! moved in at once, one still being written once quiet. The scanner checks size
//! and mtime again after hashing as well, and partial-download names
//! (`*.filepart`, ...) are ignored whatever the timing; rsync's temp names
//! (`.name.XXXXXX`) wait for quiet even when closed. `config::schedule` says
//! when a share may transfer.

mod settle;

pub use settle::{Change, Settle, BATCH, MAX_SETTLE, SETTLE};

use crate::relpath::RelPath;
use crate::scan::Ignore;
use notify::event::ModifyKind;
use notify::{RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

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

/// A change this node makes itself, whose event the watch is to drop: scanning it
/// would only find what the index already says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ours {
    /// A downloaded file renamed into place, its handle closed after the rename.
    RenamedInto,
    /// A downloaded file renamed into place after its handle was closed (a batch
    /// of small files): no close follows.
    Placed,
    /// A path deleted because the mesh deleted it.
    Removed,
}

/// Most of this node's own changes waiting for their event; past it the oldest
/// expectations are simply forgotten (their events are then scanned, as before).
const MAX_OURS: usize = 100_000;

/// An event of this node's own still to come at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The change itself.
    Change(Ours),
    /// What follows the half of a rename that was ours: the combined event notify
    /// sends when it saw both halves (only when `.meshsync/`, where temp files and
    /// kept versions live, is watched after all: see [`ShareWatch::start`]), and
    /// the close of the download's temp file, whose handle the transfer holds
    /// until after the rename.
    Tail,
    /// Only that combined event (the handle was closed before the rename).
    Both,
}

/// The events of one share, shared between notify's thread and the share worker.
#[derive(Debug)]
pub struct Pending {
    settle: Mutex<Settle>,
    /// This node's own changes whose events are still to come.
    ours: Mutex<HashMap<RelPath, Expect>>,
    /// Woken when a path is due before the deadline the worker sleeps until, or
    /// events were lost.
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

    /// Notes a change this node is about to make at `path`: its events are dropped
    /// (a rename's and the close that follows it). Only those: a user's write to
    /// the path right after it raises other events (create, write, close), which
    /// are not dropped.
    pub fn ours(&self, path: RelPath, what: Ours) {
        let mut m = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_OURS {
            m.clear();
        }
        m.insert(path, Expect::Change(what));
    }

    /// True when `path`'s event of kind `kind` is one this node expected.
    fn is_ours(&self, path: &RelPath, kind: &notify::EventKind) -> bool {
        use notify::event::RenameMode::{Any, Both, From, To};
        use notify::event::{AccessKind, AccessMode};
        use notify::EventKind::{Access, Modify, Remove};
        use Expect::{Both as BothNext, Change, Tail};
        let mut m = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        // What is expected after this event, if it is ours.
        let then = match (m.get(path), kind) {
            (Some(Change(Ours::RenamedInto)), Modify(ModifyKind::Name(To))) => Some(Some(Tail)),
            (Some(Change(Ours::RenamedInto)), Modify(ModifyKind::Name(Both | Any))) => Some(None),
            (Some(Change(Ours::Placed)), Modify(ModifyKind::Name(To))) => Some(Some(BothNext)),
            (Some(Change(Ours::Placed) | BothNext), Modify(ModifyKind::Name(Both | Any))) => Some(None),
            // A deleted file kept as a version is renamed away, not removed.
            (Some(Change(Ours::Removed)), Remove(_)) => Some(None),
            (Some(Change(Ours::Removed)), Modify(ModifyKind::Name(From))) => Some(Some(Tail)),
            (Some(Change(Ours::Removed)), Modify(ModifyKind::Name(Both | Any))) => Some(None),
            (Some(Tail), Modify(ModifyKind::Name(Both))) => Some(Some(Tail)),
            (Some(Tail), Access(AccessKind::Close(AccessMode::Write))) => Some(None),
            // Anything else is the user's, and so is all that follows.
            (Some(Tail | BothNext), _) => {
                m.remove(path);
                None
            }
            _ => None,
        };
        match then {
            Some(Some(next)) => m.insert(path.clone(), next).is_some(),
            Some(None) => m.remove(path).is_some(),
            None => false,
        }
    }

    /// Sets the share's `min_interval` (see [`Settle::set_min_interval`]).
    pub fn set_min_interval(&self, min_interval: Duration) {
        self.with(|s, _| s.set_min_interval(min_interval));
    }

    /// True once a watch was refused after the start (see the field).
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The tokio instant at which the next path is due, if any waits.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        let due = self.with(|s, _| s.next_due())?;
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
            let mut wake = false;
            for (i, p) in ev.paths.iter().enumerate() {
                let Some(change) = change_of(&ev.kind, i) else { continue };
                let Some(rel) = relative(&base, p, &ignore) else { continue };
                let change = match change {
                    Change::Finished if looks_like_rsync_temp(&rel) => Change::Busy,
                    c => c,
                };
                if pending.is_ours(&rel, &ev.kind) {
                    continue;
                }
                if change == Change::Finished {
                    debug!(path = %rel, "finished");
                }
                // Only an event due before the worker's deadline wakes it: a burst
                // of 100 000 events costs a few wake-ups, not 100 000 passes over
                // the table.
                wake |= pending.with(|s, now| s.record(rel, change, now));
            }
            if wake {
                pending.wake.notify_one();
            }
        };
        // Not following symlinks: a link to a folder outside the share must not put
        // that folder's events (and files) into the share.
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut w = notify::RecommendedWatcher::new(handler, config).map_err(err)?;
        w.watch(root, RecursiveMode::Recursive).map_err(err)?;
        // Nothing in the node's own folder is a change to scan: unwatched, the temp
        // files of downloads raise no events (five per small file: create, write,
        // chmod, mtime, close), only their renames into the share. It exists
        // before the watch starts (the share's marker), so notify never adds it back.
        let _ = w.unwatch(&root.join(crate::relpath::PRIVATE_DIR));
        Ok(Self { _watcher: w })
    }
}

/// What an event of `kind` says of its `i`-th path; `None` for reads, which change
/// nothing. inotify's IN_CLOSE_WRITE and IN_MOVED_TO (notify's `Close(Write)` and
/// `Name(To)`, or the second path of `Name(Both)`) mean the file is complete.
fn change_of(kind: &notify::EventKind, i: usize) -> Option<Change> {
    use notify::event::{AccessKind, AccessMode, RenameMode};
    use notify::EventKind::{Access, Modify};
    Some(match kind {
        Access(AccessKind::Close(AccessMode::Write)) => Change::Finished,
        Access(_) => return None,
        Modify(ModifyKind::Name(RenameMode::To)) => Change::Finished,
        Modify(ModifyKind::Name(RenameMode::Both)) if i == 1 => Change::Finished,
        Modify(ModifyKind::Metadata(_)) => Change::Metadata,
        _ => Change::Busy,
    })
}

/// True for a name like rsync's temp files (`.name.Ab12Cd`: a dot, the final
/// name, a dot and six letters or digits). rsync closes one after writing and
/// renames it at once: shipped as finished, it would cross the wire and then be
/// deleted everywhere. Such a file waits for quiet like one still being written;
/// by then it is renamed and gone. (Not ignored: a user's `.notes.backup` looks the
/// same and must still sync, a second later.)
fn looks_like_rsync_temp(rel: &RelPath) -> bool {
    let name = rel.as_str().rsplit('/').next().unwrap_or_default();
    let Some(rest) = name.strip_prefix('.') else { return false };
    match rest.rsplit_once('.') {
        Some((stem, tail)) => !stem.is_empty() && tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_alphanumeric()),
        None => false,
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
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
    use notify::EventKind;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn rename(mode: RenameMode) -> EventKind {
        EventKind::Modify(ModifyKind::Name(mode))
    }

    #[test]
    fn this_nodes_own_change_is_dropped_once_and_other_events_are_kept() {
        let p = Pending::default();
        let f = RelPath::parse("f").unwrap();
        let both = rename(RenameMode::Both);
        assert!(!p.is_ours(&f, &both), "nothing expected yet");
        p.ours(f.clone(), Ours::RenamedInto);
        assert!(!p.is_ours(&f, &EventKind::Create(CreateKind::File)), "a user's write is not ours");
        assert!(!p.is_ours(&f, &EventKind::Remove(RemoveKind::File)), "not the change expected");
        assert!(p.is_ours(&f, &both));
        assert!(!p.is_ours(&f, &both), "only the one event");
        p.ours(f.clone(), Ours::Removed);
        assert!(p.is_ours(&f, &EventKind::Remove(RemoveKind::Any)));
    }

    #[test]
    fn the_events_of_an_own_rename_are_dropped_and_nothing_after_them() {
        let p = Pending::default();
        let f = RelPath::parse("f").unwrap();
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        // A download renamed into place: notify reports `To`, then `Both`; the
        // temp file's handle is closed after the rename, under the new name.
        p.ours(f.clone(), Ours::RenamedInto);
        assert!(p.is_ours(&f, &rename(RenameMode::To)));
        assert!(p.is_ours(&f, &rename(RenameMode::Both)));
        assert!(p.is_ours(&f, &close_write));
        assert!(!p.is_ours(&f, &rename(RenameMode::Both)), "a user's rename onto it later is not ours");
        assert!(!p.is_ours(&f, &close_write), "nor a user's write");
        // A version kept: `From`, then `Both`.
        p.ours(f.clone(), Ours::Removed);
        assert!(p.is_ours(&f, &rename(RenameMode::From)));
        assert!(p.is_ours(&f, &rename(RenameMode::Both)));
        // A file closed before its rename: its rename's two events, and nothing after.
        p.ours(f.clone(), Ours::Placed);
        assert!(p.is_ours(&f, &rename(RenameMode::To)));
        assert!(p.is_ours(&f, &rename(RenameMode::Both)));
        assert!(!p.is_ours(&f, &close_write), "a user's write after it");
        p.ours(f.clone(), Ours::Placed);
        assert!(p.is_ours(&f, &rename(RenameMode::To)));
        assert!(!p.is_ours(&f, &close_write), "no combined event came: the close is the user's");
        assert!(!p.is_ours(&f, &rename(RenameMode::Both)));
        // Whatever else comes after the rename is the user's, all of it.
        p.ours(f.clone(), Ours::RenamedInto);
        assert!(p.is_ours(&f, &rename(RenameMode::To)));
        assert!(!p.is_ours(&f, &EventKind::Modify(ModifyKind::Data(DataChange::Any))));
        assert!(!p.is_ours(&f, &close_write));
        assert!(!p.is_ours(&f, &rename(RenameMode::Both)));
    }

    #[test]
    fn closing_after_a_write_and_moving_in_mean_finished() {
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(change_of(&close_write, 0), Some(Change::Finished));
        assert_eq!(change_of(&rename(RenameMode::To), 0), Some(Change::Finished));
        let both = rename(RenameMode::Both);
        assert_eq!(change_of(&both, 0), Some(Change::Busy), "the old name is gone");
        assert_eq!(change_of(&both, 1), Some(Change::Finished), "the new name");
        assert_eq!(change_of(&rename(RenameMode::From), 0), Some(Change::Busy));
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(change_of(&write, 0), Some(Change::Busy), "still being written");
        assert_eq!(change_of(&EventKind::Create(CreateKind::File), 0), Some(Change::Busy));
        assert_eq!(change_of(&EventKind::Create(CreateKind::Folder), 0), Some(Change::Busy));
        assert_eq!(change_of(&EventKind::Remove(RemoveKind::File), 0), Some(Change::Busy));
        let attrib = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        assert_eq!(change_of(&attrib, 0), Some(Change::Metadata));
        let close_read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(change_of(&close_read, 0), None, "reads change nothing");
        assert_eq!(change_of(&EventKind::Access(AccessKind::Open(AccessMode::Any)), 0), None);
    }

    #[test]
    fn rsync_temp_names_wait_for_quiet() {
        let t = |s: &str| looks_like_rsync_temp(&RelPath::parse(s).unwrap());
        assert!(t(".index.html.Xy12Ab") && t("site/.a.0AbCdE"), "rsync's temp names");
        assert!(!t("index.html") && !t(".bashrc") && !t(".index.html") && !t("a/.x.tar.gz"));
        assert!(!t("..Ab12Cd"), "no final name");
        assert!(!t(".a.Ab-2Cd") && !t(".a.Ab12C") && !t("x.index.Ab12Cd"));
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
