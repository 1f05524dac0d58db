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
//! - all peers together hold at most [`TOTAL_WINDOW`] (or the largest pipeline one
//!   peer has needed, if more), so in a large mesh a download does not ask for its
//!   whole file at once from a hundred peers; in a small mesh a peer with the whole
//!   file is asked anyway while it has fewer than [`SOURCE_PAST_WINDOW`] of our
//!   requests, and so is a peer that alone has a chunk while it has none;
//! - endgame: once every missing chunk is requested, idle capacity duplicates the
//!   stragglers and the first answer cancels the others;
//! - a corrupt chunk is not asked of that peer again, and after [`MAX_STRIKES`] the
//!   peer is dropped; `Busy` defers the chunk at that peer for [`BUSY_BACKOFF`]
//!   ([`RELAY_FULL_BACKOFF`] for a relay in a mesh of up to [`QUICK_RETRY_MESH`]
//!   peers) and pauses the peer until
//!   it sends a chunk or the backoff ends;
//! - every request has a deadline from the peer's measured rate (see [`deadline`]):
//!   a peer that misses one loses its requests to others and gets one at a time
//!   until it delivers; one that misses [`MAX_TIMEOUTS`] in a row, or answers only
//!   `Busy` for [`BUSY_LIMIT`] while nothing arrives from anyone, is dropped.
//!
//! Cost: a download may see a thousand peers and thousands of chunks, so nothing
//! here scans every peer or every chunk per event. [`Swarm::poll`] only looks at
//! what changed since the last poll (peers that gained room or chunks, chunks that
//! became requestable, `Busy` deferrals that ran out, and every peer once the total
//! window opens again); the rules above make every other peer's answer the same as
//! last time.

use crate::ids::ChunkHash;
use crate::ids::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

mod deadline;
mod schedule;
mod set;
#[cfg(test)]
mod tests;

pub use deadline::{Dropped, BUSY_LIMIT, DEADLINE_FACTOR, FIRST_DEADLINE, MAX_TIMEOUTS, MIN_DEADLINE};
use set::each_bit;
pub use set::{ChunkSet, Have};

/// Corrupt chunks after which a peer is dropped from this download.
pub const MAX_STRIKES: u32 = 3;
/// Bytes in flight per peer before its throughput is measured.
pub const INITIAL_WINDOW: u64 = 1 << 20;
/// Upper bound of a peer's pipeline (the QUIC connection window).
pub const MAX_WINDOW: u64 = 64 << 20;
/// Bytes in flight over all peers, unless one peer's pipeline alone needs more.
pub const TOTAL_WINDOW: u64 = 2 << 20;
/// How long a peer that answered `Busy` is not asked for that chunk again.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(300);
/// How long a relay (a peer still downloading) that answered `Busy` is not asked
/// again, in a mesh of up to [`QUICK_RETRY_MESH`] peers.
pub const RELAY_FULL_BACKOFF: Duration = Duration::from_millis(100);
/// Up to this many peers, a busy relay is asked again after [`RELAY_FULL_BACKOFF`].
/// Beyond it each relay is a smaller share of what a receiver can ask, and every
/// `Busy` costs both sides a stream: the N = 16 lab (17 daemons on 2 cores, 95 %
/// busy) answered about 3 700 `Busy` per host with the quick retry and 2 400
/// without, and took 31.8 s against 31.0 s (mean of 6 alternating pairs; 4 of 6
/// faster). Simulator, N = 16: 1.049x with it, 1.051x without.
pub const QUICK_RETRY_MESH: usize = 8;
/// At most this many peers fetch the same chunk in the endgame.
const ENDGAME_COPIES: usize = 2;
/// Up to this many peers, the source may be asked beyond the total window (see
/// `Swarm::beyond_window`).
pub const SMALL_MESH: usize = 16;
/// Requests a receiver whose total window is full may still have at a peer with the
/// whole file (the source, or a receiver that finished) in a small mesh (see
/// `Swarm::beyond_window`). With one, the source's link idled whenever each of its
/// few askers was between a reply and its next request: in the N = 8 lab the
/// source's uplink ran at 96.1-96.4 % with one and 97.4-97.6 % with three (2
/// alternating pairs); completion did not change beyond the noise (25.04 s against
/// 24.85 s, mean of 3 alternating pairs; 25.03 s in 3 more runs with three), as the
/// receivers' downlinks are the tight link there. Simulator at RTT 50 ms, mean of
/// 4 seeds, N = 8 / 16: 1.039x / 1.059x with one, 1.036x / 1.052x with two,
/// 1.033x / 1.050x with three, 1.032x / 1.052x with four.
pub const SOURCE_PAST_WINDOW: usize = 3;
/// Throughput is sampled over at least this long.
const RATE_INTERVAL: Duration = Duration::from_millis(100);

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

/// A peer's index in [`Swarm::peers`]; a peer keeps its slot for the whole download.
type Slot = u32;

#[derive(Debug)]
struct Chunk {
    hash: ChunkHash,
    len: u32,
    done: bool,
    inflight: Vec<Slot>,
    refused_by: Vec<Slot>,
    busy_until: Vec<(Slot, Duration)>,
    tiebreak: u64,
    /// Usable peers that have it (not refused).
    avail: u32,
}

impl Chunk {
    fn key(&self, idx: usize) -> Option<(u32, u64, usize)> {
        (!self.done && self.inflight.is_empty() && self.avail > 0).then_some((self.avail, self.tiebreak, idx))
    }

    /// In flight but at fewer peers than the endgame allows: a peer with idle capacity may duplicate it.
    fn spare(&self) -> bool {
        !self.done && !self.inflight.is_empty() && self.inflight.len() < ENDGAME_COPIES
    }

    fn busy_at(&self, peer: Slot, now: Duration) -> bool {
        self.busy_until.iter().any(|(p, t)| *p == peer && *t > now)
    }

    /// True if `peer` may be asked for this chunk now (beyond having it).
    fn askable(&self, peer: Slot, now: Duration) -> bool {
        !self.refused_by.contains(&peer) && !self.inflight.contains(&peer) && !self.busy_at(peer, now)
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
    /// Answered `Busy`: no new requests until it sends a chunk or this time passes.
    paused_until: Option<Duration>,
    /// Deadlines missed since it last delivered.
    timeouts: u32,
    /// Missed a deadline and delivered nothing since: one request at a time.
    probation: bool,
    /// Answered `Busy` since then, without delivering in between.
    busy_since: Option<Duration>,
}

impl Peer {
    /// Has the whole version (a source), not just chunks of a running download (a relay).
    fn whole(&self) -> bool {
        matches!(self.have, Have::All)
    }

    fn has_room(&self, now: Duration) -> bool {
        self.paused_until.is_none_or(|t| t <= now)
            && (self.inflight == 0 || (!self.probation && self.inflight_bytes < self.pipe.window))
    }
}

/// The scheduler state of one download.
#[derive(Debug)]
pub struct Swarm {
    chunks: Vec<Chunk>,
    /// Usable peers by slot; `None` once removed.
    peers: Vec<Option<Peer>>,
    /// Node id of each slot.
    ids: Vec<NodeId>,
    slots: HashMap<NodeId, Slot>,
    live_peers: usize,
    /// Chunks not done, not in flight, held by someone: (avail, tiebreak, index).
    fresh: BTreeSet<(u32, u64, usize)>,
    /// The chunks of `fresh`, as a bitmap to intersect with what a peer has.
    fresh_bits: ChunkSet,
    /// Chunks a peer may duplicate in the endgame ([`Chunk::spare`]).
    spare_bits: ChunkSet,
    /// Chunks not done yet.
    missing: usize,
    /// Bytes of the chunks not yet verified.
    missing_bytes: u64,
    /// Requests in flight: when each was sent and its deadline.
    sent_at: HashMap<(Slot, usize), (Duration, Duration)>,
    /// Deadlines of requests, earliest first; an entry whose request was answered
    /// (or sent again, with another deadline) is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Duration, Slot, usize)>>,
    /// When a chunk last arrived from anyone.
    last_progress: Option<Duration>,
    /// Peers dropped since the driver last asked, and why.
    dropped: Vec<(NodeId, Dropped)>,
    /// `Busy` deferrals by end time, to wake the peer when one runs out.
    busy_ends: BinaryHeap<Reverse<(Duration, usize, Slot)>>,
    /// Peers whose choice may have changed since the last poll (room, chunks, deferrals).
    dirty_peers: Vec<Slot>,
    is_dirty: Vec<bool>,
    /// Chunks that became fresh or spare since the last poll.
    dirty_chunks: Vec<usize>,
    /// The last poll ended in the endgame (every chunk anyone has was in flight).
    endgame: bool,
    /// Bytes in flight over all peers.
    inflight_bytes: u64,
    /// The largest pipeline any peer has had.
    max_window: u64,
    /// A poll stopped at the total window: when it opens, every peer is a candidate.
    blocked: bool,
    /// Peers dropped (corrupt data, deadlines missed, only `Busy`): never added again.
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
        let n = chunks.len();
        Self {
            chunks,
            peers: Vec::new(),
            ids: Vec::new(),
            slots: HashMap::new(),
            live_peers: 0,
            fresh: BTreeSet::new(),
            fresh_bits: ChunkSet::new(n),
            spare_bits: ChunkSet::new(n),
            missing: n,
            missing_bytes: total,
            sent_at: HashMap::new(),
            deadlines: BinaryHeap::new(),
            last_progress: None,
            dropped: Vec::new(),
            busy_ends: BinaryHeap::new(),
            dirty_peers: Vec::new(),
            is_dirty: Vec::new(),
            dirty_chunks: Vec::new(),
            endgame: false,
            inflight_bytes: 0,
            max_window: INITIAL_WINDOW,
            blocked: false,
            banned: Vec::new(),
            avg_chunk,
            rng,
        }
    }

    /// Hash and length of a chunk.
    pub fn chunk(&self, idx: usize) -> (ChunkHash, u32) {
        (self.chunks[idx].hash, self.chunks[idx].len)
    }

    /// How many usable peers hold chunk `idx` (announced, not dropped).
    pub fn holders(&self, idx: usize) -> u32 {
        self.chunks[idx].avail
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when there is nothing to download.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Changes one chunk and keeps the rarity order and the bitmaps in step.
    fn update(&mut self, idx: usize, f: impl FnOnce(&mut Chunk)) {
        let c = &mut self.chunks[idx];
        let (key, spare) = (c.key(idx), c.spare());
        f(c);
        let (new_key, new_spare) = (c.key(idx), c.spare());
        if key != new_key {
            if let Some(k) = key {
                self.fresh.remove(&k);
            }
            match new_key {
                Some(k) => {
                    self.fresh.insert(k);
                    if key.is_none() {
                        self.fresh_bits.insert(idx);
                        self.dirty_chunks.push(idx);
                    }
                }
                None => {
                    self.fresh_bits.remove(idx);
                }
            }
        }
        if spare != new_spare {
            if new_spare {
                self.spare_bits.insert(idx);
                self.dirty_chunks.push(idx);
            } else {
                self.spare_bits.remove(idx);
            }
        }
    }

    fn mark(&mut self, slot: Slot) {
        if !std::mem::replace(&mut self.is_dirty[slot as usize], true) {
            self.dirty_peers.push(slot);
        }
    }

    fn counts_for(&self, peer: Slot, idx: usize) -> bool {
        !self.chunks[idx].refused_by.contains(&peer)
    }

    /// The live peer in `slot`.
    fn peer(&self, slot: Slot) -> Option<&Peer> {
        self.peers.get(slot as usize).and_then(|p| p.as_ref())
    }

    fn live_slot(&self, id: &NodeId) -> Option<Slot> {
        self.slots.get(id).copied().filter(|s| self.peer(*s).is_some())
    }

    /// Adds a source, or replaces what it has (a newer announcement).
    /// A peer dropped for corrupt data stays out.
    pub fn set_peer(&mut self, peer: NodeId, have: Have) {
        if self.banned.contains(&peer) {
            return;
        }
        let slot = match self.slots.get(&peer) {
            Some(s) => *s,
            None => {
                let s = self.peers.len() as Slot;
                self.peers.push(None);
                self.ids.push(peer);
                self.is_dirty.push(false);
                self.slots.insert(peer, s);
                s
            }
        };
        let n = self.chunks.len();
        // Only the chunks whose bit changed move in the rarity order.
        for w in 0..n.div_ceil(64) {
            let before = self.peer(slot).map_or(0, |p| p.have.word(w, n));
            let after = have.word(w, n);
            each_bit(w, before ^ after, |i| {
                if self.counts_for(slot, i) {
                    let gained = after & (1 << (i % 64)) != 0;
                    self.update(i, |c| if gained { c.avail += 1 } else { c.avail -= 1 });
                }
            });
        }
        match &mut self.peers[slot as usize] {
            Some(p) => p.have = have,
            empty => {
                *empty = Some(Peer {
                    have,
                    inflight: 0,
                    inflight_bytes: 0,
                    strikes: 0,
                    pipe: Pipe::new(),
                    paused_until: None,
                    timeouts: 0,
                    probation: false,
                    busy_since: None,
                });
                self.live_peers += 1;
            }
        }
        self.mark(slot);
    }

    /// Records that a peer gained one chunk (cheaper than [`Swarm::set_peer`]).
    pub fn add_have(&mut self, peer: &NodeId, idx: usize) {
        self.add_haves(peer, [idx]);
    }

    /// Records that a peer gained these chunks (an announcement's news, without the old part).
    pub fn add_haves(&mut self, peer: &NodeId, idxs: impl IntoIterator<Item = usize>) {
        let Some(slot) = self.live_slot(peer) else { return };
        let mut any = false;
        for idx in idxs {
            if idx >= self.chunks.len() {
                continue;
            }
            let gained = match &mut self.peers[slot as usize] {
                Some(Peer { have: Have::Some(s), .. }) => s.insert(idx),
                _ => false,
            };
            if gained && self.counts_for(slot, idx) {
                self.update(idx, |c| c.avail += 1);
                any = true;
            }
        }
        if any {
            self.mark(slot);
        }
    }

    /// True if the peer is known and has the whole version.
    pub fn has_all(&self, peer: &NodeId) -> bool {
        self.live_slot(peer).and_then(|s| self.peer(s)).is_some_and(Peer::whole)
    }

    /// The transport's smoothed round-trip time to a peer (a floor for its latency).
    pub fn set_rtt(&mut self, peer: &NodeId, rtt: Duration) {
        if let Some(s) = self.live_slot(peer) {
            if let Some(p) = &mut self.peers[s as usize] {
                p.pipe.rtt = Some(rtt);
            }
        }
    }

    /// The peer's current pipeline in bytes and measured throughput in bytes/s.
    pub fn pipeline(&self, peer: &NodeId) -> Option<(u64, Option<f64>)> {
        self.live_slot(peer).and_then(|s| self.peer(s)).map(|p| (p.pipe.window, p.pipe.rate))
    }

    /// Forgets a peer; its in-flight requests become available to others.
    pub fn remove_peer(&mut self, peer: &NodeId) {
        let Some(slot) = self.live_slot(peer) else { return };
        let Some(p) = self.peers[slot as usize].take() else { return };
        self.live_peers -= 1;
        for i in 0..self.chunks.len() {
            let had = p.have.contains(i) && !self.chunks[i].refused_by.contains(&slot);
            let inflight = self.chunks[i].inflight.contains(&slot);
            if had || inflight {
                self.update(i, |c| {
                    if had {
                        c.avail -= 1;
                    }
                    c.inflight.retain(|x| *x != slot);
                });
            }
        }
        self.sent_at.retain(|r, _| r.0 != slot);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(p.inflight_bytes);
    }

    /// Peers still usable.
    pub fn peer_count(&self) -> usize {
        self.live_peers
    }

    /// True when every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// True when chunks are missing that no usable peer can serve and nothing is in flight.
    pub fn is_stuck(&self) -> bool {
        self.missing != 0 && self.sent_at.is_empty() && self.chunks.iter().all(|c| c.done || c.avail == 0)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.sent_at.len()
    }

    /// Chunks verified so far.
    pub fn done_count(&self) -> usize {
        self.chunks.len() - self.missing
    }

    /// Bytes still to verify.
    pub fn missing_bytes(&self) -> u64 {
        self.missing_bytes
    }
}
