//! Applying an action on disk: a file is assembled in a temp file under
//! `.meshsync/tmp/` (local chunks first, then the swarm), verified, fsynced, given
//! mode and mtime, and renamed into place atomically; never over a file changed
//! since the scan.

use super::local::Verify;
use super::{io_err, ApplyError, ShareCtx};
use super::{space, versions};
use crate::config::Versioning;
use crate::ids::ChunkHash;
use crate::index::{Entry, EntryKind, FileStamp, LocalRecord};
use crate::relpath::RelPath;
use crate::stats::Counters;
use crate::sync::Action;
use crate::util::{free_space, fsync_dir, read_vec_at, set_mtime};
use crate::watch::Ours;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tracing::{debug, info, warn};

impl ShareCtx {
    /// Carries out an action that needs no peer (anything but a fetch), on this thread.
    pub fn execute_local(&self, action: Action) -> Result<(), ApplyError> {
        let rec = self.index.get(action.path())?;
        match action {
            Action::Merge { target } => {
                self.index.put(target, rec.map(|r| r.ino).unwrap_or(0), false)?;
            }
            Action::KeepLocal { target } => {
                info!(share = %self.name, path = %target.path,
                    "receive-only: deleted on the mesh, the local change is kept (`meshsync revert {}` takes the mesh's version)",
                    self.name);
            }
            Action::Adopt { target } => {
                let abs = self.abs(&target.path)?;
                if !self.disk_matches(rec.as_ref(), &abs) {
                    return Err(ApplyError::LocalChanged(target.path));
                }
                let mut ino = 0;
                if !target.deleted {
                    // Only what differs is set: a change of nothing still raises a file
                    // event, and the watcher would scan the path again (two nodes that
                    // indexed the same million files adopt each one).
                    let meta = std::fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
                    if !meta.file_type().is_symlink() && crate::util::mode_of(&meta) != safe_mode(target.mode) {
                        std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(safe_mode(target.mode)))
                            .map_err(io_err(&abs))?;
                    }
                    if target.kind == EntryKind::File && crate::index::Mtime::of(&meta) != target.mtime {
                        set_mtime(&abs, target.mtime).map_err(io_err(&abs))?;
                    }
                    ino = meta.ino();
                }
                self.index.put(as_applied(target), ino, false)?;
            }
            Action::MakeDir { target } => {
                let abs = self.abs(&target.path)?;
                match std::fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(ApplyError::LocalChanged(target.path)),
                    Err(_) => self.create_below_root(&abs)?,
                }
                std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(safe_mode(target.mode)))
                    .map_err(io_err(&abs))?;
                let ino = std::fs::metadata(&abs).map(|m| m.ino()).unwrap_or(0);
                self.index.put(as_applied(target), ino, false)?;
            }
            Action::MakeSymlink { target, conflict } => {
                let EntryKind::Symlink { target: link_to } = &target.kind else {
                    return Err(ApplyError::Unsafe("symlink action for a non-symlink".into()));
                };
                let abs = self.abs(&target.path)?;
                if !self.disk_matches(rec.as_ref(), &abs) {
                    return Err(ApplyError::LocalChanged(target.path));
                }
                self.ensure_parent(&abs)?;
                if std::fs::symlink_metadata(&abs).is_ok() {
                    self.set_aside(&abs, conflict.as_ref())?;
                }
                std::os::unix::fs::symlink(link_to, &abs).map_err(io_err(&abs))?;
                let ino = std::fs::symlink_metadata(&abs).map(|m| m.ino()).unwrap_or(0);
                self.index.put(target, ino, false)?;
            }
            Action::Delete { target } => {
                let abs = self.abs(&target.path)?;
                if !self.disk_matches(rec.as_ref(), &abs) {
                    return Err(ApplyError::LocalChanged(target.path));
                }
                match std::fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {
                        if let Err(e) = std::fs::remove_dir(&abs) {
                            // Files the index tracks inside: their deletes come
                            // later (the pass plans the directory again after them).
                            // Unknown or ignored files: the directory stays.
                            if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
                                && self.holds_only_tracked(&target.path, &abs)
                            {
                                debug!(share = %self.name, path = %target.path, "directory not removed yet: its files go first");
                            } else {
                                warn!(share = %self.name, path = %target.path, error = %e, "directory not removed");
                            }
                            return Ok(());
                        }
                    }
                    Ok(_) => {
                        self.watched.ours(target.path.clone(), Ours::Removed);
                        match self.versioning {
                            Versioning::Trash { .. } => {
                                versions::keep_instead_of_delete(&self.root, &target.path, &abs)
                                    .map_err(io_err(&abs))?
                            }
                            Versioning::Off => std::fs::remove_file(&abs).map_err(io_err(&abs))?,
                        }
                    }
                    Err(_) => {}
                }
                if let Some(parent) = abs.parent() {
                    let _ = fsync_dir(parent);
                }
                self.index.put(target, 0, false)?;
            }
            Action::Fetch { target, .. } => {
                return Err(ApplyError::Unsafe(format!("{}: a fetch needs the async executor", target.path)))
            }
        }
        Ok(())
    }

    /// True if everything in the directory `dir` (at `abs`) is a path the index
    /// holds as present.
    fn holds_only_tracked(&self, dir: &RelPath, abs: &Path) -> bool {
        let Ok(children) = std::fs::read_dir(abs) else { return false };
        children.into_iter().all(|c| {
            let Ok(c) = c else { return false };
            let name = c.file_name();
            let Some(child) = name.to_str().and_then(|n| RelPath::parse(&format!("{}/{n}", dir.as_str())).ok()) else {
                return false;
            };
            matches!(self.index.get(&child), Ok(Some(r)) if !r.entry.deleted)
        })
    }

    /// True when the disk still shows what the index recorded (nothing new to scan).
    pub(super) fn disk_matches(&self, rec: Option<&LocalRecord>, abs: &Path) -> bool {
        let meta = std::fs::symlink_metadata(abs).ok();
        let rec = rec.filter(|r| !r.entry.deleted);
        let matches = Self::matches(rec, meta.as_ref(), abs);
        if !matches {
            debug!(path = %abs.display(), recorded = ?rec.and_then(|r| r.file_stamp()),
                on_disk = ?meta.as_ref().map(FileStamp::of), "the disk differs from the index");
        }
        matches
    }

    fn matches(rec: Option<&LocalRecord>, meta: Option<&std::fs::Metadata>, abs: &Path) -> bool {
        match (rec, meta) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(r), Some(m)) => match &r.entry.kind {
                EntryKind::Dir => m.is_dir(),
                EntryKind::Symlink { target } => {
                    m.file_type().is_symlink()
                        && std::fs::read_link(abs).ok().and_then(|t| t.to_str().map(|s| s == target)).unwrap_or(false)
                }
                EntryKind::File => m.is_file() && r.file_stamp() == Some(FileStamp::of(m)),
            },
        }
    }

    pub(super) fn ensure_parent(&self, abs: &Path) -> Result<(), ApplyError> {
        if let Some(parent) = abs.parent() {
            if !parent.is_dir() {
                self.create_below_root(parent)?;
            }
        }
        Ok(())
    }

    /// Creates a directory and its missing parents inside the share, never the
    /// share's folder itself: a root that vanished (an unmounted disk) is not made
    /// again and filled.
    pub(super) fn create_below_root(&self, dir: &Path) -> Result<(), ApplyError> {
        if !self.root.is_dir() {
            let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "the share folder is gone");
            return Err(io_err(&self.root)(gone));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))
    }

    /// Moves what is at `abs` to its conflict name (or removes it when it is not worth keeping).
    fn set_aside(&self, abs: &Path, conflict: Option<&RelPath>) -> Result<(), ApplyError> {
        match conflict {
            Some(c) => {
                let to = self.abs(c)?;
                std::fs::rename(abs, &to).map_err(io_err(abs))?;
                Counters::add(&self.counters.conflicts, 1);
                info!(share = %self.name, copy = %c, "conflict: the losing version is kept as a copy");
            }
            None => {
                let m = std::fs::symlink_metadata(abs).map_err(io_err(abs))?;
                if m.is_dir() {
                    std::fs::remove_dir(abs).map_err(io_err(abs))?;
                } else {
                    std::fs::remove_file(abs).map_err(io_err(abs))?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn fetch(
        &self,
        target: Entry,
        sources: Vec<crate::ids::NodeId>,
        conflict: Option<RelPath>,
    ) -> Result<(), ApplyError> {
        let abs = self.abs(&target.path)?;
        let started = std::time::Instant::now();
        let free = free_space(&self.root).map_err(io_err(&self.root))?;
        let tmp = self.temp_path(&target);
        // What the file's data needs (all-zero chunks stay holes), less what a
        // temp file left by an earlier attempt has already: its length says
        // nothing, it was set to the full size at once.
        let runs = space::data_runs(&target);
        let need = runs.iter().map(|r| r.1).sum::<u64>().saturating_sub(space::allocated(&tmp));
        if free < need.saturating_add(self.min_free.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(ApplyError::DiskFull { need, free });
        }
        let have_tmp = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        // Only this download's own temp folder.
        self.ensure_parent(&tmp)?;
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&tmp).map_err(io_err(&tmp))?;
        if let Err(e) = crate::util::reserve(&file, target.size, &runs) {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(ApplyError::DiskFull { need, free: free_space(&self.root).unwrap_or(0) });
            }
            return Err(io_err(&tmp)(e));
        }
        let file = Arc::new(file);
        self.partial.open(&tmp, &file);

        // Where each distinct chunk goes.
        let mut positions: HashMap<ChunkHash, (u32, Vec<u64>)> = HashMap::new();
        for (off, b) in target.block_offsets() {
            positions.entry(b.hash).or_insert((b.len, Vec::new())).1.push(off);
        }
        let positions = Arc::new(positions);
        self.progress.set(&self.name, target.path.as_str(), 0, target.size);

        // Local phase: the temp file itself (resume), then any local file with the chunk.
        let ctx = self.clone();
        let (f2, p2) = (file.clone(), positions.clone());
        // A temp file we just created holds nothing: reading and hashing its holes
        // would cost a pass over the whole size before the first request.
        let resume = have_tmp > 0;
        let (missing, local_bytes) =
            tokio::task::spawn_blocking(move || ctx.fill_from_local(&f2, &p2, resume)).await??;
        let mut done_bytes = local_bytes;
        self.progress.set(&self.name, target.path.as_str(), done_bytes, target.size);

        if !missing.is_empty() {
            let fetched = self.fetch_remote(&target, missing, &sources, &file, &positions, done_bytes).await;
            // On failure the temp file stays, and so does what it holds for peers
            // (see `PartialStore`).
            done_bytes = fetched?;
        }
        debug!(share = %self.name, path = %target.path, bytes = done_bytes, "assembled");

        let ctx = self.clone();
        let f2 = file.clone();
        let (path, size) = (target.path.clone(), target.size);
        let res = tokio::task::spawn_blocking(move || ctx.finish(target, conflict, f2, &tmp, &abs))
            .await
            .map_err(ApplyError::Task);
        // After `finish` the index serves these chunks from the final file.
        self.partial.remove_file(&file);
        res??;
        let secs = started.elapsed().as_secs_f64();
        info!(share = %self.name, path = %path, bytes = size, secs = format!("{secs:.2}"),
            mib_per_s = format!("{:.1}", size as f64 / (1 << 20) as f64 / secs.max(1e-6)), "received");
        Ok(())
    }

    /// Writes every chunk found on disk; returns the chunks still missing and the bytes placed.
    fn fill_from_local(
        &self,
        file: &File,
        positions: &HashMap<ChunkHash, (u32, Vec<u64>)>,
        resume: bool,
    ) -> Result<(Vec<(ChunkHash, u32)>, u64), ApplyError> {
        let mut missing = Vec::new();
        let mut placed = 0u64;
        let mut local = self.local_chunks(Verify::Always);
        for (hash, (len, offs)) in positions.iter() {
            // Already in the temp file from an interrupted run?
            if resume {
                let held = read_vec_at(file, *len as usize, offs[0]).ok().filter(|b| ChunkHash::of(b) == *hash);
                if let Some(buf) = held {
                    for off in &offs[1..] {
                        write_chunk(file, &buf, *off).map_err(io_err(Path::new("temp file")))?;
                    }
                    placed += *len as u64 * offs.len() as u64;
                    continue;
                }
            }
            match local.read(hash, *len)? {
                Some(data) => {
                    for off in offs {
                        write_chunk(file, &data, *off).map_err(io_err(Path::new("temp file")))?;
                    }
                    Counters::add(&self.counters.chunk_bytes_reused, *len as u64 * offs.len() as u64);
                    placed += *len as u64 * offs.len() as u64;
                }
                None => missing.push((*hash, *len)),
            }
        }
        Ok((missing, placed))
    }

    fn finish(
        &self,
        target: Entry,
        conflict: Option<RelPath>,
        file: Arc<File>,
        tmp: &Path,
        abs: &Path,
    ) -> Result<(), ApplyError> {
        file.sync_all().map_err(io_err(tmp))?;
        file.set_permissions(std::fs::Permissions::from_mode(safe_mode(target.mode))).map_err(io_err(tmp))?;
        drop(file);
        set_mtime(tmp, target.mtime).map_err(io_err(tmp))?;
        // Re-check right before the rename: a local edit since the scan must survive.
        let rec = self.index.get(&target.path)?;
        if !self.disk_matches(rec.as_ref(), abs) {
            self.progress.finish(&self.name, target.path.as_str());
            return Err(ApplyError::LocalChanged(target.path));
        }
        self.ensure_parent(abs)?;
        if std::fs::symlink_metadata(abs).is_ok() {
            // Only a live local version is worth a conflict copy; else replace.
            self.set_aside_or_replace(&target.path, abs, conflict.as_ref())?;
        }
        self.watched.ours(target.path.clone(), Ours::RenamedInto);
        std::fs::rename(tmp, abs).map_err(io_err(abs))?;
        if let Some(parent) = abs.parent() {
            fsync_dir(parent).map_err(io_err(parent))?;
        }
        let ino = std::fs::metadata(abs).map(|m| m.ino()).unwrap_or(0);
        let path = target.path.clone();
        self.index.put(as_applied(target), ino, false)?;
        self.progress.finish(&self.name, path.as_str());
        Counters::add(&self.counters.files_applied, 1);
        Ok(())
    }

    pub(super) fn set_aside_or_replace(
        &self,
        rel: &RelPath,
        abs: &Path,
        conflict: Option<&RelPath>,
    ) -> Result<(), ApplyError> {
        let m = std::fs::symlink_metadata(abs).map_err(io_err(abs))?;
        if conflict.is_none() && m.is_file() {
            // rename(2) replaces a file atomically; the old content is kept first (a
            // hard link into the versions) when the share keeps versions.
            if let Versioning::Trash { .. } = self.versioning {
                versions::keep_before_replace(&self.root, rel, abs).map_err(io_err(abs))?;
            }
            return Ok(());
        }
        self.set_aside(abs, conflict)
    }
}

/// Permission bits applied from a peer: setuid, setgid and sticky bits never travel.
pub(super) fn safe_mode(mode: u32) -> u32 {
    mode & 0o777
}

/// The entry as it now is on disk, to record: with the peer's setuid bits in the
/// index, the next scan saw a mode change, recorded a new version, and the mesh
/// stripped the bits from the file on the node that set them.
pub(super) fn as_applied(mut e: Entry) -> Entry {
    e.mode = safe_mode(e.mode);
    e
}

/// Asks the kernel to start writing the file's dirty pages now, without waiting.
pub(super) fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O. A failure costs
    // nothing but a longer final fsync, so it is ignored.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes a chunk, leaving all-zero chunks as holes (sparse files stay sparse).
pub(super) fn write_chunk(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    if data.iter().all(|b| *b == 0) {
        return Ok(());
    }
    f.write_all_at(data, off)
}
