//! The swarm scheduler: which chunk to ask of which peer. A pure state machine with
//! no I/O and no clock: the driver tells it what peers have, what arrived and what
//! time it is (`now`, any monotonic epoch); it answers with requests to send.
//!
//! Rules:
//! - never ask a peer for a chunk it has not announced;
//! - each peer with room in its pipeline gets the rarest chunk it can serve, random
//!   among equals, so a full source is asked for what nobody else has yet;
//! - a peer's pipeline is sized from its measured throughput and latency
//!   (bandwidth-delay product), so a slow peer holds few chunks;
//! - endgame: once every missing chunk is requested, idle capacity duplicates the
//!   stragglers and the first answer cancels the others;
//! - a corrupt chunk is not asked of that peer again, and after [`MAX_STRIKES`] the
//!   peer is dropped; `Busy` defers the chunk at that peer for [`BUSY_BACKOFF`].

use crate::identity::NodeId;
use crate::index::ChunkHash;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Corrupt chunks after which a peer is dropped from this download.
pub const MAX_STRIKES: u32 = 3;
/// Bytes in flight per peer before its throughput is measured.
pub const INITIAL_WINDOW: u64 = 1 << 20;
/// Upper bound of a peer's pipeline (the QUIC connection window).
pub const MAX_WINDOW: u64 = 64 << 20;
/// How long a peer that answered `Busy` is not asked for that chunk again.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(300);
/// At most this many peers fetch the same chunk in the endgame.
const ENDGAME_COPIES: usize = 2;
/// Throughput is sampled over at least this long.
const RATE_INTERVAL: Duration = Duration::from_millis(100);

/// A set of chunk indexes of one download (a bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkSet {
    words: Vec<u64>,
}

impl ChunkSet {
    /// An empty set for `n` chunks.
    pub fn new(n: usize) -> Self {
        Self { words: vec![0; n.div_ceil(64)] }
    }

    /// Adds a chunk; returns true if it was not there.
    pub fn insert(&mut self, i: usize) -> bool {
        let w = i / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << (i % 64)) != 0;
        self.words[w] |= 1 << (i % 64);
        !was
    }

    /// True if the chunk is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Number of chunks in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

impl FromIterator<usize> for ChunkSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = ChunkSet::default();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// What a peer can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Have {
    /// The whole version (from its index).
    All,
    /// Only these chunk indexes (a download in progress).
    Some(ChunkSet),
}

impl Have {
    fn contains(&self, i: usize) -> bool {
        match self {
            Have::All => true,
            Have::Some(s) => s.contains(i),
        }
    }
}

/// One request to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// Ask this peer...
    pub peer: NodeId,
    /// ...for this chunk index.
    pub chunk: usize,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Arrived and matched its hash.
    Verified,
    /// Arrived but did not match: the peer is penalised.
    Corrupt,
    /// The peer said it does not have it.
    NotFound,
    /// The peer has it but spends its upload elsewhere: ask again later or elsewhere.
    Busy,
    /// The request failed (stream or connection error).
    Failed,
}

#[derive(Debug)]
struct Chunk {
    hash: ChunkHash,
    len: u32,
    done: bool,
    inflight: Vec<NodeId>,
    refused_by: Vec<NodeId>,
    busy_until: Vec<(NodeId, Duration)>,
    tiebreak: u64,
    /// Usable peers that have it (not refused).
    avail: u32,
}

impl Chunk {
    fn key(&self, idx: usize) -> Option<(u32, u64, usize)> {
        (!self.done && self.inflight.is_empty() && self.avail > 0).then_some((self.avail, self.tiebreak, idx))
    }

    fn busy_at(&self, peer: &NodeId, now: Duration) -> bool {
        self.busy_until.iter().any(|(p, t)| p == peer && *t > now)
    }
}

/// Throughput and latency of one peer, and the pipeline they call for.
#[derive(Debug)]
struct Pipe {
    min_latency: Option<Duration>,
    rtt: Option<Duration>,
    rate: Option<f64>,
    sample_bytes: u64,
    sample_start: Option<Duration>,
    window: u64,
}

impl Pipe {
    fn new() -> Self {
        Self { min_latency: None, rtt: None, rate: None, sample_bytes: 0, sample_start: None, window: INITIAL_WINDOW }
    }

    /// The latency with an empty queue: never below the transport's RTT.
    fn base_latency(&self) -> Option<Duration> {
        match (self.min_latency, self.rtt) {
            (Some(l), Some(r)) => Some(l.max(r)),
            (l, r) => l.or(r),
        }
    }

    fn delivered(&mut self, bytes: u64, latency: Duration, now: Duration, chunk: u64) {
        self.min_latency = Some(self.min_latency.map_or(latency, |m| m.min(latency)));
        self.sample_bytes += bytes;
        let start = *self.sample_start.get_or_insert(now.saturating_sub(latency));
        let span = now.saturating_sub(start);
        if span < RATE_INTERVAL {
            return;
        }
        let sample = self.sample_bytes as f64 / span.as_secs_f64();
        self.rate = Some(self.rate.map_or(sample, |r| 0.5 * r + 0.5 * sample));
        self.sample_bytes = 0;
        self.sample_start = Some(now);
        // Keep about one base latency of data queued beyond the BDP: at an empty
        // queue this doubles the pipeline each interval, under queueing it settles.
        if let (Some(rate), Some(base)) = (self.rate, self.base_latency()) {
            let bdp = (rate * base.as_secs_f64()) as u64;
            self.window = (2 * bdp + 2 * chunk).clamp(2 * chunk, MAX_WINDOW.max(2 * chunk));
        }
    }
}

#[derive(Debug)]
struct Peer {
    have: Have,
    inflight: usize,
    inflight_bytes: u64,
    strikes: u32,
    pipe: Pipe,
}

impl Peer {
    fn has_room(&self) -> bool {
        self.inflight == 0 || self.inflight_bytes < self.pipe.window
    }
}

/// The scheduler state of one download.
#[derive(Debug)]
pub struct Swarm {
    chunks: Vec<Chunk>,
    peers: BTreeMap<NodeId, Peer>,
    /// Chunks not done, not in flight, held by someone: (avail, tiebreak, index).
    fresh: BTreeSet<(u32, u64, usize)>,
    /// Chunks not done yet.
    missing: BTreeSet<usize>,
    sent_at: HashMap<Request, Duration>,
    /// Peers dropped for corrupt data: never added again.
    banned: Vec<NodeId>,
    avg_chunk: u64,
    rng: StdRng,
}

impl Swarm {
    /// A download of these chunks; `seed` drives the random tie-break.
    pub fn new(chunks: Vec<(ChunkHash, u32)>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let total: u64 = chunks.iter().map(|c| c.1 as u64).sum();
        let avg_chunk = total.checked_div(chunks.len() as u64).unwrap_or(1).max(1);
        let chunks: Vec<Chunk> = chunks
            .into_iter()
            .map(|(hash, len)| Chunk {
                hash,
                len,
                done: false,
                inflight: vec![],
                refused_by: vec![],
                busy_until: vec![],
                tiebreak: rng.gen(),
                avail: 0,
            })
            .collect();
        let missing = (0..chunks.len()).collect();
        Self {
            chunks,
            peers: BTreeMap::new(),
            fresh: BTreeSet::new(),
            missing,
            sent_at: HashMap::new(),
            banned: Vec::new(),
            avg_chunk,
            rng,
        }
    }

    /// Hash and length of a chunk.
    pub fn chunk(&self, idx: usize) -> (ChunkHash, u32) {
        (self.chunks[idx].hash, self.chunks[idx].len)
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when there is nothing to download.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Changes one chunk and keeps the rarity order in step.
    fn update(&mut self, idx: usize, f: impl FnOnce(&mut Chunk)) {
        if let Some(k) = self.chunks[idx].key(idx) {
            self.fresh.remove(&k);
        }
        f(&mut self.chunks[idx]);
        if let Some(k) = self.chunks[idx].key(idx) {
            self.fresh.insert(k);
        }
    }

    fn counts_for(&self, peer: &NodeId, idx: usize) -> bool {
        !self.chunks[idx].refused_by.contains(peer)
    }

    /// Adds a source, or replaces what it has (a newer announcement).
    /// A peer dropped for corrupt data stays out.
    pub fn set_peer(&mut self, peer: NodeId, have: Have) {
        if self.banned.contains(&peer) {
            return;
        }
        let old = self.peers.get(&peer).map(|p| p.have.clone());
        for i in 0..self.chunks.len() {
            let before = old.as_ref().is_some_and(|h| h.contains(i));
            let after = have.contains(i);
            if before != after && self.counts_for(&peer, i) {
                self.update(i, |c| if after { c.avail += 1 } else { c.avail -= 1 });
            }
        }
        match self.peers.get_mut(&peer) {
            Some(p) => p.have = have,
            None => {
                self.peers.insert(peer, Peer { have, inflight: 0, inflight_bytes: 0, strikes: 0, pipe: Pipe::new() });
            }
        }
    }

    /// Records that a peer gained one chunk (cheaper than [`Swarm::set_peer`]).
    pub fn add_have(&mut self, peer: &NodeId, idx: usize) {
        if idx >= self.chunks.len() {
            return;
        }
        let gained = match self.peers.get_mut(peer) {
            Some(Peer { have: Have::Some(s), .. }) => s.insert(idx),
            _ => false,
        };
        if gained && self.counts_for(peer, idx) {
            self.update(idx, |c| c.avail += 1);
        }
    }

    /// True if the peer is known and has the whole version.
    pub fn has_all(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.have == Have::All)
    }

    /// The transport's smoothed round-trip time to a peer (a floor for its latency).
    pub fn set_rtt(&mut self, peer: &NodeId, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.pipe.rtt = Some(rtt);
        }
    }

    /// The peer's current pipeline in bytes and measured throughput in bytes/s.
    pub fn pipeline(&self, peer: &NodeId) -> Option<(u64, Option<f64>)> {
        self.peers.get(peer).map(|p| (p.pipe.window, p.pipe.rate))
    }

    /// Forgets a peer; its in-flight requests become available to others.
    pub fn remove_peer(&mut self, peer: &NodeId) {
        let Some(p) = self.peers.remove(peer) else { return };
        for i in 0..self.chunks.len() {
            let had = p.have.contains(i) && !self.chunks[i].refused_by.contains(peer);
            let inflight = self.chunks[i].inflight.contains(peer);
            if had || inflight {
                self.update(i, |c| {
                    if had {
                        c.avail -= 1;
                    }
                    c.inflight.retain(|x| x != peer);
                });
            }
        }
        self.sent_at.retain(|r, _| r.peer != *peer);
    }

    /// Peers still usable.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The rarest chunk this peer can serve now.
    fn pick_fresh(&self, id: &NodeId, p: &Peer, now: Duration) -> Option<usize> {
        self.fresh
            .iter()
            .map(|k| k.2)
            .find(|&i| p.have.contains(i) && self.counts_for(id, i) && !self.chunks[i].busy_at(id, now))
    }

    fn pick_endgame(&self, id: &NodeId, p: &Peer, now: Duration) -> Option<usize> {
        self.missing.iter().copied().find(|&i| {
            let c = &self.chunks[i];
            !c.inflight.is_empty()
                && c.inflight.len() < ENDGAME_COPIES
                && !c.inflight.contains(id)
                && !c.refused_by.contains(id)
                && !c.busy_at(id, now)
                && p.have.contains(i)
        })
    }

    fn start(&mut self, id: NodeId, i: usize, now: Duration, out: &mut Vec<Request>) {
        let len = self.chunks[i].len as u64;
        self.update(i, |c| c.inflight.push(id));
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight += 1;
            p.inflight_bytes += len;
        }
        let req = Request { peer: id, chunk: i };
        self.sent_at.insert(req, now);
        out.push(req);
    }

    /// The requests to send now, filling every peer's pipeline.
    pub fn poll(&mut self, now: Duration) -> Vec<Request> {
        let mut out = Vec::new();
        if self.missing.is_empty() {
            return out;
        }
        let mut peer_ids: Vec<NodeId> = self.peers.keys().copied().collect();
        // Shuffle so no peer is always first in line for the rarest chunks.
        for i in (1..peer_ids.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            peer_ids.swap(i, j);
        }
        // One request per peer per pass, so the rarest chunks spread over peers.
        let mut active = peer_ids.clone();
        while !active.is_empty() {
            active.retain(|id| {
                let Some(p) = self.peers.get(id) else { return false };
                if !p.has_room() {
                    return false;
                }
                match self.pick_fresh(id, p, now) {
                    Some(i) => {
                        self.start(*id, i, now, &mut out);
                        true
                    }
                    None => false,
                }
            });
        }
        // Endgame: every missing chunk is requested; idle capacity duplicates stragglers.
        if self.fresh.is_empty() {
            for id in &peer_ids {
                while let Some(p) = self.peers.get(id).filter(|p| p.has_room()) {
                    let Some(i) = self.pick_endgame(id, p, now) else { break };
                    self.start(*id, i, now, &mut out);
                }
            }
        }
        out
    }

    /// Records how a request ended; returns duplicate requests to cancel.
    pub fn complete(&mut self, req: Request, outcome: Outcome, now: Duration) -> Vec<Request> {
        let Request { peer, chunk } = req;
        let len = self.chunks[chunk].len as u64;
        let sent = self.sent_at.remove(&req);
        let avg = self.avg_chunk;
        if let Some(p) = self.peers.get_mut(&peer) {
            if sent.is_some() {
                p.inflight = p.inflight.saturating_sub(1);
                p.inflight_bytes = p.inflight_bytes.saturating_sub(len);
            }
            if let (Outcome::Verified, Some(t)) = (outcome, sent) {
                p.pipe.delivered(len, now.saturating_sub(t), now, avg);
            }
        }
        self.update(chunk, |c| c.inflight.retain(|p| *p != peer));
        let mut cancel = Vec::new();
        match outcome {
            Outcome::Verified => {
                let others = std::mem::take(&mut self.chunks[chunk].inflight);
                self.update(chunk, |c| c.done = true);
                self.missing.remove(&chunk);
                for other in others {
                    let dup = Request { peer: other, chunk };
                    if self.sent_at.remove(&dup).is_some() {
                        if let Some(p) = self.peers.get_mut(&other) {
                            p.inflight = p.inflight.saturating_sub(1);
                            p.inflight_bytes = p.inflight_bytes.saturating_sub(len);
                        }
                    }
                    cancel.push(dup);
                }
            }
            Outcome::Corrupt => {
                self.refuse(peer, chunk);
                let drop = self.peers.get_mut(&peer).is_some_and(|p| {
                    p.strikes += 1;
                    p.strikes >= MAX_STRIKES
                });
                if drop {
                    self.remove_peer(&peer);
                    self.banned.push(peer);
                }
            }
            Outcome::NotFound => self.refuse(peer, chunk),
            Outcome::Busy => self.update(chunk, |c| {
                c.busy_until.retain(|(p, t)| *p != peer && *t > now);
                c.busy_until.push((peer, now + BUSY_BACKOFF));
            }),
            Outcome::Failed => {}
        }
        cancel
    }

    fn refuse(&mut self, peer: NodeId, chunk: usize) {
        if self.chunks[chunk].refused_by.contains(&peer) {
            return;
        }
        let had = self.peers.get(&peer).is_some_and(|p| p.have.contains(chunk));
        self.update(chunk, |c| {
            c.refused_by.push(peer);
            if had {
                c.avail -= 1;
            }
        });
    }

    /// When a `Busy` deferral ends, so a driver with nothing in flight knows when to poll.
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        self.missing.iter().flat_map(|&i| self.chunks[i].busy_until.iter().map(|b| b.1)).filter(|t| *t > now).min()
    }

    /// True when every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// True when chunks are missing that no usable peer can serve and nothing is in flight.
    pub fn is_stuck(&self) -> bool {
        !self.missing.is_empty() && self.sent_at.is_empty() && self.missing.iter().all(|&i| self.chunks[i].avail == 0)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.sent_at.len()
    }

    /// Chunks verified so far.
    pub fn done_count(&self) -> usize {
        self.chunks.len() - self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::ZERO;

    fn ids(n: u8) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId([i; 32])).collect()
    }
    fn chunks(n: usize) -> Vec<(ChunkHash, u32)> {
        (0..n).map(|i| (ChunkHash::of(&i.to_le_bytes()), 10)).collect()
    }
    fn set(v: &[usize]) -> Have {
        Have::Some(v.iter().copied().collect())
    }

    #[test]
    fn never_asks_a_peer_for_what_it_lacks() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(10), 1);
        s.set_peer(p[0], set(&[0, 1, 2]));
        s.set_peer(p[1], set(&[5]));
        let mut seen = 0;
        let mut pending = s.poll(T0);
        while let Some(r) = pending.pop() {
            let ok = if r.peer == p[0] { [0, 1, 2].contains(&r.chunk) } else { r.chunk == 5 };
            assert!(ok, "{r:?}");
            seen += 1;
            s.complete(r, Outcome::Verified, T0);
            pending.extend(s.poll(T0));
        }
        assert_eq!(seen, 4);
        assert!(!s.is_complete() && s.is_stuck(), "chunks nobody has stay missing");
        s.add_have(&p[1], 7);
        assert_eq!(s.poll(T0), vec![Request { peer: p[1], chunk: 7 }]);
    }

    #[test]
    fn rarest_first() {
        let p = ids(3);
        let mut s = Swarm::new(chunks(4), 7);
        // Chunk 3 is held by one peer only; the others by all.
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], set(&[0, 1, 2]));
        s.set_peer(p[2], set(&[0, 1, 2]));
        let reqs = s.poll(T0);
        let first_of_0 = reqs.iter().find(|r| r.peer == p[0]).copied();
        assert_eq!(first_of_0, Some(Request { peer: p[0], chunk: 3 }), "{reqs:?}");
    }

    #[test]
    fn a_full_source_is_asked_for_what_nobody_else_has() {
        let p = ids(2);
        // Chunks of 256 KiB: the first pipeline holds four.
        let mut s = Swarm::new((0..100u64).map(|i| (ChunkHash::of(&i.to_le_bytes()), 1 << 18)).collect(), 11);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::Some((0..50).collect()));
        let reqs = s.poll(T0);
        assert!(reqs.iter().any(|r| r.peer == p[0]));
        for r in reqs.iter().filter(|r| r.peer == p[0]) {
            assert!(r.chunk >= 50, "the source was asked for chunk {} that another peer has", r.chunk);
        }
    }

    #[test]
    fn spreads_over_peers_and_completes() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(400), 3);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::All);
        let reqs = s.poll(T0);
        assert!(reqs.iter().any(|r| r.peer == p[0]) && reqs.iter().any(|r| r.peer == p[1]));
        let mut pending = reqs;
        while let Some(r) = pending.pop() {
            let cancels = s.complete(r, Outcome::Verified, T0);
            pending.retain(|x| !cancels.contains(x));
            pending.extend(s.poll(T0));
        }
        assert!(s.is_complete());
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(1), 5);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::All);
        let reqs = s.poll(T0);
        assert_eq!(reqs.len(), 2, "the single chunk is asked of both peers: {reqs:?}");
        assert_eq!(reqs[0].chunk, reqs[1].chunk);
        let cancels = s.complete(reqs[0], Outcome::Verified, T0);
        assert_eq!(cancels, vec![reqs[1]]);
        assert!(s.is_complete());
        assert_eq!(s.in_flight(), 0);
        assert!(s.poll(T0).is_empty());
    }

    #[test]
    fn corrupt_chunk_is_refetched_elsewhere_and_bad_peer_dropped() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(5), 9);
        s.set_peer(p[0], Have::All);
        let r = s.poll(T0);
        let first = r[0];
        for x in &r[1..] {
            s.complete(*x, Outcome::Failed, T0);
        }
        s.complete(first, Outcome::Corrupt, T0);
        // Only the bad peer: chunk `first` cannot be asked of it again.
        let retry = s.poll(T0);
        assert!(!retry.is_empty() && retry.iter().all(|x| x.chunk != first.chunk));
        s.set_peer(p[1], Have::All);
        let again = s.poll(T0);
        assert!(again.contains(&Request { peer: p[1], chunk: first.chunk }), "{again:?}");
        for x in retry.iter().take(2) {
            s.complete(*x, Outcome::Corrupt, T0);
        }
        assert_eq!(s.peer_count(), 1, "three strikes drop the peer");
        s.set_peer(p[0], Have::All);
        assert_eq!(s.peer_count(), 1, "and it is not taken back");
    }

    #[test]
    fn busy_defers_the_chunk_at_that_peer_only() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(1), 4);
        s.set_peer(p[0], Have::All);
        let r = s.poll(T0);
        assert_eq!(r.len(), 1);
        s.complete(r[0], Outcome::Busy, T0);
        assert!(s.poll(T0).is_empty(), "not asked again right away");
        assert_eq!(s.next_wakeup(T0), Some(BUSY_BACKOFF));
        s.set_peer(p[1], Have::All);
        assert_eq!(s.poll(T0), vec![Request { peer: p[1], chunk: 0 }], "another peer is asked at once");
        s.remove_peer(&p[1]);
        assert_eq!(s.poll(BUSY_BACKOFF), vec![Request { peer: p[0], chunk: 0 }], "asked again after the backoff");
    }

    #[test]
    fn disconnect_returns_in_flight_work() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(3), 2);
        s.set_peer(p[0], Have::All);
        assert_eq!(s.poll(T0).len(), 3);
        s.remove_peer(&p[0]);
        assert!(s.is_stuck());
        assert_eq!(s.in_flight(), 0);
        s.set_peer(p[1], Have::All);
        assert_eq!(s.poll(T0).len(), 3);
    }

    #[test]
    fn pipeline_follows_throughput_and_latency() {
        let p = ids(2);
        let n = 20_000;
        let mut s = Swarm::new((0..n).map(|i| (ChunkHash::of(&u64::to_le_bytes(i)), 65536)).collect(), 1);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::All);
        // Peer 0 delivers a chunk every 0.1 ms after 10 ms latency; peer 1 every 20 ms.
        let mut now = T0;
        let mut queue: Vec<(Duration, Request)> = Vec::new();
        let mut free_at = [T0, T0];
        for _ in 0..4000 {
            for r in s.poll(now) {
                let k = if r.peer == p[0] { 0 } else { 1 };
                let step = Duration::from_micros(if k == 0 { 100 } else { 20_000 });
                free_at[k] = free_at[k].max(now + Duration::from_millis(10)) + step;
                queue.push((free_at[k], r));
            }
            queue.sort_by_key(|q| std::cmp::Reverse(q.0));
            let Some((t, r)) = queue.pop() else { break };
            now = t;
            s.complete(r, Outcome::Verified, now);
        }
        let (fast, fast_rate) = s.pipeline(&p[0]).unwrap();
        let (slow, slow_rate) = s.pipeline(&p[1]).unwrap();
        assert!(fast_rate.unwrap() > 10.0 * slow_rate.unwrap(), "rates {fast_rate:?} {slow_rate:?}");
        assert!(fast > 4 * slow, "the fast peer gets the deeper pipeline: {fast} vs {slow}");
        assert!(slow <= 6 * 65536, "a slow peer holds few chunks: {slow}");
    }
}
