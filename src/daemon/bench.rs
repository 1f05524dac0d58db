//! `meshsync bench`: round-trip time and throughput to every peer over the mesh's
//! own QUIC connections, then the time to swarm a synthetic blob to all of them.
//!
//! The blob lives in a temporary share `bench:<id>` under `$MESHSYNC_HOME/bench/`
//! on every node (never in a user's share) and is deleted when the run ends.

use super::{Node, Share};
use crate::config::{ShareConfig, ShareMode};
use crate::ids::NodeId;
use crate::index::{Entry, EntryKind, VersionVector};
use crate::proto::{Control, WireEntry, BENCH_SHARE_PREFIX};
use crate::relpath::RelPath;
use crate::sync::Action;
use anyhow::Context;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a node does not write or fetch a blob of some size.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobRefused {
    /// Empty, or over the node's `bench_max_mib`.
    #[error("blob size {size} bytes: expected 1 byte to {limit_mib} MiB (`bench_max_mib` in the config)", limit_mib = limit >> 20)]
    Size {
        /// Bytes asked for.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// It would eat into the free space to keep.
    #[error("blob of {size} bytes does not fit: {free} bytes free, {keep} of them kept free (`min_free_mib`)")]
    Space {
        /// Bytes asked for.
        size: u64,
        /// Bytes free where bench blobs go.
        free: u64,
        /// Bytes to keep free.
        keep: u64,
    },
}

/// Whether a blob of `size` bytes may be written here, with `free` bytes free under
/// the home and `keep` to keep free.
pub fn blob_fits(size: u64, limit: u64, free: u64, keep: u64) -> Result<(), BlobRefused> {
    if size == 0 || size > limit {
        return Err(BlobRefused::Size { size, limit });
    }
    if free < size.saturating_add(keep) {
        return Err(BlobRefused::Space { size, free, keep });
    }
    Ok(())
}

/// [`blob_fits`] for this node now.
fn check_blob(node: &Node, size: u64) -> Result<(), BlobRefused> {
    let free = crate::util::free_space(node.home.dir()).unwrap_or(0);
    let keep = node.live.min_free.load(std::sync::atomic::Ordering::Relaxed);
    blob_fits(size, node.config.node.bench_max_bytes, free, keep)
}
/// How long a peer keeps a blob if the end of the run never arrives.
const KEEP_AT_MOST: Duration = Duration::from_secs(600);

/// Bench runs in flight on this node, both as originator and as peer.
#[derive(Default)]
pub struct BenchState {
    /// Originator: per run, when each peer reported its copy (and whether it verified).
    results: HashMap<u64, HashMap<NodeId, (Instant, bool)>>,
    /// Peer: runs whose blob is kept until `BenchEnd`.
    serving: HashMap<u64, CancellationToken>,
}

/// One line of a bench run's output on the control socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BenchEvent {
    /// Throughput from one peer to this node.
    Probe {
        /// Peer name.
        peer: String,
        /// QUIC's smoothed round-trip time.
        rtt_ms: f64,
        /// Measured download rate from that peer.
        mbit_s: f64,
    },
    /// The blob is ready and offered to `peers` peers.
    Blob {
        /// Blob size.
        bytes: u64,
        /// Number of chunks.
        chunks: usize,
        /// Peers it was offered to.
        peers: usize,
    },
    /// Swarm progress: bytes held by all peers together.
    Progress {
        /// Bytes held so far, over all peers.
        held_bytes: u64,
        /// Bytes when every peer has the blob.
        total_bytes: u64,
    },
    /// One peer has a verified copy (or gave up).
    PeerDone {
        /// Peer name.
        peer: String,
        /// Seconds since the offer.
        secs: f64,
        /// Verified.
        ok: bool,
    },
    /// The summary; the last line.
    Result(BenchReport),
    /// The run failed; the last line.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// The figures of one bench run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// Blob size in bytes.
    pub bytes: u64,
    /// Per peer.
    pub peers: Vec<PeerFigure>,
    /// Time until every peer had a verified copy (None if some never did).
    pub swarm_secs: Option<f64>,
    /// What copying the blob to each peer in turn at its probed rate would take.
    pub serial_estimate_secs: f64,
}

/// One peer's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerFigure {
    /// Name.
    pub name: String,
    /// Round-trip time in ms.
    pub rtt_ms: f64,
    /// Probed download rate from it, Mbit/s.
    pub mbit_s: f64,
    /// Seconds until its copy was verified (None: it did not finish).
    pub secs: Option<f64>,
}

fn share_name(id: u64) -> String {
    format!("{BENCH_SHARE_PREFIX}{id:016x}")
}

fn open_share(node: &Arc<Node>, id: u64) -> anyhow::Result<Arc<Share>> {
    let name = share_name(id);
    let path = node.home.dir().join("bench").join(format!("{id:016x}"));
    // The blob's private folder, where the download's temp file goes; no worker
    // scans a bench share, so it needs no marker.
    std::fs::create_dir_all(path.join(crate::relpath::PRIVATE_DIR))
        .with_context(|| format!("creating {}", path.display()))?;
    let cfg = ShareConfig {
        name: name.clone(),
        path,
        mode: ShareMode::SendReceive,
        ignore: vec![],
        schedule: None,
        max_delete: Default::default(),
        // A bench blob replaced or deleted is not worth keeping.
        versioning: crate::config::Versioning::Off,
        min_interval: crate::config::DEFAULT_MIN_INTERVAL,
        // The bench measures the links, not how well its blob compresses.
        compression: crate::config::Compression::Off,
    };
    let share = Arc::new(Share::open(node, cfg)?);
    node.shares.write().unwrap_or_else(|e| e.into_inner()).insert(name, share.clone());
    Ok(share)
}

fn close_share(node: &Node, id: u64) {
    let name = share_name(id);
    let share = node.shares.write().unwrap_or_else(|e| e.into_inner()).remove(&name);
    if let Some(s) = share {
        if let Err(e) = std::fs::remove_dir_all(&s.cfg.path) {
            warn!(path = %s.cfg.path.display(), error = %e, "cannot remove bench blob");
        }
    }
    if let Err(e) = node.index.drop_share(&name) {
        warn!(error = %e, "cannot drop bench index trees");
    }
}

fn blob_path() -> RelPath {
    // A fixed, valid relative path.
    RelPath::parse("blob").unwrap_or_else(|_| unreachable!("\"blob\" is a valid relative path"))
}

/// Writes `size` random bytes into the share and indexes them.
fn make_blob(node: &Node, share: &Share, size: u64) -> anyhow::Result<Entry> {
    let abs = share.cfg.path.join("blob");
    let mut f = std::fs::File::create(&abs)?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let blocks = crate::scan::chunker::chunk_reader(std::fs::File::open(&abs)?, size)?;
    let me = node.ident.id.short();
    let entry = Entry {
        path: blob_path(),
        kind: EntryKind::File,
        size,
        mode: 0o600,
        mtime: crate::util::mtime_of(&std::fs::metadata(&abs)?),
        version: VersionVector::from_pairs([(me, 1)]),
        modified_by: me,
        deleted: false,
        blocks,
    };
    share.ctx.index.put(entry.clone(), std::fs::metadata(&abs)?.ino(), false)?;
    Ok(entry)
}

/// Runs a bench as the originator, sending events to `out`.
pub(super) async fn run(node: Arc<Node>, size: u64, probe_bytes: u64, out: mpsc::Sender<BenchEvent>) {
    let id = rand::random::<u64>();
    let res = run_inner(&node, id, size, probe_bytes, &out).await;
    let _ = node.announce.send(Control::BenchEnd { id });
    node.bench.lock().unwrap_or_else(|e| e.into_inner()).results.remove(&id);
    close_share(&node, id);
    let last = match res {
        Ok(r) => BenchEvent::Result(r),
        Err(e) => BenchEvent::Error { message: format!("{e:#}") },
    };
    let _ = out.send(last).await;
}

async fn run_inner(
    node: &Arc<Node>,
    id: u64,
    size: u64,
    probe_bytes: u64,
    out: &mpsc::Sender<BenchEvent>,
) -> anyhow::Result<BenchReport> {
    check_blob(node, size)?;
    let peers = node.peers.list();
    anyhow::ensure!(!peers.is_empty(), "no peer is connected; `meshsync status` shows who is known");
    // One peer at a time, so each probe has this node's download to itself.
    let mut figures: Vec<(NodeId, PeerFigure)> = Vec::new();
    for p in &peers {
        let rtt_ms = p.conn.rtt().as_secs_f64() * 1000.0;
        let start = Instant::now();
        let got = match tokio::time::timeout(Duration::from_secs(120), crate::net::probe(&p.conn, probe_bytes)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => anyhow::bail!("probe of {} failed: {e}", p.name),
            Err(_) => anyhow::bail!("probe of {} took over 120 s", p.name),
        };
        let mbit_s = got as f64 * 8.0 / start.elapsed().as_secs_f64().max(1e-6) / 1e6;
        let _ = out.send(BenchEvent::Probe { peer: p.name.clone(), rtt_ms, mbit_s }).await;
        figures.push((p.id, PeerFigure { name: p.name.clone(), rtt_ms, mbit_s, secs: None }));
    }

    let share = open_share(node, id)?;
    let (n2, s2) = (node.clone(), share.clone());
    let entry = tokio::task::spawn_blocking(move || make_blob(&n2, &s2, size)).await??;
    let content = entry.content_id();
    node.bench.lock().unwrap_or_else(|e| e.into_inner()).results.insert(id, HashMap::new());
    let _ = out.send(BenchEvent::Blob { bytes: size, chunks: entry.blocks.len(), peers: peers.len() }).await;
    let start = Instant::now();
    let _ = node.announce.send(Control::BenchOffer { id, entry: WireEntry::from(&entry) });
    info!(id = %format!("{id:016x}"), bytes = size, peers = peers.len(), "bench blob offered");

    // Generous: ten times a serial copy at the slowest probed rate, at least 2 minutes.
    let slowest = figures.iter().map(|f| f.1.mbit_s).fold(f64::INFINITY, f64::min).max(0.1);
    let limit = Duration::from_secs_f64((size as f64 * 8.0 / (slowest * 1e6) * 10.0).max(120.0));
    let total = size * peers.len() as u64;
    let mut reported: Vec<NodeId> = Vec::new();
    loop {
        let done: Vec<(NodeId, Instant, bool)> = node
            .bench
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .results
            .get(&id)
            .map(|m| m.iter().map(|(k, v)| (*k, v.0, v.1)).collect())
            .unwrap_or_default();
        for (peer, at, ok) in done {
            if reported.contains(&peer) {
                continue;
            }
            reported.push(peer);
            let secs = at.duration_since(start).as_secs_f64();
            if let Some(f) = figures.iter_mut().find(|f| f.0 == peer) {
                f.1.secs = ok.then_some(secs);
                let _ = out.send(BenchEvent::PeerDone { peer: f.1.name.clone(), secs, ok }).await;
            }
        }
        if figures.iter().all(|f| reported.contains(&f.0)) {
            break;
        }
        if start.elapsed() > limit || !figures.iter().any(|f| node.peers.is_connected(&f.0)) {
            break;
        }
        // One read of the maps per tick, not one per peer.
        let maps = share.ctx.announced.for_content(&entry.path, &content);
        let held: u64 = figures
            .iter()
            .map(|(peer, _)| {
                if reported.contains(peer) {
                    return size;
                }
                maps.iter()
                    .find(|(p, _)| p == peer)
                    .map(|(_, m)| {
                        entry.blocks.iter().enumerate().filter(|(i, _)| m.has(*i)).map(|(_, b)| b.len as u64).sum()
                    })
                    .unwrap_or(0)
            })
            .sum();
        let _ = out.send(BenchEvent::Progress { held_bytes: held, total_bytes: total }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let swarm_secs = figures.iter().map(|f| f.1.secs).try_fold(0f64, |m, s| s.map(|s| m.max(s)));
    let serial_estimate_secs = figures.iter().map(|f| size as f64 * 8.0 / (f.1.mbit_s.max(1e-3) * 1e6)).sum();
    Ok(BenchReport { bytes: size, peers: figures.into_iter().map(|f| f.1).collect(), swarm_secs, serial_estimate_secs })
}

/// A peer reported its copy.
pub(super) fn on_done(node: &Node, peer: NodeId, id: u64, ok: bool) {
    if let Some(m) = node.bench.lock().unwrap_or_else(|e| e.into_inner()).results.get_mut(&id) {
        m.entry(peer).or_insert((Instant::now(), ok));
    }
}

/// The originator ended a run: delete the blob.
pub(super) fn on_end(node: &Node, id: u64) {
    if let Some(t) = node.bench.lock().unwrap_or_else(|e| e.into_inner()).serving.remove(&id) {
        t.cancel();
    }
}

/// A peer offers a bench blob: fetch it from the swarm, report, keep it until the end.
pub(super) fn on_offer(node: &Arc<Node>, from: NodeId, id: u64, entry: WireEntry, reply: mpsc::Sender<Control>) {
    let entry = match Entry::try_from(entry) {
        Ok(e) => e,
        Err(why) => {
            warn!(%why, "refused bench offer");
            return;
        }
    };
    if entry.kind != EntryKind::File || entry.path != blob_path() {
        warn!("refused bench offer (not a blob)");
        return;
    }
    if let Err(why) = check_blob(node, entry.size) {
        warn!(%why, "refused bench offer");
        // Told at once: the originator need not wait for this node's copy.
        let refused = Control::BenchDone { id, ok: false };
        tokio::spawn(async move { reply.send(refused).await });
        return;
    }
    let token = CancellationToken::new();
    {
        let mut st = node.bench.lock().unwrap_or_else(|e| e.into_inner());
        if st.serving.contains_key(&id) {
            return;
        }
        st.serving.insert(id, token.clone());
    }
    let node = node.clone();
    tokio::spawn(async move {
        let ok = match open_share(&node, id) {
            Ok(share) => {
                let action = Action::Fetch { target: entry, sources: vec![from], conflict: None };
                match share.ctx.execute(action).await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, "bench blob not received");
                        false
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot set up the bench blob");
                false
            }
        };
        let _ = reply.send(Control::BenchDone { id, ok }).await;
        // Keep serving others until the originator ends the run.
        tokio::select! {
            _ = token.cancelled() => {}
            _ = node.cancel.cancelled() => {}
            _ = tokio::time::sleep(KEEP_AT_MOST) => {}
        }
        node.bench.lock().unwrap_or_else(|e| e.into_inner()).serving.remove(&id);
        close_share(&node, id);
    });
}

/// Removes blobs left by a run that a crash interrupted.
pub(super) fn clean_leftovers(node: &Node) {
    let dir = node.home.dir().join("bench");
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            warn!(path = %dir.display(), error = %e, "cannot remove old bench blobs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_fits_under_the_limit_and_above_the_free_space_kept() {
        let mib = 1 << 20;
        assert_eq!(blob_fits(8 * mib, 16 * mib, 100 * mib, 10 * mib), Ok(()));
        assert_eq!(blob_fits(0, 16 * mib, 100 * mib, 0), Err(BlobRefused::Size { size: 0, limit: 16 * mib }));
        let over = blob_fits(17 * mib, 16 * mib, 100 * mib, 0).unwrap_err();
        assert!(over.to_string().contains("1 byte to 16 MiB (`bench_max_mib`"), "{over}");
        let full = blob_fits(8 * mib, 16 * mib, 12 * mib, 5 * mib).unwrap_err();
        assert_eq!(full, BlobRefused::Space { size: 8 * mib, free: 12 * mib, keep: 5 * mib });
        assert!(full.to_string().contains("min_free_mib"), "{full}");
        assert!(blob_fits(u64::MAX, u64::MAX, u64::MAX - 1, 1).is_err(), "no overflow");
    }
}
