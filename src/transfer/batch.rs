//! Small files in batches (see `sync::batch` for why and which): the chunks of a
//! batch's files are looked for locally, the rest fetched with a few requests
//! (many files per request), verified on arrival, and then the files are placed
//! together: each written to its temp file, all made durable, renamed into place,
//! their directories synced once, and recorded in one index write.
//!
//! The guarantees of the single-file path hold: a file is renamed into place only
//! after its bytes, mode and mtime are durable (nothing half-written appears at a
//! final path, even after a crash), and the index records it only after the rename
//! is durable (a crash never leaves the index claiming a file that is not there).

use super::assemble::{as_applied, safe_mode, start_writeback, write_chunk};
use super::local::Verify;
use super::{io_err, ApplyError, ShareCtx};
use crate::ids::{ChunkHash, NodeId};
use crate::index::Entry;
use crate::net::{self, ChunkAnswer};
use crate::proto::{ChunkRef, ChunkRequest, Holders};
use crate::relpath::RelPath;
use crate::stats::Counters;
use crate::sync::batch::{requests, REQUEST_BYTES};
use crate::sync::Action;
use crate::util::{free_space, fsync_dir, system_time};
use crate::watch::Ours;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What became of each path of a batch.
pub type Outcomes = Vec<(RelPath, Result<(), ApplyError>)>;

/// How long one request of a batch may take: at most [`REQUEST_BYTES`], so even
/// a slow link answers well within it; a peer that does not is asked no more.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Pause before asking again when every source answered `Busy`.
const BUSY_PAUSE: Duration = Duration::from_millis(50);
/// How long a batch keeps asking while no chunk arrives (sources busy); what is
/// still missing then is tried again by the share's worker a little later.
const PATIENCE: Duration = Duration::from_secs(10);
/// Threads that fsync a batch's files at once.
const SYNC_THREADS: usize = 8;

/// A file of the batch.
struct Item {
    target: Entry,
    sources: Vec<NodeId>,
}

/// A file written to its temp file, not yet durable.
struct Written {
    target: Entry,
    tmp: PathBuf,
    abs: PathBuf,
    file: File,
    ino: u64,
}

impl ShareCtx {
    /// Fetches and applies small whole-file downloads (batchable `Action::Fetch`es)
    /// together; returns each path's outcome.
    pub async fn execute_batch(&self, actions: Vec<Action>) -> Outcomes {
        let started = Instant::now();
        let mut out = Vec::new();
        let mut items = Vec::with_capacity(actions.len());
        for a in actions {
            match a {
                Action::Fetch { target, sources, conflict: None } => items.push(Item { target, sources }),
                other => {
                    let p = other.path().clone();
                    out.push((p.clone(), Err(ApplyError::Unsafe(format!("{p}: not a small file's download")))));
                }
            }
        }
        let Some(first) = items.first().map(|i| i.target.path.clone()) else { return out };
        let total: u64 = items.iter().map(|i| i.target.size).sum();
        // One transfer in `status` per batch, not one per file.
        let label = format!("{first} and {} more small files", items.len() - 1);
        self.progress.set(&self.name, &label, 0, total);
        let wanted: Vec<ChunkRef> = distinct_chunks(&items);
        let ctx = self.clone();
        let local = tokio::task::spawn_blocking(move || ctx.batch_local(total, &wanted)).await;
        let mut have = match local.map_err(ApplyError::Task).and_then(|r| r) {
            Ok(h) => h,
            Err(e) => {
                self.progress.finish(&self.name, &label);
                return fail_all(out, items, &e);
            }
        };
        let local_at = started.elapsed();
        let fetched = self.batch_fetch(&mut items, &mut have).await;
        let fetched_at = started.elapsed();
        self.progress.set(&self.name, &label, fetched, total);
        let ctx = self.clone();
        let paths: Vec<RelPath> = items.iter().map(|i| i.target.path.clone()).collect();
        let placed = tokio::task::spawn_blocking(move || ctx.batch_place(items, &have)).await;
        self.progress.finish(&self.name, &label);
        match placed {
            Ok(placed) => {
                let ok = placed.iter().filter(|(_, r)| r.is_ok()).count();
                let secs = started.elapsed().as_secs_f64();
                let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
                info!(share = %self.name, first = %first, files = ok, of = placed.len(), bytes = fetched,
                    secs = format!("{secs:.2}"), local_ms = ms(local_at), fetch_ms = ms(fetched_at - local_at),
                    "received a batch of small files");
                out.extend(placed);
            }
            // Whatever it did is on disk or not; the next pass looks at each path again.
            Err(e) => {
                warn!(share = %self.name, error = %e, "placing a batch of small files failed");
                let why = e.to_string();
                out.extend(paths.into_iter().map(|p| {
                    let err = ApplyError::Io(p.to_string(), std::io::Error::other(why.clone()));
                    (p, Err(err))
                }));
            }
        }
        out
    }

    /// Checks the free space for `total` bytes and reads the chunks found in this
    /// share's own files (a file renamed or copied on a peer moves nothing).
    fn batch_local(&self, total: u64, wanted: &[ChunkRef]) -> Result<HashMap<ChunkHash, Vec<u8>>, ApplyError> {
        let free = free_space(&self.root).map_err(io_err(&self.root))?;
        if free < total.saturating_add(self.min_free.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(ApplyError::DiskFull { need: total, free });
        }
        self.make_temp_dirs()?;
        let mut local = self.local_chunks(Verify::Always);
        let mut have = HashMap::new();
        for c in wanted {
            if let Some(data) = local.read(&c.hash, c.len)? {
                Counters::add(&self.counters.chunk_bytes_reused, u64::from(c.len));
                have.insert(c.hash, data);
            }
        }
        Ok(have)
    }

    /// Fetches the chunks of `items` not in `have` from their sources, a few
    /// requests at once, each answered chunk verified; returns the bytes fetched.
    /// Gives up on what no source serves (those files fail and are retried later).
    async fn batch_fetch(&self, items: &mut [Item], have: &mut HashMap<ChunkHash, Vec<u8>>) -> u64 {
        // A peer that lacked a chunk, sent a wrong one, or did not answer, is not
        // asked for it again by this batch.
        let mut refused: HashSet<(NodeId, ChunkHash)> = HashSet::new();
        let (mut fetched, mut progress_at) = (0u64, Instant::now());
        let mut sources_gen = self.index.remote_generation();
        loop {
            let wants = self.candidates(items, have, &refused);
            if wants.is_empty() {
                break;
            }
            let remaining: u64 = wants.iter().map(|(c, _)| u64::from(c.len)).sum();
            let holders: HashMap<ChunkHash, usize> = wants.iter().map(|(c, p)| (c.hash, p.len())).collect();
            let (reqs, _) = requests(&wants, REQUEST_BYTES);
            if reqs.is_empty() {
                break;
            }
            let mut set = tokio::task::JoinSet::new();
            for (peer, chunks) in reqs {
                let Some(conn) = self.peers.get(&peer) else {
                    refused.extend(chunks.iter().map(|c| (peer, c.hash)));
                    continue;
                };
                let only_you = chunks.iter().any(|c| holders.get(&c.hash).is_none_or(|n| *n <= 1));
                let holders = if only_you { Holders::OnlyYou } else { Holders::Others };
                let req = ChunkRequest { share: self.name.clone(), chunks, holders, remaining };
                let limit = self.download_limit.clone();
                set.spawn(async move {
                    // The node's download cap paces the asking, before the deadline starts.
                    limit.acquire(req.bytes()).await;
                    let got = tokio::time::timeout(REQUEST_DEADLINE, net::request_chunks(&conn, &req)).await;
                    (peer, req.chunks, got)
                });
            }
            let mut busy = false;
            while let Some(joined) = set.join_next().await {
                let Ok((peer, chunks, got)) = joined else { continue };
                match got {
                    Ok(Ok(ChunkAnswer::Data { chunks: data, wire_bytes })) => {
                        Counters::add(&self.counters.chunk_wire_bytes_received, wire_bytes);
                        for (c, d) in chunks.iter().zip(data) {
                            match d {
                                Some(d) if ChunkHash::of(&d) == c.hash => {
                                    fetched += u64::from(c.len);
                                    Counters::add(&self.counters.chunk_bytes_received, u64::from(c.len));
                                    have.insert(c.hash, d);
                                    progress_at = Instant::now();
                                }
                                Some(_) => {
                                    warn!(share = %self.name, peer = ?peer, "a chunk failed verification; fetching it elsewhere");
                                    Counters::add(&self.counters.chunks_corrupt, 1);
                                    refused.insert((peer, c.hash));
                                }
                                None => {
                                    refused.insert((peer, c.hash));
                                }
                            }
                        }
                    }
                    Ok(Ok(ChunkAnswer::Busy)) => busy = true,
                    Ok(Err(e)) => {
                        debug!(share = %self.name, peer = ?peer, error = %e, "batch request failed");
                        refused.extend(chunks.iter().map(|c| (peer, c.hash)));
                    }
                    Err(_) => {
                        debug!(share = %self.name, peer = ?peer, "batch request timed out");
                        refused.extend(chunks.iter().map(|c| (peer, c.hash)));
                    }
                }
            }
            if busy {
                if progress_at.elapsed() >= PATIENCE {
                    break;
                }
                tokio::time::sleep(BUSY_PAUSE).await;
                // Peers that got these files meanwhile can serve them too.
                let generation = self.index.remote_generation();
                if generation != sources_gen {
                    sources_gen = generation;
                    self.refresh_sources(items, have);
                }
            }
        }
        fetched
    }

    /// Each chunk still missing, once, with the connected sources of the files
    /// that need it that have not refused it.
    fn candidates(
        &self,
        items: &[Item],
        have: &HashMap<ChunkHash, Vec<u8>>,
        refused: &HashSet<(NodeId, ChunkHash)>,
    ) -> Vec<(ChunkRef, Vec<NodeId>)> {
        let mut at: HashMap<ChunkHash, usize> = HashMap::new();
        let mut wants: Vec<(ChunkRef, Vec<NodeId>)> = Vec::new();
        let mut connected: HashMap<NodeId, bool> = HashMap::new();
        for it in items {
            for b in &it.target.blocks {
                if have.contains_key(&b.hash) {
                    continue;
                }
                let i = *at.entry(b.hash).or_insert_with(|| {
                    wants.push((ChunkRef { hash: b.hash, len: b.len }, Vec::new()));
                    wants.len() - 1
                });
                for s in &it.sources {
                    let up = *connected.entry(*s).or_insert_with(|| self.peers.is_connected(s));
                    if up && !refused.contains(&(*s, b.hash)) && !wants[i].1.contains(s) {
                        wants[i].1.push(*s);
                    }
                }
            }
        }
        // Chunks nobody can serve are left to the caller's outcome.
        wants.retain(|(_, peers)| !peers.is_empty());
        wants
    }

    /// Adds the peers whose index now shows a file's version to its sources.
    fn refresh_sources(&self, items: &mut [Item], have: &HashMap<ChunkHash, Vec<u8>>) {
        for it in items.iter_mut().filter(|it| it.target.blocks.iter().any(|b| !have.contains_key(&b.hash))) {
            for (id, e) in self.index.remote_for(&it.target.path).unwrap_or_default() {
                if !e.deleted && e.same_content(&it.target) && !it.sources.contains(&id) {
                    it.sources.push(id);
                }
            }
        }
    }

    /// Writes every file of the batch whose chunks are all here, makes them
    /// durable, renames them into place and records them.
    fn batch_place(&self, items: Vec<Item>, have: &HashMap<ChunkHash, Vec<u8>>) -> Outcomes {
        let mut t = Instant::now();
        let mut lap = || {
            let d = t.elapsed().as_secs_f64() * 1e3;
            t = Instant::now();
            format!("{d:.1}")
        };
        let mut out = Vec::with_capacity(items.len());
        let mut written = Vec::with_capacity(items.len());
        let mut safe_dirs = HashSet::new();
        for Item { target, .. } in items {
            if target.blocks.iter().any(|b| !have.contains_key(&b.hash)) {
                let p = target.path.clone();
                out.push((p.clone(), Err(ApplyError::NoSource(p))));
                continue;
            }
            let abs = match self.abs_in(&target.path, &mut safe_dirs) {
                Ok(abs) => abs,
                Err(e) => {
                    out.push((target.path, Err(e)));
                    continue;
                }
            };
            match self.write_temp(target, abs, have) {
                Ok(w) => written.push(w),
                Err((p, e)) => out.push((p, Err(e))),
            }
        }
        let write_ms = lap();
        // Their writeback started as each was written: these mostly wait for it.
        let synced = sync_files(&written.iter().map(|w| &w.file).collect::<Vec<_>>());
        let mut durable = Vec::with_capacity(written.len());
        for (w, res) in written.into_iter().zip(synced) {
            match res {
                Ok(()) => durable.push(w),
                Err(e) => {
                    let _ = std::fs::remove_file(&w.tmp);
                    out.push((w.target.path.clone(), Err(io_err(&w.tmp)(e))));
                }
            }
        }
        let sync_ms = lap();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut placed: Vec<(Entry, u64, PathBuf)> = Vec::with_capacity(durable.len());
        for w in durable {
            let Written { target, tmp, abs, file, ino } = w;
            // Closed before the rename: the watch then expects no close after it.
            drop(file);
            match self.rename_into_place(&target.path, &tmp, &abs, &mut dirs) {
                Ok(dir) => placed.push((as_applied(target), ino, dir)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    out.push((target.path, Err(e)));
                }
            }
        }
        let rename_ms = lap();
        // The renames durable before the index says so; a file whose directory
        // cannot be synced is left to the next scan to record.
        let unsynced: HashSet<PathBuf> = dirs
            .into_iter()
            .filter(|d| match fsync_dir(d) {
                Ok(()) => false,
                Err(e) => {
                    warn!(share = %self.name, dir = %d.display(), error = %e, "cannot sync a directory");
                    true
                }
            })
            .collect();
        let mut record = Vec::with_capacity(placed.len());
        for (e, ino, dir) in placed {
            if unsynced.contains(&dir) {
                let why = std::io::Error::other("its directory could not be synced");
                out.push((e.path.clone(), Err(ApplyError::Io(e.path.to_string(), why))));
            } else {
                record.push((e, ino));
            }
        }
        let dirs_ms = lap();
        let paths: Vec<RelPath> = record.iter().map(|(e, _)| e.path.clone()).collect();
        let n = record.len() as u64;
        let recorded = self.index.put_many(record, false);
        debug!(files = n, write_ms, sync_ms, rename_ms, dirs_ms, index_ms = lap(), "batch placed");
        match recorded {
            Ok(_) => {
                Counters::add(&self.counters.files_applied, n);
                out.extend(paths.into_iter().map(|p| (p, Ok(()))));
            }
            Err(e) => {
                let msg = e.to_string();
                out.extend(paths.into_iter().map(|p| {
                    let why = std::io::Error::other(format!("recording it in the index: {msg}"));
                    (p.clone(), Err(ApplyError::Io(p.to_string(), why)))
                }));
            }
        }
        out
    }

    /// Writes one file to its temp file with its mode and mtime, and starts its
    /// writeback; the file is not durable yet.
    fn write_temp(
        &self,
        target: Entry,
        abs: PathBuf,
        have: &HashMap<ChunkHash, Vec<u8>>,
    ) -> Result<Written, (RelPath, ApplyError)> {
        let fail = |e: ApplyError| (target.path.clone(), e);
        let tmp = self.temp_path(&target);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(io_err(&tmp)(e)))?;
        let written = (|| {
            let mut end = 0;
            for (off, b) in target.block_offsets() {
                // Present: the caller checked every block.
                let Some(data) = have.get(&b.hash) else { continue };
                write_chunk(&file, data, off)?;
                if data.iter().any(|x| *x != 0) {
                    end = off + u64::from(b.len);
                }
            }
            // Trailing all-zero chunks were left as a hole.
            if end < target.size {
                file.set_len(target.size)?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(safe_mode(target.mode)))?;
            file.set_times(std::fs::FileTimes::new().set_modified(system_time(target.mtime)))?;
            start_writeback(&file);
            file.metadata().map(|m| m.ino())
        })();
        match written {
            Ok(ino) => Ok(Written { target, tmp, abs, file, ino }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(fail(io_err(&tmp)(e)))
            }
        }
    }

    /// The absolute path of `rel`, its directory checked (no symlink on the way)
    /// once per batch: `safe_dirs` holds the directories checked so far.
    fn abs_in(&self, rel: &RelPath, safe_dirs: &mut HashSet<String>) -> Result<PathBuf, ApplyError> {
        let dir = rel.as_str().rsplit_once('/').map_or("", |(d, _)| d);
        if safe_dirs.contains(dir) {
            return Ok(self.root.join(rel.as_str()));
        }
        let abs = self.abs(rel)?;
        safe_dirs.insert(dir.to_string());
        Ok(abs)
    }

    /// Renames a durable temp file to `abs`, unless the file there changed since
    /// the plan (a local edit is never clobbered); returns its directory, which
    /// joins `dirs` (made once per batch if missing).
    fn rename_into_place(
        &self,
        path: &RelPath,
        tmp: &Path,
        abs: &Path,
        dirs: &mut BTreeSet<PathBuf>,
    ) -> Result<PathBuf, ApplyError> {
        let rec = self.index.get(path)?;
        if !self.disk_matches(rec.as_ref(), abs) {
            return Err(ApplyError::LocalChanged(path.clone()));
        }
        let parent = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone());
        if !dirs.contains(&parent) {
            self.ensure_parent(abs)?;
            dirs.insert(parent.clone());
        }
        // The disk shows what the record says: a live record means a file is there.
        if rec.is_some_and(|r| !r.entry.deleted) {
            self.set_aside_or_replace(path, abs, None)?;
        }
        self.watched.ours(path.clone(), Ours::Placed);
        std::fs::rename(tmp, abs).map_err(io_err(abs))?;
        Ok(parent)
    }
}

/// fsyncs `files` from up to [`SYNC_THREADS`] threads at once; returns each
/// outcome in order. One after another, each fsync waited for its own journal
/// commit and device cache flush; fsyncs waiting together share them.
fn sync_files(files: &[&File]) -> Vec<std::io::Result<()>> {
    let per = files.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|s| {
        let sync = |part: &[&File]| part.iter().map(|f| f.sync_all()).collect::<Vec<_>>();
        let parts: Vec<_> = files
            .chunks(per)
            .map(|part| (part, std::thread::Builder::new().spawn_scoped(s, move || sync(part)).ok()))
            .collect();
        parts
            .into_iter()
            .flat_map(|(part, thread)| match thread.map(|t| t.join()) {
                Some(Ok(done)) => done,
                Some(Err(_)) => part.iter().map(|_| Err(std::io::Error::other("the fsync thread failed"))).collect(),
                // No thread to be had: this part is synced here, after the others.
                None => sync(part),
            })
            .collect()
    })
}

/// Every distinct chunk of the items, in the order first named.
fn distinct_chunks(items: &[Item]) -> Vec<ChunkRef> {
    let mut seen = HashSet::new();
    items
        .iter()
        .flat_map(|i| &i.target.blocks)
        .filter(|b| seen.insert(b.hash))
        .map(|b| ChunkRef { hash: b.hash, len: b.len })
        .collect()
}

/// The same failure for every item (the batch could not start).
fn fail_all(mut out: Outcomes, items: Vec<Item>, e: &ApplyError) -> Outcomes {
    for it in items {
        let p = it.target.path;
        let err = match e {
            ApplyError::DiskFull { need, free } => ApplyError::DiskFull { need: *need, free: *free },
            other => ApplyError::Io(p.to_string(), std::io::Error::other(other.to_string())),
        };
        out.push((p, Err(err)));
    }
    out
}
