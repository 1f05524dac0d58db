//! Finds local changes: walks a share, skips what is unchanged (size, mtime, inode,
//! mode), chunks what changed, records new versions and tombstones in the index.

pub mod chunker;
pub mod ignore;

pub use ignore::Ignore;

use crate::config::ShareMode;
use crate::index::{symlink_stays_inside, Entry, EntryKind, IndexError, RelPath, ShareIndex, ShortId, VersionVector};
use crate::util::{mode_of, mtime_of};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::{debug, warn};

/// Scan failures that stop the scan (per-file problems are logged and skipped).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The share root is missing or unreadable.
    #[error("share root {0}: {1}")]
    Root(String, std::io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
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

/// Scans one share.
pub struct Scanner<'a> {
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
}

impl Scanner<'_> {
    /// Walks the whole share once.
    pub fn scan(&self) -> Result<ScanStats, ScanError> {
        std::fs::read_dir(self.root).map_err(|e| ScanError::Root(self.root.display().to_string(), e))?;
        let mut stats = ScanStats::default();
        let mut seen = HashSet::new();
        let mut unreadable: Vec<String> = Vec::new();
        let mut stack = vec![(self.root.to_path_buf(), String::new())];
        while let Some((dir, rel_dir)) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot read directory; its contents are left as they are");
                    unreadable.push(rel_dir.clone());
                    continue;
                }
            };
            for de in rd.flatten() {
                let Some(name) = de.file_name().to_str().map(str::to_string) else {
                    warn!(path = %de.path().display(), "skipping a name that is not UTF-8");
                    continue;
                };
                let rel_s = if rel_dir.is_empty() { name } else { format!("{rel_dir}/{name}") };
                if self.ignore.is_ignored(&rel_s) {
                    continue;
                }
                let Ok(rel) = RelPath::parse(&rel_s) else {
                    continue;
                };
                let meta = match std::fs::symlink_metadata(de.path()) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                let ft = meta.file_type();
                if ft.is_dir() {
                    stack.push((de.path(), rel_s.clone()));
                } else if !(ft.is_file() || ft.is_symlink()) {
                    continue;
                }
                match self.scan_one(&de.path(), rel.clone(), &meta, &mut stats) {
                    Ok(true) => {
                        seen.insert(rel_s);
                    }
                    Ok(false) => {}
                    Err(ScanFileError::Index(e)) => return Err(e.into()),
                    Err(ScanFileError::Io(e)) => {
                        // Unreadable right now: keep what the index says, try next scan.
                        debug!(path = %rel, error = %e, "skipped for now");
                        seen.insert(rel_s);
                    }
                }
            }
        }
        for rec in self.index.all()? {
            let p = rec.entry.path.as_str();
            if rec.entry.deleted || seen.contains(p) || self.ignore.is_ignored(p) {
                continue;
            }
            if unreadable.iter().any(|d| d.is_empty() || p.starts_with(&format!("{d}/"))) {
                continue;
            }
            let mut e = rec.entry.clone();
            e.deleted = true;
            e.blocks.clear();
            e.size = 0;
            self.record(&rec.entry.version, e, 0)?;
            stats.deleted += 1;
        }
        Ok(stats)
    }

    fn record(&self, base: &VersionVector, mut e: Entry, ino: u64) -> Result<(), IndexError> {
        let local_change = self.mode == ShareMode::ReceiveOnly;
        if local_change {
            // Receive-only: keep the version we had; the change is only recorded.
            e.version = base.clone();
        } else {
            e.version = base.bump(self.me);
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
        stats: &mut ScanStats,
    ) -> Result<bool, ScanFileError> {
        let old = self.index.get(&rel)?;
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
        if let Some(o) = &old {
            let e = &o.entry;
            let same = !e.deleted
                && e.kind == kind
                && e.mode == mode
                && match kind {
                    EntryKind::Dir | EntryKind::Symlink { .. } => true,
                    EntryKind::File => e.size == meta.len() && e.mtime == mtime && o.ino == ino,
                };
            if same {
                return Ok(true);
            }
        }
        let blocks = if kind == EntryKind::File {
            // Reuse the blocks when only the mode changed.
            match &old {
                Some(o)
                    if !o.entry.deleted
                        && o.entry.kind == kind
                        && o.entry.size == meta.len()
                        && o.entry.mtime == mtime
                        && o.ino == ino =>
                {
                    o.entry.blocks.clone()
                }
                _ => {
                    let f = std::fs::File::open(abs)?;
                    let blocks = chunker::chunk_reader(std::io::BufReader::with_capacity(1 << 20, f), meta.len())?;
                    // Changed while we read it: it is still being written, next scan.
                    let after = std::fs::symlink_metadata(abs)?;
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
        // A resurrected tombstone bumps the tombstone's version, so it dominates it.
        let base = old.map(|o| o.entry.version).unwrap_or_default();
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
