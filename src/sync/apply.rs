//! Carries out planner actions on disk: fetch chunks (local first, then the swarm),
//! assemble in a temp file under `.meshsync/`, verify, fsync, set mode and mtime,
//! and rename into place atomically. Never clobbers a file changed since the scan.

use super::availability::{Announced, PartialStore};
use super::local::{LocalChunks, Verify};
use super::pieces::{piece_target, PieceBlocks, Pieces};
use super::planner::Action;
use super::swarm::{Have, Outcome, Request, Swarm};
use crate::config::ShareMode;
use crate::ids::ChunkHash;
use crate::ids::NodeId;
use crate::index::{Entry, EntryKind, IndexError, LocalRecord, ShareIndex};
use crate::net::{self, ChunkAnswer, Peers};
use crate::proto::{ChunkRef, ChunkRequest, Control, HaveMap, Holders};
use crate::relpath::{RelPath, PRIVATE_DIR};
use crate::stats::{Counters, Progress};
use crate::util::{free_space, fsync_dir, mtime_of, read_vec_at, safe_join, set_mtime};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// How often a download announces which chunks it holds (if that changed) when it
/// sends its maps to `peers` peers. Each hop of a piece through the mesh waits for
/// one announcement, but every map goes to every peer and is mapped to pieces there.
/// Simulator: 100 ms instead of 250 ms took N = 8 from 1.07x to 1.06x of the minimum,
/// while a full mesh of 256 went from 1.18x to 1.25x (maps grew from 15 to 39 file
/// sizes of traffic). Lab, 17 daemons on 2 cores: N = 16 took 44.7 s at 100 ms and
/// 41.1-42.3 s at 250 ms, so the faster rate stops at 8 peers.
pub fn announce_every(peers: usize) -> Duration {
    if peers <= FAST_ANNOUNCE_PEERS {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(250)
    }
}

/// Up to this many peers, a download announces at the faster rate.
pub const FAST_ANNOUNCE_PEERS: usize = 8;
/// How often a download looks for new sources and announcements.
pub const REFRESH_EVERY: Duration = Duration::from_millis(50);
/// A download looks in the index for peers that have this version when peers'
/// entries changed, or after this long (decoding a large entry every refresh cost
/// 4 % of a 1 GiB transfer's CPU).
const SOURCES_EVERY: Duration = Duration::from_secs(1);
/// Bytes written to a temp file after which its writeback is started, so the final
/// fsync of a big file waits for the last few MiB only. Small, so the disk sees a
/// steady stream: at 64 MiB every receiver of a swarm (all progressing together)
/// flushed 64 MiB at the same moment, and those bursts stalled the whole lab
/// machine four times per file (vmstat: 350-500 MB written in 2 s, idle 0 %).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Why an action was not carried out. None of these loses data.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not enough free space: the share pauses.
    #[error("disk full: need {need} bytes plus the configured minimum free, {free} available")]
    DiskFull {
        /// Bytes the file needs.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// No connected peer can serve some chunks now; retried later.
    #[error("{0}: no connected peer has the missing chunks")]
    NoSource(RelPath),
    /// The local file changed after the plan; the next scan turns it into a conflict.
    #[error("{0}: changed locally since the last scan, not overwritten")]
    LocalChanged(RelPath),
    /// A path refused for safety.
    #[error("refused: {0}")]
    Unsafe(String),
    /// Disk I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Everything the executor needs about one share.
#[derive(Clone)]
pub struct ShareCtx {
    /// Share name.
    pub name: String,
    /// Local root.
    pub root: PathBuf,
    /// The share's index.
    pub index: ShareIndex,
    /// Mode.
    pub mode: ShareMode,
    /// Free bytes to keep.
    pub min_free: u64,
    /// Live connections.
    pub peers: Arc<Peers>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Download progress.
    pub progress: Arc<Progress>,
    /// Chunks of running downloads, servable to peers.
    pub partial: Arc<PartialStore>,
    /// Peers' download progress.
    pub announced: Arc<Announced>,
    /// Sends this node's progress maps to every session.
    pub announce: broadcast::Sender<Control>,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + '_ {
    move |e| ApplyError::Io(p.display().to_string(), e)
}

impl ShareCtx {
    fn abs(&self, rel: &RelPath) -> Result<PathBuf, ApplyError> {
        safe_join(&self.root, rel).map_err(|e| ApplyError::Unsafe(e.to_string()))
    }

    fn private_dir(&self) -> PathBuf {
        self.root.join(PRIVATE_DIR).join("tmp")
    }

    /// Carries out one action.
    pub async fn execute(&self, action: Action) -> Result<(), ApplyError> {
        match action {
            Action::Fetch { target, sources, conflict } => self.fetch(target, sources, conflict).await,
            other => {
                let ctx = self.clone();
                tokio::task::spawn_blocking(move || ctx.execute_local(other))
                    .await
                    .map_err(|e| ApplyError::Unsafe(format!("task: {e}")))?
            }
        }
    }

    fn execute_local(&self, action: Action) -> Result<(), ApplyError> {
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
                    let meta = std::fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
                    if !meta.file_type().is_symlink() {
                        std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(safe_mode(target.mode)))
                            .map_err(io_err(&abs))?;
                    }
                    if target.kind == EntryKind::File {
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
                            // Unknown or ignored files inside: keep the directory.
                            warn!(share = %self.name, path = %target.path, error = %e, "directory not removed");
                            return Ok(());
                        }
                    }
                    Ok(_) => std::fs::remove_file(&abs).map_err(io_err(&abs))?,
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

    /// True when the disk still shows what the index recorded (nothing new to scan).
    fn disk_matches(&self, rec: Option<&LocalRecord>, abs: &Path) -> bool {
        let meta = std::fs::symlink_metadata(abs).ok();
        match (rec.filter(|r| !r.entry.deleted), meta) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(r), Some(m)) => match &r.entry.kind {
                EntryKind::Dir => m.is_dir(),
                EntryKind::Symlink { target } => {
                    m.file_type().is_symlink()
                        && std::fs::read_link(abs).ok().and_then(|t| t.to_str().map(|s| s == target)).unwrap_or(false)
                }
                EntryKind::File => {
                    m.is_file() && m.len() == r.entry.size && mtime_of(&m) == r.entry.mtime && m.ino() == r.ino
                }
            },
        }
    }

    fn ensure_parent(&self, abs: &Path) -> Result<(), ApplyError> {
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
    fn create_below_root(&self, dir: &Path) -> Result<(), ApplyError> {
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

    fn temp_path(&self, target: &Entry) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(target.path.as_str().as_bytes());
        for b in &target.blocks {
            h.update(&b.hash.0);
        }
        self.private_dir().join(format!("{}.part", &h.finalize().to_hex()[..32]))
    }

    async fn fetch(
        &self,
        target: Entry,
        sources: Vec<crate::ids::NodeId>,
        conflict: Option<RelPath>,
    ) -> Result<(), ApplyError> {
        let abs = self.abs(&target.path)?;
        let started = std::time::Instant::now();
        let free = free_space(&self.root).map_err(io_err(&self.root))?;
        let tmp = self.temp_path(&target);
        let have_tmp = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        let need = target.size.saturating_sub(have_tmp);
        if free < need.saturating_add(self.min_free) {
            return Err(ApplyError::DiskFull { need, free });
        }
        self.create_below_root(&self.private_dir())?;
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&tmp).map_err(io_err(&tmp))?;
        if let Err(e) = crate::util::reserve(&file, target.size) {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(ApplyError::DiskFull { need, free: free_space(&self.root).unwrap_or(0) });
            }
            return Err(io_err(&tmp)(e));
        }
        let file = Arc::new(file);

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
        let (missing, local_bytes) = tokio::task::spawn_blocking(move || ctx.fill_from_local(&f2, &p2, resume))
            .await
            .map_err(|e| ApplyError::Unsafe(format!("task: {e}")))??;
        let mut done_bytes = local_bytes;
        self.progress.set(&self.name, target.path.as_str(), done_bytes, target.size);

        if !missing.is_empty() {
            let fetched = self.fetch_remote(&target, missing, &sources, &file, &positions, done_bytes).await;
            done_bytes = match fetched {
                Ok(d) => d,
                Err(e) => {
                    self.partial.remove_file(&file);
                    return Err(e);
                }
            };
        }
        debug!(share = %self.name, path = %target.path, bytes = done_bytes, "assembled");

        let ctx = self.clone();
        let f2 = file.clone();
        let (path, size) = (target.path.clone(), target.size);
        let res = tokio::task::spawn_blocking(move || ctx.finish(target, conflict, f2, &tmp, &abs))
            .await
            .map_err(|e| ApplyError::Unsafe(format!("task: {e}")));
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

    /// A reader of this share's own files.
    pub fn local_chunks(&self, verify: Verify) -> LocalChunks<'_> {
        LocalChunks::new(&self.root, &self.index, verify)
    }

    async fn fetch_remote(
        &self,
        target: &Entry,
        missing: Vec<(ChunkHash, u32)>,
        sources: &[NodeId],
        file: &Arc<File>,
        positions: &Arc<HashMap<ChunkHash, (u32, Vec<u64>)>>,
        mut done_bytes: u64,
    ) -> Result<u64, ApplyError> {
        let epoch = tokio::time::Instant::now();
        let first_offset = |h: &ChunkHash| positions.get(h).and_then(|p| p.1.first().copied()).unwrap_or(0);
        let pieces = Pieces::new(
            missing.iter().map(|(hash, len)| (ChunkRef { hash: *hash, len: *len }, first_offset(hash))).collect(),
            piece_target(target.size),
        );
        let pieces = Arc::new(pieces);
        let mut dl = Download::new(self, target, &pieces, file, positions);
        let mut swarm = Swarm::new(pieces.for_swarm(), rand::random());
        let mut known: HashSet<NodeId> = HashSet::new();
        for s in sources {
            if self.peers.is_connected(s) {
                swarm.set_peer(*s, Have::All);
                known.insert(*s);
            }
        }
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        let mut announce = tokio::time::interval(announce_every(self.peers.count()));
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: HashMap<Request, tokio::task::AbortHandle> = HashMap::new();
        let mut unflushed = 0u64;
        // Peers whose index came in after the plan was made count from the start.
        let (mut sources_at, mut sources_gen) = (epoch, self.index.remote_generation());
        self.add_sources(&mut swarm, target, &mut known);
        loop {
            for req in swarm.poll(epoch.elapsed()) {
                let Some(conn) = self.peers.get(&req.peer) else {
                    swarm.remove_peer(&req.peer);
                    continue;
                };
                let holders = Holders::from_count(swarm.holders(req.chunk));
                let cr = ChunkRequest {
                    share: self.name.clone(),
                    chunks: pieces.chunks(req.chunk).to_vec(),
                    holders,
                    remaining: swarm.missing_bytes(),
                };
                let (f, pos) = (file.clone(), positions.clone());
                // Verified and written in the request task: hashing runs on every core
                // and this loop never waits for the disk, only for bookkeeping.
                let h = tasks.spawn(async move {
                    let got = match net::request_chunks(&conn, &cr).await {
                        Ok(ChunkAnswer::Data(data)) => {
                            let chunks = cr.chunks;
                            let job = move || verify_and_write(&f, &pos, &chunks, data);
                            match tokio::task::spawn_blocking(job).await {
                                Ok(got) => got,
                                Err(e) => Got::WriteFailed(std::io::Error::other(e.to_string())),
                            }
                        }
                        Ok(ChunkAnswer::Busy) => Got::Busy,
                        Err(e) => Got::Failed(e),
                    };
                    (req, got)
                });
                running.insert(req, h);
            }
            if swarm.is_complete() {
                break;
            }
            if tasks.is_empty() && swarm.is_stuck() && !self.add_sources(&mut swarm, target, &mut known) {
                // Nothing in flight and nothing to ask: no one has the rest.
                dl.announce(true);
                return Err(ApplyError::NoSource(target.path.clone()));
            }
            let joined = tokio::select! {
                j = tasks.join_next(), if !tasks.is_empty() => j,
                _ = refresh.tick() => {
                    // Peers that got this version, connected, or announced chunks since we started.
                    let generation = self.index.remote_generation();
                    if generation != sources_gen || sources_at.elapsed() >= SOURCES_EVERY {
                        (sources_at, sources_gen) = (tokio::time::Instant::now(), generation);
                        self.add_sources(&mut swarm, target, &mut known);
                    }
                    dl.learn_announced(&mut swarm);
                    for id in known.iter().chain(dl.partial_peers.keys()) {
                        if let Some(c) = self.peers.get(id) {
                            swarm.set_rtt(id, c.rtt());
                        }
                    }
                    continue;
                }
                _ = announce.tick() => {
                    dl.announce(false);
                    continue;
                }
            };
            let Some(joined) = joined else {
                continue;
            };
            let Ok((req, got)) = joined else { continue };
            running.remove(&req);
            let outcome = match got {
                Got::Piece { written, corrupt, missing } => {
                    let mut bytes = 0u64;
                    for c in &written {
                        let Some((_, offs)) = positions.get(&c.hash) else { continue };
                        if let Some(off) = offs.first() {
                            self.partial.add(c.hash, file, *off);
                        }
                        // Endgame duplicates and refetched pieces count once.
                        if dl.got(&c.hash) {
                            bytes += c.len as u64 * offs.len() as u64;
                            Counters::add(&self.counters.chunk_bytes_received, c.len as u64);
                        }
                    }
                    unflushed += bytes;
                    if unflushed >= WRITEBACK_EVERY {
                        unflushed = 0;
                        let f = file.clone();
                        // A hint to the kernel; nothing waits for it.
                        drop(tokio::task::spawn_blocking(move || start_writeback(&f)));
                    }
                    done_bytes += bytes;
                    self.progress.set(&self.name, target.path.as_str(), done_bytes, target.size);
                    if corrupt > 0 {
                        warn!(share = %self.name, peer = ?req.peer, path = %target.path, corrupt,
                            "chunks failed verification; fetching them elsewhere");
                        Counters::add(&self.counters.chunks_corrupt, corrupt as u64);
                        Outcome::Corrupt
                    } else if missing > 0 {
                        Outcome::NotFound
                    } else {
                        Outcome::Verified
                    }
                }
                Got::WriteFailed(e) => return Err(io_err(Path::new("temp file"))(e)),
                Got::Busy => Outcome::Busy,
                Got::Failed(e) => {
                    debug!(share = %self.name, peer = ?req.peer, error = %e, "chunk request failed");
                    if !self.peers.is_connected(&req.peer) {
                        swarm.remove_peer(&req.peer);
                        known.remove(&req.peer);
                        dl.partial_peers.remove(&req.peer);
                    }
                    Outcome::Failed
                }
            };
            for dup in swarm.complete(req, outcome, epoch.elapsed()) {
                if let Some(h) = running.remove(&dup) {
                    h.abort();
                }
            }
        }
        for (_, h) in running {
            h.abort();
        }
        // Every chunk is here: peers may fetch any of them before our index says so.
        dl.announce(true);
        Ok(done_bytes)
    }

    /// Adds connected peers whose index shows this content; true if any was added.
    fn add_sources(&self, swarm: &mut Swarm, target: &Entry, known: &mut HashSet<NodeId>) -> bool {
        let mut added = false;
        for (id, e) in self.index.remote_for(&target.path).unwrap_or_default() {
            if !e.deleted && e.same_content(target) && self.peers.is_connected(&id) && known.insert(id) {
                swarm.set_peer(id, Have::All);
                added = true;
            }
        }
        added
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
            self.set_aside_or_replace(abs, conflict.as_ref())?;
        }
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

    fn set_aside_or_replace(&self, abs: &Path, conflict: Option<&RelPath>) -> Result<(), ApplyError> {
        let m = std::fs::symlink_metadata(abs).map_err(io_err(abs))?;
        if conflict.is_none() && m.is_file() {
            // rename(2) replaces a file atomically; nothing to do first.
            return Ok(());
        }
        self.set_aside(abs, conflict)
    }
}

/// The availability side of one download: which blocks this node holds (to
/// announce) and what peers announced (to feed the swarm).
struct Download<'a> {
    ctx: &'a ShareCtx,
    target: &'a Entry,
    content: crate::ids::ContentId,
    /// Where each piece's chunks sit among the file's blocks.
    piece_blocks: PieceBlocks,
    /// Per block: held (verified) here.
    held: Vec<bool>,
    /// Blocks of each missing hash.
    blocks_of: HashMap<ChunkHash, Vec<usize>>,
    changed: bool,
    /// Peers known only from announcements, with the bitmap last applied.
    partial_peers: HashMap<NodeId, Vec<u8>>,
}

impl<'a> Download<'a> {
    fn new(
        ctx: &'a ShareCtx,
        target: &'a Entry,
        pieces: &Arc<Pieces>,
        file: &Arc<File>,
        positions: &HashMap<ChunkHash, (u32, Vec<u64>)>,
    ) -> Self {
        // Only needed here: the download keeps the blocks of each missing hash.
        let missing: HashSet<&ChunkHash> = pieces.missing().map(|c| &c.hash).collect();
        let mut blocks_of: HashMap<ChunkHash, Vec<usize>> = HashMap::new();
        let mut held = vec![false; target.blocks.len()];
        for (i, b) in target.blocks.iter().enumerate() {
            if missing.contains(&b.hash) {
                blocks_of.entry(b.hash).or_default().push(i);
            } else {
                held[i] = true;
            }
        }
        // Chunks already here (resumed temp file or local copies) are servable at once.
        for (hash, (_, offs)) in positions {
            if !missing.contains(hash) {
                if let Some(off) = offs.first() {
                    ctx.partial.add(*hash, file, *off);
                }
            }
        }
        let changed = held.iter().any(|h| *h);
        Self {
            ctx,
            target,
            content: target.content_id(),
            piece_blocks: pieces.in_blocks(|h| blocks_of.get(h).and_then(|b| b.first()).map(|b| *b as u32)),
            held,
            blocks_of,
            changed,
            partial_peers: HashMap::new(),
        }
    }

    /// Marks a verified chunk held; false if it already was.
    fn got(&mut self, hash: &ChunkHash) -> bool {
        let mut new = false;
        for b in self.blocks_of.get(hash).into_iter().flatten() {
            new |= !self.held[*b];
            self.held[*b] = true;
        }
        self.changed |= new;
        new
    }

    /// Sends this node's progress map to every session, if it changed (or `force`).
    fn announce(&mut self, force: bool) {
        if !self.changed && !force {
            return;
        }
        self.changed = false;
        let map = HaveMap::from_held(
            self.ctx.name.clone(),
            self.target.path.clone(),
            self.content,
            self.held.len() as u32,
            &self.held,
        );
        // No session listening is fine: nobody to tell.
        let _ = self.ctx.announce.send(Control::Have(map));
    }

    /// Feeds peers' newest progress maps of this version into the swarm.
    fn learn_announced(&mut self, swarm: &mut Swarm) {
        for (peer, map) in self.ctx.announced.for_content(&self.target.path, &self.content) {
            if swarm.has_all(&peer) || map.blocks as usize != self.held.len() || !self.ctx.peers.is_connected(&peer) {
                continue;
            }
            if self.partial_peers.get(&peer) == Some(&map.bits) {
                continue;
            }
            let set = self.piece_blocks.complete(|b| map.has(b));
            swarm.set_peer(peer, Have::Some(set));
            self.partial_peers.insert(peer, map.bits);
        }
    }
}

/// Permission bits applied from a peer: setuid, setgid and sticky bits never travel.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o777
}

/// The entry as it now is on disk, to record: with the peer's setuid bits in the
/// index, the next scan saw a mode change, recorded a new version, and the mesh
/// stripped the bits from the file on the node that set them.
fn as_applied(mut e: Entry) -> Entry {
    e.mode = safe_mode(e.mode);
    e
}

/// Asks the kernel to start writing the file's dirty pages now, without waiting.
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O. A failure costs
    // nothing but a longer final fsync, so it is ignored.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// What became of one piece request, as the request task saw it.
enum Got {
    /// The peer answered every chunk: these were verified and written at all
    /// their offsets; `corrupt` did not hash right, `missing` the peer lacked.
    Piece { written: Vec<ChunkRef>, corrupt: usize, missing: usize },
    /// A verified chunk that the temp file refused (e.g. the disk is full).
    WriteFailed(std::io::Error),
    /// The peer spends its upload elsewhere now.
    Busy,
    /// The request failed (connection lost, protocol error).
    Failed(net::NetError),
}

/// Verifies each answered chunk of a piece and writes the good ones.
fn verify_and_write(
    f: &File,
    positions: &HashMap<ChunkHash, (u32, Vec<u64>)>,
    chunks: &[ChunkRef],
    data: Vec<Option<Vec<u8>>>,
) -> Got {
    let (mut written, mut corrupt, mut missing) = (Vec::new(), 0, 0);
    for (c, d) in chunks.iter().zip(data) {
        let Some(d) = d else {
            missing += 1;
            continue;
        };
        if ChunkHash::of(&d) != c.hash {
            corrupt += 1;
            continue;
        }
        let offs = positions.get(&c.hash).map(|p| p.1.as_slice()).unwrap_or_default();
        if let Err(e) = offs.iter().try_for_each(|o| write_chunk(f, &d, *o)) {
            return Got::WriteFailed(e);
        }
        written.push(*c);
    }
    Got::Piece { written, corrupt, missing }
}

/// Writes a chunk, leaving all-zero chunks as holes (sparse files stay sparse).
fn write_chunk(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    if data.iter().all(|b| *b == 0) {
        return Ok(());
    }
    f.write_all_at(data, off)
}
