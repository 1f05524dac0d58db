//! Finds local changes: walks a share, skips what is unchanged (size, mtime, inode,
//! mode), chunks what changed, records new versions and tombstones in the index.

pub mod chunker;
pub mod ignore;
pub mod marker;

pub use ignore::Ignore;

use crate::config::ShareMode;
use crate::ids::ShortId;
use crate::index::{Entry, EntryKind, FileStamp, IndexError, LocalRecord, ShareIndex, VersionVector};
use crate::relpath::{symlink_stays_inside, RelPath};
use crate::util::{mode_of, mtime_of};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::{debug, warn};

/// Scan failures that stop the scan (per-file problems are logged and skipped).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The share root is missing, unreadable or not marked as the share's.
    #[error(transparent)]
    Root(#[from] marker::RootProblem),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The scan would record more deletions than the share's brake allows.
    #[error("a scan found {would} of the share's {live} files and folders gone ({brake}); nothing is recorded \
             deleted and the share is paused. If they were deleted on purpose, run `meshsync share confirm-deletes {share}`")]
    MassDelete {
        /// The share.
        share: String,
        /// Deletions the scan found.
        would: usize,
        /// Live entries before it.
        live: usize,
        /// The brake, in words.
        brake: String,
    },
}

/// What one scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// New or changed entries recorded.
    pub changed: usize,
    /// Tombstones recorded.
    pub deleted: usize,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
}

/// What a walk found: its figures, and the entries found gone.
#[derive(Default)]
struct Walk {
    stats: ScanStats,
    /// Entries found gone, to record as deleted once the brake allows it.
    gone: Vec<Entry>,
    gone_paths: HashSet<RelPath>,
}

/// Scans one share.
pub struct Scanner<'a> {
    /// The share's name.
    pub name: &'a str,
    /// Share root on disk.
    pub root: &'a Path,
    /// The share's index.
    pub index: &'a ShareIndex,
    /// This node, for version bumps.
    pub me: ShortId,
    /// Share mode (receive-only records local changes without announcing them).
    pub mode: ShareMode,
    /// Ignore rules.
    pub ignore: &'a Ignore,
    /// How many deletions one scan may record; `None`: the user confirmed them.
    pub brake: Option<crate::config::DeleteBrake>,
    /// Deletions recorded by scans a moment ago: the watcher hands a large delete
    /// over in several batches, and the brake judges them together.
    pub recent_deletes: usize,
    /// Where a walk hands a file changed in the last [`RECENT`] instead of
    /// recording it (the file watcher, which scans it once it is finished or
    /// quiet); `None`: recorded as found.
    pub defer: Option<&'a dyn Fn(RelPath)>,
    /// When the watcher handed over the paths of [`Scanner::scan_paths`]: a file
    /// written after that goes to `defer` instead of being recorded.
    pub taken_at: Option<std::time::SystemTime>,
}

/// File times come from the kernel's coarse clock, a few milliseconds behind: a
/// file written just after the watcher took its path may show an mtime a little
/// before that. A finished path is taken [`crate::watch::BATCH`] (20 ms) after
/// its last event, so its mtime lies further back than this.
const TAKEN_MARGIN: std::time::Duration = std::time::Duration::from_millis(10);

/// A file a walk finds changed less than this long ago may be in the middle of
/// being written: a full scan, or the walk of a new directory, that reads a file
/// between its truncation and its write would record it empty, and peers would
/// get the empty version before the real one. Such a file goes to the watcher,
/// whose own events say when it is finished.
pub const RECENT: std::time::Duration = std::time::Duration::from_secs(2);

/// True when `meta`'s mtime lies within [`RECENT`] of now (either side: a file
/// with a far-future mtime is recorded as it is, not deferred for ever).
fn changed_recently(meta: &std::fs::Metadata) -> bool {
    let Ok(m) = meta.modified() else { return false };
    let now = std::time::SystemTime::now();
    match now.duration_since(m) {
        Ok(ago) => ago < RECENT,
        Err(ahead) => ahead.duration() < RECENT,
    }
}

impl Walk {
    fn gone(&mut self, e: Entry) {
        if self.gone_paths.insert(e.path.clone()) {
            self.gone.push(e);
        }
    }
}

impl Scanner<'_> {
    /// Walks the whole share once.
    pub fn scan(&self) -> Result<ScanStats, ScanError> {
        self.check_root()?;
        let mut walk = Walk::default();
        self.walk(self.root.to_path_buf(), String::new(), &mut walk)?;
        // A disk unmounted during the walk left files unseen: not deleted.
        self.check_root()?;
        self.record_gone(walk, || self.index.live_count())
    }

    /// Looks at these paths only (the watcher's changes): each is scanned if present
    /// (a directory with everything under it, as files created before its watch
    /// existed raise no event), or recorded as deleted with everything under it.
    /// Anything the full walk would skip (ignored, inside an ignored directory,
    /// reached through a symlink, not a file, directory or symlink that stays in
    /// the share) counts as gone, as the full walk would record it.
    pub fn scan_paths(&self, paths: &[RelPath]) -> Result<ScanStats, ScanError> {
        use std::io::ErrorKind::{NotADirectory, NotFound, Other, PermissionDenied};
        self.check_root()?;
        let mut walk = Walk::default();
        let mut paths = paths.to_vec();
        paths.sort();
        paths.dedup();
        // Directories walked whole: paths below them are done (sorted, so a directory
        // comes before what is in it).
        let mut walked: Vec<String> = Vec::new();
        for rel in &paths {
            let r = rel.as_str();
            if walked.iter().any(|d| r.starts_with(d.as_str())) {
                continue;
            }
            let rec = self.index.get(rel)?;
            let old = rec.clone().filter(|o| !o.entry.deleted);
            let meta = if self.ignore.covers(r) {
                None
            } else {
                match crate::util::safe_join(self.root, rel).and_then(|abs| Ok((std::fs::symlink_metadata(&abs)?, abs)))
                {
                    Ok(m) => Some(m),
                    // Gone, or behind a symlink or a file where a directory should be
                    // (`safe_join` refuses those): not in the share.
                    Err(e) if matches!(e.kind(), NotFound | NotADirectory | PermissionDenied | Other) => None,
                    // Unreadable right now: the next event or full scan looks again.
                    Err(e) => {
                        debug!(path = %rel, error = %e, "skipped for now");
                        continue;
                    }
                }
            };
            let kept = match &meta {
                // Written again since the watcher handed it over (truncated for a
                // rewrite, say): its new events bring it back once it is finished.
                Some((m, _)) if m.is_file() && self.changed_since_taken(m, rec.as_ref()) => {
                    if let Some(defer) = self.defer {
                        defer(rel.clone());
                    }
                    continue;
                }
                Some((m, abs)) if m.is_dir() || m.is_file() || m.file_type().is_symlink() => {
                    self.look_at(abs, rel.clone(), m, rec, &mut walk)?
                }
                _ => false,
            };
            if kept && meta.as_ref().is_some_and(|(m, _)| m.is_dir()) {
                if let Some((_, abs)) = meta {
                    self.walk(abs, r.to_string(), &mut walk)?;
                }
                walked.push(format!("{r}/"));
                continue;
            }
            // Not a directory (any more): nothing recorded below it stays.
            if old.as_ref().is_some_and(|o| o.entry.kind == EntryKind::Dir) {
                self.gone_below(rel, &mut walk)?;
            }
            if let (false, Some(o)) = (kept, old) {
                walk.gone(o.entry);
            }
        }
        self.record_gone(walk, || self.index.live_count())
    }

    /// True when a file the watcher handed over at [`Scanner::taken_at`] changed
    /// after that (by its mtime, less [`TAKEN_MARGIN`], and not ahead of now) and
    /// is not what the index holds.
    fn changed_since_taken(&self, meta: &std::fs::Metadata, rec: Option<&LocalRecord>) -> bool {
        let (Some(taken), Some(_)) = (self.taken_at, self.defer) else { return false };
        let unchanged = rec.and_then(|r| r.file_stamp()) == Some(FileStamp::of(meta));
        // An mtime ahead of now is one set by hand (`touch -d`, a restore), not a
        // write under way: deferred, it would come back with the same mtime for
        // ever.
        let now = std::time::SystemTime::now();
        !unchanged && meta.modified().is_ok_and(|m| m + TAKEN_MARGIN > taken && m <= now + TAKEN_MARGIN)
    }

    /// Fails the scan if the share root cannot be read or lost its marker: an
    /// unmounted root must not read as every file deleted. (Which marker, on which
    /// filesystem, the share's worker checks before it scans.)
    fn check_root(&self) -> Result<(), ScanError> {
        use marker::RootProblem;
        let (root, name) = (self.root.to_path_buf(), self.name.to_string());
        std::fs::read_dir(self.root).map(drop).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RootProblem::Missing(root.clone(), name.clone()),
            _ => RootProblem::Unreadable(root.clone(), e),
        })?;
        if !marker::marker_path(self.root).is_file() {
            return Err(RootProblem::NoMarker(root, name).into());
        }
        Ok(())
    }

    /// Scans everything below `dir` (share path `rel_dir`), one directory at a
    /// time: its listing against the index's records of its names. A name the
    /// index knows that the listing lacks (or skips) is gone, with everything
    /// recorded below it; a directory that cannot be read keeps what the index says.
    fn walk(&self, dir: std::path::PathBuf, rel_dir: String, walk: &mut Walk) -> Result<(), ScanError> {
        let mut stack = vec![(dir, rel_dir)];
        while let Some((dir, rel_dir)) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot read directory; its contents are left as they are");
                    continue;
                }
            };
            let mut known = self.index.children(&rel_dir)?;
            for de in rd.flatten() {
                let Some(name) = de.file_name().to_str().map(str::to_string) else {
                    warn!(path = %de.path().display(), "skipping a name that is not UTF-8");
                    continue;
                };
                let rel_s = if rel_dir.is_empty() { name.clone() } else { format!("{rel_dir}/{name}") };
                if self.ignore.is_ignored(&rel_s) {
                    continue;
                }
                let Ok(rel) = RelPath::parse(&rel_s) else {
                    continue;
                };
                // Relative to the directory read: no walk of the whole path again.
                let meta = match de.metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                let ft = meta.file_type();
                if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                    continue;
                }
                let child = known.remove(&name).unwrap_or_default();
                let was_dir = child.below || child.record.as_ref().is_some_and(|r| r.entry.kind == EntryKind::Dir);
                let unchanged = child.record.as_ref().and_then(|r| r.file_stamp()) == Some(FileStamp::of(&meta));
                match self.defer {
                    // Seen (what the index says stays) and left to the watcher.
                    Some(defer) if ft.is_file() && !unchanged && changed_recently(&meta) => defer(rel.clone()),
                    _ => {
                        self.look_at(&de.path(), rel.clone(), &meta, child.record, walk)?;
                    }
                }
                if ft.is_dir() {
                    stack.push((de.path(), rel_s));
                } else if was_dir {
                    self.gone_below(&rel, walk)?;
                }
            }
            for (name, child) in known {
                if let Some(rec) = child.record {
                    self.unseen(rec, walk);
                }
                if child.below {
                    let rel_s = if rel_dir.is_empty() { name } else { format!("{rel_dir}/{name}") };
                    if let Ok(rel) = RelPath::parse(&rel_s) {
                        self.gone_below(&rel, walk)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Scans one present path, given this node's record of it; returns whether it
    /// was kept (a skipped one is gone, if it was recorded).
    fn look_at(
        &self,
        abs: &Path,
        rel: RelPath,
        meta: &std::fs::Metadata,
        old: Option<LocalRecord>,
        walk: &mut Walk,
    ) -> Result<bool, ScanError> {
        let rel_s = rel.as_str().to_string();
        match self.scan_one(abs, rel, meta, old.as_ref(), &mut walk.stats) {
            Ok(true) => Ok(true),
            Ok(false) => {
                if let Some(o) = old {
                    self.unseen(o, walk);
                }
                Ok(false)
            }
            // Only a peer's forged counters get a path there: the file stays as it
            // is on disk, unrecorded, and nothing of the mesh replaces it.
            Err(ScanFileError::Index(IndexError::Counter(e))) => {
                warn!(path = %rel_s, error = %e, "change not recorded");
                Ok(true)
            }
            Err(ScanFileError::Index(e)) => Err(e.into()),
            Err(ScanFileError::Io(e)) => {
                // Unreadable right now: keep what the index says, try next scan.
                debug!(path = %rel_s, error = %e, "skipped for now");
                Ok(true)
            }
        }
    }

    /// Notes a record the walk did not find as gone, unless it is a tombstone
    /// already or ignored.
    fn unseen(&self, rec: LocalRecord, walk: &mut Walk) {
        if !rec.entry.deleted && !self.ignore.is_ignored(rec.entry.path.as_str()) {
            walk.gone(rec.entry);
        }
    }

    /// Notes everything recorded below `dir` as gone (it is no directory now, or
    /// not there at all).
    fn gone_below(&self, dir: &RelPath, walk: &mut Walk) -> Result<(), ScanError> {
        for rec in self.index.under(dir)? {
            self.unseen(rec, walk);
        }
        Ok(())
    }

    /// Records what the walk found gone as deleted, unless that is more than the
    /// brake allows of `live` entries (read only when the count could matter): an
    /// emptied folder, a wrong mount or a script gone astray is stopped here, before
    /// one deletion reaches a peer.
    fn record_gone(
        &self,
        mut walk: Walk,
        live: impl FnOnce() -> Result<usize, IndexError>,
    ) -> Result<ScanStats, ScanError> {
        let would = walk.gone.len();
        let (recent, total) = (self.recent_deletes, self.recent_deletes + would);
        if let Some(brake) = self.brake.filter(|b| would > 0 && b.may_stop(total)) {
            let live = live()? + recent;
            if !brake.allows(total, live) {
                return Err(ScanError::MassDelete {
                    share: self.name.into(),
                    would: total,
                    live,
                    brake: brake.describe(),
                });
            }
        }
        for e in std::mem::take(&mut walk.gone) {
            match self.tombstone(&e) {
                Ok(()) => walk.stats.deleted += 1,
                Err(IndexError::Counter(c)) => warn!(path = %e.path, error = %c, "delete not recorded"),
                Err(err) => return Err(err.into()),
            }
        }
        Ok(walk.stats)
    }

    fn tombstone(&self, entry: &Entry) -> Result<(), IndexError> {
        let mut e = entry.clone();
        e.deleted = true;
        e.blocks.clear();
        e.size = 0;
        self.record(&entry.version, e, 0)
    }

    fn record(&self, base: &VersionVector, mut e: Entry, ino: u64) -> Result<(), IndexError> {
        let local_change = self.mode == ShareMode::ReceiveOnly;
        if local_change {
            // Receive-only: keep the version we had; the change is only recorded.
            e.version = base.clone();
        } else {
            e.version = base.bump(self.me)?;
            e.modified_by = self.me;
        }
        self.index.put(e, ino, local_change)?;
        Ok(())
    }

    /// Returns Ok(true) if the path is present (changed or not), Ok(false) if skipped.
    fn scan_one(
        &self,
        abs: &Path,
        rel: RelPath,
        meta: &std::fs::Metadata,
        old: Option<&LocalRecord>,
        stats: &mut ScanStats,
    ) -> Result<bool, ScanFileError> {
        let ft = meta.file_type();
        let mode = mode_of(meta);
        let mtime = mtime_of(meta);
        let ino = meta.ino();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(abs)?;
            let Some(target) = target.to_str().map(str::to_string) else {
                return Ok(false);
            };
            if !symlink_stays_inside(&rel, &target) {
                warn!(path = %rel, target, "skipping symlink whose target leaves the share");
                return Ok(false);
            }
            EntryKind::Symlink { target }
        } else {
            EntryKind::File
        };
        // The file as indexed, untouched since (only its mode may have moved).
        let unchanged_file = old.and_then(|o| o.file_stamp()) == Some(FileStamp::of(meta));
        if let Some(o) = old {
            let e = &o.entry;
            let same = !e.deleted
                && e.kind == kind
                && e.mode == mode
                && match kind {
                    EntryKind::Dir | EntryKind::Symlink { .. } => true,
                    EntryKind::File => unchanged_file,
                };
            if same {
                return Ok(true);
            }
        }
        let blocks = if kind == EntryKind::File {
            // Reuse the blocks when only the mode changed.
            match old {
                Some(o) if unchanged_file => o.entry.blocks.clone(),
                _ => {
                    let f = std::fs::File::open(abs)?;
                    let blocks = chunker::chunk_reader(&f, meta.len())?;
                    // Changed while we read it: it is still being written, next scan.
                    // (Replaced meanwhile: the next look finds another inode.)
                    let after = f.metadata()?;
                    if after.len() != meta.len() || mtime_of(&after) != mtime {
                        return Ok(true);
                    }
                    stats.hashed_bytes += meta.len();
                    blocks
                }
            }
        } else {
            Vec::new()
        };
        let size = if kind == EntryKind::File { meta.len() } else { 0 };
        let e = Entry {
            path: rel,
            kind,
            size,
            mode,
            mtime,
            version: Default::default(),
            modified_by: self.me,
            deleted: false,
            blocks,
        };
        // A resurrected tombstone bumps the tombstone's version, so it dominates it. A
        // new path of a share added again starts above its old counters; a receive-only
        // change keeps the version it found (none).
        let base = match old {
            Some(o) => o.entry.version.clone(),
            None if self.mode == ShareMode::ReceiveOnly => Default::default(),
            None => self.index.new_path_base(self.me)?,
        };
        self.record(&base, e, ino)?;
        stats.changed += 1;
        Ok(true)
    }
}

enum ScanFileError {
    Io(std::io::Error),
    Index(IndexError),
}

impl From<std::io::Error> for ScanFileError {
    fn from(e: std::io::Error) -> Self {
        ScanFileError::Io(e)
    }
}

impl From<IndexError> for ScanFileError {
    fn from(e: IndexError) -> Self {
        ScanFileError::Index(e)
    }
}

#[cfg(test)]
mod tests;
