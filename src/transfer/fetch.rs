//! Fetching the chunks a file still lacks from the swarm: the driver around the
//! pure `sync::swarm` scheduler, with requests, verification on arrival, progress
//! maps announced and peers' maps learned.

use super::assemble::{start_writeback, write_chunk};
use super::{io_err, ApplyError, ShareCtx};
use crate::ids::{ChunkHash, NodeId};
use crate::index::Entry;
use crate::net::{self, ChunkAnswer};
use crate::proto::{ChunkRef, ChunkRequest, Control, HaveMap, Holders};
use crate::stats::Counters;
use crate::sync::pieces::{piece_target, PieceBlocks, Pieces};
use crate::sync::swarm::{Dropped, Have, Outcome, Request, Swarm, BUSY_LIMIT, MAX_TIMEOUTS};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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

impl ShareCtx {
    pub(super) async fn fetch_remote(
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
        // Peers whose index came in after the plan was made count from the start,
        // and so do peers that announced chunks of this version: with the source
        // gone, what the others hold is all there is.
        let (mut sources_at, mut sources_gen) = (epoch, self.index.remote_generation());
        self.add_sources(&mut swarm, target, &mut known);
        dl.learn_announced(&mut swarm);
        let mut stalls = Stalls::default();
        let writers = Writers::default();
        // Every way out of the loop, the request tasks' writes end before the
        // download does: a write landing later would change the placed file (or
        // the temp file the next attempt resumes from).
        let fetched: Result<(), ApplyError> = async {
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
                    let (f, pos, limit) = (file.clone(), positions.clone(), self.download_limit.clone());
                    let writers = writers.clone();
                    let counters = self.counters.clone();
                    // Verified and written in the request task: hashing runs on every core
                    // and this loop never waits for the disk, only for bookkeeping.
                    let h = tasks.spawn(async move {
                        // The node's download cap paces the asking, before any deadline starts.
                        limit.acquire(cr.chunks.iter().map(|c| u64::from(c.len)).sum()).await;
                        let got = match net::request_chunks(&conn, &cr).await {
                            Ok(ChunkAnswer::Data { chunks: data, wire_bytes }) => {
                                Counters::add(&counters.chunk_wire_bytes_received, wire_bytes);
                                let chunks = cr.chunks;
                                let job = move || writers.write(|| verify_and_write(&f, &pos, &chunks, data));
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
                if tasks.is_empty() && swarm.is_stuck() {
                    dl.learn_announced(&mut swarm);
                    if !self.add_sources(&mut swarm, target, &mut known) && swarm.is_stuck() {
                        // Nothing in flight and nothing to ask: no one has the rest. What is
                        // here stays servable from the temp file until the next attempt.
                        dl.announce(true);
                        return Err(ApplyError::NoSource(target.path.clone()));
                    }
                    continue;
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
                        let late = swarm.expire(epoch.elapsed());
                        for r in &late {
                            if let Some(h) = running.remove(r) {
                                h.abort();
                            }
                        }
                        stalls.missed(self, target, &late);
                        stalls.dropped(self, target, swarm.take_dropped());
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
                if matches!(got, Got::Piece { .. }) {
                    stalls.answered(&req.peer);
                }
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
                    Got::Closed => Outcome::Failed,
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
                stalls.dropped(self, target, swarm.take_dropped());
            }
            Ok(())
        }
        .await;
        for (_, h) in running {
            h.abort();
        }
        // The endgame's duplicates still being written finish, and none starts after.
        let w = writers.clone();
        tokio::task::spawn_blocking(move || w.close()).await.map_err(ApplyError::Task)?;
        fetched?;
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
    /// The download had ended: nothing was written (an endgame duplicate).
    Closed,
}

/// The request tasks' writes into a download's temp file. Aborting a request task
/// does not stop the blocking write it started, and a write landing after the file
/// was renamed into place changes the placed file: the same bytes, but a new mtime,
/// so the index no longer matches the disk and every later change of the path from
/// the mesh waits for a scan that no event asks for (found by the convergence suite,
/// seeds 461, 482, 511, 622). [`Writers::close`] waits for the writes under way and
/// refuses any later one.
#[derive(Clone, Default)]
struct Writers(Arc<std::sync::RwLock<bool>>);

impl Writers {
    /// Runs `write` unless the download has ended.
    fn write(&self, write: impl FnOnce() -> Got) -> Got {
        let closed = self.0.read().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Got::Closed;
        }
        write()
    }

    /// Waits for the writes under way; later ones write nothing.
    fn close(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = true;
    }
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

/// Peers that missed a deadline in this download, with the count of datagrams
/// their connection had received at the first miss: a peer dropped for missing
/// deadlines whose connection has received nothing since is gone (killed, frozen,
/// cut off), and its connection is closed at once rather than at QUIC's idle
/// timeout (30 s), so the dialer tries it again; one that still answers (keep-alive
/// acknowledgements) is only left out of this download.
#[derive(Default)]
struct Stalls {
    since: HashMap<NodeId, u64>,
}

impl Stalls {
    fn missed(&mut self, ctx: &ShareCtx, target: &Entry, late: &[Request]) {
        if late.is_empty() {
            return;
        }
        Counters::add(&ctx.counters.requests_timed_out, late.len() as u64);
        let mut peers: Vec<NodeId> = late.iter().map(|r| r.peer).collect();
        peers.dedup();
        for peer in peers {
            let Some(conn) = ctx.peers.get(&peer) else { continue };
            let received = conn.stats().udp_rx.datagrams;
            if let std::collections::hash_map::Entry::Vacant(v) = self.since.entry(peer) {
                v.insert(received);
                warn!(share = %ctx.name, peer = ?peer, path = %target.path,
                    "requests not answered in time; asking other peers");
            }
        }
    }

    fn answered(&mut self, peer: &NodeId) {
        self.since.remove(peer);
    }

    fn dropped(&mut self, ctx: &ShareCtx, target: &Entry, dropped: Vec<(NodeId, Dropped)>) {
        for (peer, why) in dropped {
            let conn = ctx.peers.get(&peer);
            match why {
                Dropped::Corrupt => {
                    warn!(share = %ctx.name, peer = ?peer, path = %target.path, "peer sent corrupt chunks; not asked again for this file")
                }
                Dropped::Busy => info!(share = %ctx.name, peer = ?peer, path = %target.path,
                    "peer answered only Busy for {} s while nothing arrived; not asked again for this file now", BUSY_LIMIT.as_secs()),
                Dropped::Timeouts => {
                    let silent = conn
                        .as_ref()
                        .zip(self.since.get(&peer))
                        .is_some_and(|(c, at)| c.stats().udp_rx.datagrams == *at);
                    if let (true, Some(c)) = (silent, conn) {
                        warn!(share = %ctx.name, peer = ?peer, path = %target.path,
                            "peer missed {MAX_TIMEOUTS} deadlines and sent nothing since the first; disconnecting (it is dialed again)");
                        c.close(crate::proto::CLOSE_STALLED.into(), b"no answer in time");
                    } else {
                        warn!(share = %ctx.name, peer = ?peer, path = %target.path,
                            "peer missed {MAX_TIMEOUTS} deadlines in a row; not asked again for this file now");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn closing_waits_for_the_write_under_way_and_refuses_later_ones() {
        let writers = Writers::default();
        let (started, wait_started) = mpsc::channel();
        let (go, wait_go) = mpsc::channel::<()>();
        let w = writers.clone();
        let slow = std::thread::spawn(move || {
            w.write(|| {
                started.send(()).unwrap();
                wait_go.recv().unwrap();
                Got::Busy
            })
        });
        wait_started.recv().unwrap();
        let (closed_tx, closed_rx) = mpsc::channel();
        let w = writers.clone();
        let closer = std::thread::spawn(move || {
            w.close();
            closed_tx.send(()).unwrap();
        });
        // The write under way holds the close back until it is done.
        assert!(closed_rx.recv_timeout(Duration::from_millis(100)).is_err(), "closed during a write");
        go.send(()).unwrap();
        assert!(matches!(slow.join().unwrap(), Got::Busy), "the write under way finished");
        closer.join().unwrap();
        closed_rx.recv().unwrap();
        let mut wrote = false;
        assert!(matches!(
            writers.write(|| {
                wrote = true;
                Got::Busy
            }),
            Got::Closed
        ));
        assert!(!wrote, "nothing is written after the close");
    }
}
