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
//!   it sends a chunk or the backoff ends.
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

    /// Removes a chunk; returns true if it was there.
    pub fn remove(&mut self, i: usize) -> bool {
        match self.words.get_mut(i / 64) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w &= !(1 << (i % 64));
                was
            }
            None => false,
        }
    }

    /// True if the chunk is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Number of chunks in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
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

    /// Word `w` of the bitmap over `n` chunks.
    fn word(&self, w: usize, n: usize) -> u64 {
        match self {
            Have::All => full_word(w, n),
            Have::Some(s) => s.word(w) & full_word(w, n),
        }
    }
}

/// The bits of word `w` that stand for chunks below `n`.
fn full_word(w: usize, n: usize) -> u64 {
    let lo = w * 64;
    if lo + 64 <= n {
        u64::MAX
    } else if lo >= n {
        0
    } else {
        (1u64 << (n - lo)) - 1
    }
}

/// Calls `f` with each index whose bit is set in `word` (word number `w`).
fn each_bit(w: usize, mut word: u64, mut f: impl FnMut(usize)) {
    while word != 0 {
        f(w * 64 + word.trailing_zeros() as usize);
        word &= word - 1;
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
}

impl Peer {
    /// Has the whole version (a source), not just chunks of a running download (a relay).
    fn whole(&self) -> bool {
        matches!(self.have, Have::All)
    }

    fn has_room(&self, now: Duration) -> bool {
        self.paused_until.is_none_or(|t| t <= now) && (self.inflight == 0 || self.inflight_bytes < self.pipe.window)
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
    sent_at: HashMap<(Slot, usize), Duration>,
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

    /// The rarest chunk this peer can serve now.
    fn pick_fresh(&self, slot: Slot, p: &Peer, now: Duration) -> Option<usize> {
        let usable = |i: usize| p.have.contains(i) && self.chunks[i].askable(slot, now);
        if p.whole() || self.fresh.len() <= 64 {
            return self.fresh.iter().map(|k| k.2).find(|&i| usable(i));
        }
        // A partial peer: only the fresh chunks it has, rarest of them.
        let n = self.chunks.len();
        let mut best: Option<(u32, u64, usize)> = None;
        for w in 0..n.div_ceil(64) {
            each_bit(w, self.fresh_bits.word(w) & p.have.word(w, n), |i| {
                if let Some(k) = self.chunks[i].key(i) {
                    if best.is_none_or(|b| k < b) && usable(i) {
                        best = Some(k);
                    }
                }
            });
        }
        best.map(|k| k.2)
    }

    /// The first straggler (by index) this peer could duplicate.
    fn pick_endgame(&self, slot: Slot, p: &Peer, now: Duration) -> Option<usize> {
        let n = self.chunks.len();
        (0..n.div_ceil(64)).find_map(|w| {
            let mut word = self.spare_bits.word(w) & p.have.word(w, n);
            while word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                if self.chunks[i].askable(slot, now) {
                    return Some(i);
                }
                word &= word - 1;
            }
            None
        })
    }

    /// A random peer with room that has chunk `i` and may be asked for it now.
    fn holder_with_room(&mut self, i: usize, now: Duration) -> Option<Slot> {
        let n = self.peers.len();
        if n == 0 {
            return None;
        }
        let start = self.rng.gen_range(0..n);
        let open = self.total_room();
        if !open && !self.small_mesh() {
            self.blocked = true;
            return None;
        }
        let found = (0..n).map(|k| ((start + k) % n) as Slot).find(|&s| {
            self.peer(s).is_some_and(|p| p.has_room(now) && p.have.contains(i) && (open || self.beyond_window(p, i)))
                && self.chunks[i].askable(s, now)
        });
        if found.is_none() && !open {
            self.blocked = true;
        }
        found
    }

    /// True if `p` may be asked for chunk `i` although the total window is full: in
    /// a small mesh, a peer that has the whole file (a source) and fewer than
    /// [`SOURCE_PAST_WINDOW`] of our requests, or a peer with none of our requests
    /// that alone has this chunk. The source's upload is what every
    /// receiver waits on, first for chunks nobody else has, at the end for what the
    /// relays have not passed on yet: with every receiver's window full of requests
    /// queued at relays, the source sent at 80-90 % of its link in the N = 8 lab
    /// (26.2 s; 94-99 % and 25.8 s with this; N = 16 41.2 s, 39.5 s with this).
    /// Not in a large mesh: there the source has more askers than it serves, and a
    /// receiver that sees only part of the mesh cannot tell that nobody else has a
    /// chunk (simulator, N = 1000 seeing 50 peers each: 1.15x with the limit, 1.20x
    /// without it).
    fn beyond_window(&self, p: &Peer, i: usize) -> bool {
        self.may_pass_window(p) && (p.whole() || self.chunks[i].avail == 1)
    }

    /// The half of [`Swarm::beyond_window`] that does not depend on the chunk: cheap
    /// enough to skip picking a chunk for every other peer while the window is full.
    fn may_pass_window(&self, p: &Peer) -> bool {
        let depth = if p.whole() { SOURCE_PAST_WINDOW } else { 1 };
        self.small_mesh() && p.inflight < depth
    }

    /// Up to [`SMALL_MESH`] peers: every peer sees every other, and each is a large
    /// share of what a receiver can ask.
    fn small_mesh(&self) -> bool {
        self.live_peers <= SMALL_MESH
    }

    /// True if more may be in flight: a receiver that asks every peer for all it can
    /// serve has its whole file in flight at once in a large mesh, which splits its
    /// downlink and every uplink into slow trickles and starts the endgame at once.
    fn total_room(&self) -> bool {
        self.inflight_bytes == 0 || self.inflight_bytes < TOTAL_WINDOW.max(self.max_window)
    }

    fn start(&mut self, slot: Slot, i: usize, now: Duration, out: &mut Vec<Request>) {
        let len = self.chunks[i].len as u64;
        self.inflight_bytes += len;
        self.update(i, |c| c.inflight.push(slot));
        if let Some(p) = &mut self.peers[slot as usize] {
            p.inflight += 1;
            p.inflight_bytes += len;
        }
        self.sent_at.insert((slot, i), now);
        out.push(Request { peer: self.ids[slot as usize], chunk: i });
    }

    /// The requests to send now, filling every peer's pipeline.
    pub fn poll(&mut self, now: Duration) -> Vec<Request> {
        let mut out = Vec::new();
        // Deferrals that ran out make their peer worth asking again.
        while let Some(Reverse((t, _, slot))) = self.busy_ends.peek().copied() {
            if t > now {
                break;
            }
            self.busy_ends.pop();
            self.mark(slot);
        }
        if self.blocked && self.total_room() {
            self.blocked = false;
            for s in 0..self.peers.len() as Slot {
                if self.peer(s).is_some() {
                    self.mark(s);
                }
            }
        }
        let mut peers = std::mem::take(&mut self.dirty_peers);
        let mut chunks = std::mem::take(&mut self.dirty_chunks);
        for s in &peers {
            self.is_dirty[*s as usize] = false;
        }
        if self.missing == 0 {
            return out;
        }
        // Shuffle so no peer is always first in line for the rarest chunks.
        for i in (1..peers.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            peers.swap(i, j);
        }
        // One request per peer per pass, so the rarest chunks spread over peers.
        let mut active = peers.clone();
        while !active.is_empty() {
            active.retain(|&s| {
                let Some(p) = self.peer(s).filter(|p| p.has_room(now)) else { return false };
                let open = self.total_room();
                if !open && !self.may_pass_window(p) {
                    self.blocked = true;
                    return false;
                }
                match self.pick_fresh(s, p, now) {
                    Some(i) if open || self.beyond_window(p, i) => {
                        self.start(s, i, now, &mut out);
                        true
                    }
                    Some(_) => {
                        self.blocked = true;
                        false
                    }
                    None => false,
                }
            });
        }
        // Chunks that became fresh go to a peer that had room but nothing to do:
        // every other peer with room has already been given what it can serve.
        chunks.sort_by_key(|&i| self.chunks[i].key(i));
        chunks.dedup();
        for &i in &chunks {
            while self.chunks[i].key(i).is_some() {
                let Some(s) = self.holder_with_room(i, now) else { break };
                self.start(s, i, now, &mut out);
            }
        }
        // Endgame: every missing chunk is requested; idle capacity duplicates stragglers.
        if self.fresh.is_empty() {
            if !self.endgame {
                // Just entered: every peer with room is a candidate.
                peers = (0..self.peers.len() as Slot).collect();
                for i in (1..peers.len()).rev() {
                    let j = self.rng.gen_range(0..=i);
                    peers.swap(i, j);
                }
            }
            for &s in &peers {
                while let Some(p) = self.peer(s).filter(|p| p.has_room(now)) {
                    if !self.total_room() {
                        self.blocked = true;
                        break;
                    }
                    let Some(i) = self.pick_endgame(s, p, now) else { break };
                    self.start(s, i, now, &mut out);
                }
            }
            for &i in &chunks {
                while self.chunks[i].spare() {
                    let Some(s) = self.holder_with_room(i, now) else { break };
                    self.start(s, i, now, &mut out);
                }
            }
        }
        self.endgame = self.fresh.is_empty();
        // Requests started here made their chunks spare: already handled above.
        self.dirty_chunks.clear();
        out
    }

    /// Records how a request ended; returns duplicate requests to cancel.
    pub fn complete(&mut self, req: Request, outcome: Outcome, now: Duration) -> Vec<Request> {
        let Request { peer, chunk } = req;
        let len = self.chunks[chunk].len as u64;
        let slot = self.live_slot(&peer);
        // A removed peer keeps its slot: refusals and deferrals still apply if it comes back.
        let any_slot = self.slots.get(&peer).copied();
        let sent = slot.and_then(|s| self.sent_at.remove(&(s, chunk)));
        let avg = self.avg_chunk;
        if sent.is_some() {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(len);
        }
        if let Some(s) = slot {
            if let Some(p) = &mut self.peers[s as usize] {
                if sent.is_some() {
                    p.inflight = p.inflight.saturating_sub(1);
                    p.inflight_bytes = p.inflight_bytes.saturating_sub(len);
                }
                if let (Outcome::Verified, Some(t)) = (outcome, sent) {
                    p.pipe.delivered(len, now.saturating_sub(t), now, avg);
                    self.max_window = self.max_window.max(p.pipe.window);
                    // It is sending again: its upload has room.
                    p.paused_until = None;
                }
            }
            self.mark(s);
            self.update(chunk, |c| c.inflight.retain(|p| *p != s));
        }
        let mut cancel = Vec::new();
        match outcome {
            Outcome::Verified => {
                let others = self.chunks[chunk].inflight.clone();
                if !self.chunks[chunk].done {
                    self.missing -= 1;
                    self.missing_bytes = self.missing_bytes.saturating_sub(len);
                }
                self.update(chunk, |c| {
                    c.done = true;
                    c.inflight.clear();
                });
                for other in others {
                    if self.sent_at.remove(&(other, chunk)).is_some() {
                        self.inflight_bytes = self.inflight_bytes.saturating_sub(len);
                        if let Some(p) = &mut self.peers[other as usize] {
                            p.inflight = p.inflight.saturating_sub(1);
                            p.inflight_bytes = p.inflight_bytes.saturating_sub(len);
                        }
                        self.mark(other);
                    }
                    cancel.push(Request { peer: self.ids[other as usize], chunk });
                }
            }
            Outcome::Corrupt => {
                if let Some(s) = any_slot {
                    self.refuse(s, chunk);
                    let drop = self.peers[s as usize].as_mut().is_some_and(|p| {
                        p.strikes += 1;
                        p.strikes >= MAX_STRIKES
                    });
                    if drop {
                        self.remove_peer(&peer);
                        self.banned.push(peer);
                    }
                }
            }
            Outcome::NotFound => {
                if let Some(s) = any_slot {
                    self.refuse(s, chunk);
                }
            }
            Outcome::Busy => {
                if let Some(s) = any_slot {
                    // A relay refuses only while it serves MAX_PEERS others, one of which
                    // ends within about a chunk's time; in a mesh of a few peers each relay
                    // is a large share of what a receiver can ask, so ask it again sooner.
                    // (In a large mesh there are others to ask, and the simulator at
                    // N = 1000 went from 1.16x to 1.22x with the short pause.)
                    let relay = self.peer(s).is_some_and(|p| !p.whole());
                    let short = relay && self.live_peers <= QUICK_RETRY_MESH;
                    let until = now + if short { RELAY_FULL_BACKOFF } else { BUSY_BACKOFF };
                    // Its upload is the scarce resource: asking it for another chunk now
                    // would only earn another `Busy` (measured: 10 to 30 `Busy` per chunk
                    // delivered in a mesh of 64 to 256 receivers without the pause).
                    if let Some(Some(p)) = self.peers.get_mut(s as usize) {
                        p.paused_until = Some(until);
                    }
                    self.update(chunk, |c| {
                        c.busy_until.retain(|(p, t)| *p != s && *t > now);
                        c.busy_until.push((s, until));
                    });
                    self.busy_ends.push(Reverse((until, chunk, s)));
                }
            }
            Outcome::Failed => {}
        }
        cancel
    }

    fn refuse(&mut self, peer: Slot, chunk: usize) {
        if self.chunks[chunk].refused_by.contains(&peer) {
            return;
        }
        let had = self.peer(peer).is_some_and(|p| p.have.contains(chunk));
        self.update(chunk, |c| {
            c.refused_by.push(peer);
            if had {
                c.avail -= 1;
            }
        });
    }

    /// When a `Busy` deferral or pause ends, so a driver with nothing in flight knows
    /// when to poll. Looks at every peer: meant for that idle moment, not per event.
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        let deferrals = self
            .busy_ends
            .iter()
            .map(|Reverse(b)| *b)
            .filter(|(t, i, s)| {
                *t > now && self.chunks.get(*i).is_some_and(|c| !c.done && c.busy_until.contains(&(*s, *t)))
            })
            .map(|b| b.0);
        // A peer paused by a `Busy` stays paused after the chunk it refused arrived from
        // elsewhere, and it may be the only one with the rest (found by the property
        // test: a download with nothing in flight and no wake-up).
        let pauses = self.peers.iter().flatten().filter_map(|p| p.paused_until).filter(|t| *t > now);
        deferrals.chain(pauses).min()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

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

    /// `relays` peers hold chunks `0..relay_has` of 200 (256 KiB each) and fill the
    /// total window; then a source of the whole file appears. Returns its requests.
    fn source_after_full_window(relays: u8, relay_has: usize) -> (Vec<Request>, NodeId) {
        let (mut s, p) = relays_fill_the_window(relays, relay_has);
        s.set_peer(p[0], Have::All);
        let mut reqs = s.poll(T0);
        reqs.extend(s.poll(T0));
        (reqs, p[0])
    }

    /// Peers `1..=relays` hold chunks `0..relay_has` of 200 (256 KiB each) and fill
    /// the total window; peer 0 is not known yet.
    fn relays_fill_the_window(relays: u8, relay_has: usize) -> (Swarm, Vec<NodeId>) {
        let p = ids(relays + 1);
        let mut s = Swarm::new((0..200u64).map(|i| (ChunkHash::of(&i.to_le_bytes()), 1 << 18)).collect(), 13);
        for r in &p[1..] {
            s.set_peer(*r, Have::Some((0..relay_has).collect()));
        }
        let first = s.poll(T0);
        assert_eq!(first.len() as u64, TOTAL_WINDOW / (1 << 18), "the relays fill the total window: {first:?}");
        (s, p)
    }

    #[test]
    fn in_a_small_mesh_the_source_is_asked_for_new_data_beyond_a_full_window() {
        let (reqs, source) = source_after_full_window(3, 100);
        assert_eq!(reqs.len(), SOURCE_PAST_WINDOW, "requests beyond the window: {reqs:?}");
        assert!(reqs.iter().all(|r| r.peer == source), "{reqs:?}");
        assert!(reqs.iter().all(|r| r.chunk >= 100), "only chunks no relay has: {reqs:?}");
    }

    #[test]
    fn in_a_small_mesh_an_idle_source_helps_at_the_end_too() {
        // Nothing is new at the source any more: it is asked all the same.
        let (reqs, source) = source_after_full_window(3, 200);
        assert_eq!(reqs.len(), SOURCE_PAST_WINDOW, "{reqs:?}");
        assert!(reqs.iter().all(|r| r.peer == source), "{reqs:?}");
    }

    #[test]
    fn past_a_full_window_a_source_gets_a_new_request_as_one_is_answered() {
        let (mut s, p) = relays_fill_the_window(3, 100);
        s.set_peer(p[0], Have::All);
        let at_source = s.poll(T0);
        assert_eq!(at_source.len(), SOURCE_PAST_WINDOW, "{at_source:?}");
        assert!(s.poll(T0).is_empty(), "no more than {SOURCE_PAST_WINDOW} at the source");
        s.complete(at_source[0], Outcome::Verified, T0);
        assert_eq!(s.poll(T0).iter().map(|r| r.peer).collect::<Vec<_>>(), vec![p[0]], "one answered, one more asked");
    }

    // The tests below tell a source from a lone-holder relay only if the two differ.
    const _: () = assert!(SOURCE_PAST_WINDOW > 1);

    #[test]
    fn past_a_full_window_a_lone_holder_that_is_not_the_source_gets_one_request() {
        let (mut s, p) = relays_fill_the_window(3, 100);
        // A relay that alone has chunks 100..200: asked once, not SOURCE_PAST_WINDOW times.
        s.set_peer(p[0], Have::Some((100..200).collect()));
        assert_eq!(s.poll(T0).iter().map(|r| r.peer).collect::<Vec<_>>(), vec![p[0]]);
        assert!(s.poll(T0).is_empty());
    }

    #[test]
    fn in_a_large_mesh_a_full_window_stays_shut_for_the_source_too() {
        for relay_has in [100, 200] {
            let (reqs, _) = source_after_full_window(SMALL_MESH as u8 + 1, relay_has);
            assert!(reqs.is_empty(), "{reqs:?}");
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
    fn busy_pauses_the_peer_until_it_sends_again() {
        let p = ids(1);
        let mut s = Swarm::new(chunks(100), 6);
        s.set_peer(p[0], Have::All);
        let first = s.poll(T0);
        assert!(first.len() >= 3, "{first:?}");
        s.complete(first[0], Outcome::Busy, T0);
        s.complete(first[1], Outcome::Failed, T0);
        assert!(s.poll(T0).is_empty(), "room, chunks, but the peer said it is busy");
        s.complete(first[2], Outcome::Verified, T0);
        let again = s.poll(T0);
        assert!(!again.is_empty() && again.iter().all(|r| r.chunk != first[0].chunk), "it sent a chunk: {again:?}");
        s.complete(again[0], Outcome::Busy, T0);
        assert!(s.poll(T0).is_empty());
        assert!(!s.poll(BUSY_BACKOFF).is_empty(), "the pause ends with the backoff");
    }

    #[test]
    fn a_paused_peer_wakes_the_driver_after_its_refused_chunk_came_from_elsewhere() {
        let p = ids(2);
        // 1 MiB chunks: a fresh pipeline holds one, so the source is asked for one.
        let big: Vec<(ChunkHash, u32)> = (0..2u8).map(|i| (ChunkHash::of(&[i]), 1 << 20)).collect();
        let mut s = Swarm::new(big, 3);
        s.set_peer(p[0], Have::All);
        let first = s.poll(T0);
        assert_eq!(first.len(), 1, "{first:?}");
        let (refused, other) = (first[0].chunk, 1 - first[0].chunk);
        s.complete(first[0], Outcome::Busy, T0);
        s.set_peer(p[1], set(&[refused]));
        let relay = s.poll(T0);
        assert_eq!(relay, vec![Request { peer: p[1], chunk: refused }]);
        s.complete(relay[0], Outcome::Verified, T0);
        assert!(s.poll(T0).is_empty() && s.in_flight() == 0, "the rest is at the paused source only");
        assert_eq!(s.next_wakeup(T0), Some(BUSY_BACKOFF), "nothing in flight, but the pause ends");
        assert_eq!(s.poll(BUSY_BACKOFF), vec![Request { peer: p[0], chunk: other }]);
    }

    #[test]
    fn a_busy_relay_is_asked_again_sooner_than_a_busy_source() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(100), 6);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::Some((0..100).collect()));
        for r in s.poll(T0) {
            s.complete(r, Outcome::Busy, T0);
        }
        assert!(s.poll(T0).is_empty(), "both paused");
        let asked = |reqs: Vec<Request>, who: NodeId| reqs.iter().any(|r| r.peer == who);
        let soon = s.poll(RELAY_FULL_BACKOFF);
        assert!(asked(soon.clone(), p[1]) && !asked(soon, p[0]), "the relay's pause is shorter");
        assert!(asked(s.poll(BUSY_BACKOFF), p[0]), "the source's pause ends with BUSY_BACKOFF");
    }

    #[test]
    fn in_a_larger_mesh_a_busy_relay_waits_the_full_backoff() {
        let p = ids(QUICK_RETRY_MESH as u8 + 1);
        let mut s = Swarm::new(chunks(400), 6);
        // p[0] alone has chunks 200..400, so only the pause keeps it from being asked.
        s.set_peer(p[0], Have::Some((200..400).collect()));
        for id in &p[1..] {
            s.set_peer(*id, Have::Some((0..200).collect()));
        }
        let first = s.poll(T0);
        let refused = first.iter().find(|r| r.peer == p[0]).copied().expect("the only holder is asked");
        for r in first {
            s.complete(r, if r == refused { Outcome::Busy } else { Outcome::Failed }, T0);
        }
        let asked = |reqs: &[Request]| reqs.iter().any(|r| r.peer == refused.peer);
        assert!(!asked(&s.poll(RELAY_FULL_BACKOFF)), "still paused");
        assert!(asked(&s.poll(BUSY_BACKOFF)));
    }

    #[test]
    fn announcements_as_news_or_as_whole_maps_agree() {
        let p = ids(3);
        let mut a = Swarm::new(chunks(200), 8);
        let mut b = Swarm::new(chunks(200), 8);
        for s in [&mut a, &mut b] {
            s.set_peer(p[0], set(&[1, 2]));
            s.set_peer(p[1], set(&[]));
        }
        a.add_haves(&p[0], [3, 150, 199]);
        a.add_have(&p[1], 150);
        b.set_peer(p[0], set(&[1, 2, 3, 150, 199]));
        b.set_peer(p[1], set(&[150]));
        let first = a.poll(T0);
        assert_eq!(first, b.poll(T0));
        let asked: BTreeSet<usize> = first.iter().map(|r| r.chunk).collect();
        assert_eq!(asked, [1, 2, 3, 150, 199].into_iter().collect(), "only what was announced");
        // A peer that completes moves from part of the file to all of it.
        a.set_peer(p[1], Have::All);
        b.set_peer(p[1], Have::All);
        let second = a.poll(T0);
        assert_eq!(second, b.poll(T0));
        let all: BTreeSet<usize> = first.iter().chain(&second).map(|r| r.chunk).collect();
        assert_eq!(all.len(), 200, "the rest is asked of the peer that now has everything");
        assert!(second.iter().all(|r| r.peer == p[1] || asked.contains(&r.chunk)), "{second:?}");
    }

    #[test]
    fn all_peers_together_respect_the_total_window() {
        let p = ids(20);
        let mut s = Swarm::new((0..1000u64).map(|i| (ChunkHash::of(&i.to_le_bytes()), 1 << 16)).collect(), 12);
        for id in &p {
            s.set_peer(*id, Have::All);
        }
        let first = s.poll(T0);
        assert_eq!(first.len() as u64, TOTAL_WINDOW >> 16, "not 20 peers times their own pipeline");
        assert!(s.poll(T0).is_empty());
        s.complete(first[0], Outcome::Verified, T0);
        let next = s.poll(T0);
        assert_eq!(next.len(), 1, "one chunk arrived, one more is asked: {next:?}");
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

    /// How a peer of the property test answers.
    #[derive(Clone, Copy, Debug)]
    enum Answers {
        /// Every chunk it is asked for.
        Honestly,
        /// `Busy` about every other time, the chunk otherwise.
        Busily,
        /// Data that fails its hash.
        Corruptly,
        /// "Not found" for chunks it announced.
        Falsely,
    }

    /// One peer of the property test: what it announces, how it answers, when it leaves.
    #[derive(Clone, Debug)]
    struct Spec {
        whole: bool,
        has: Vec<bool>,
        answers: Answers,
        leaves_at: Option<usize>,
    }

    fn spec(n: usize) -> impl Strategy<Value = Spec> {
        let answers = prop_oneof![
            Just(Answers::Honestly),
            Just(Answers::Busily),
            Just(Answers::Corruptly),
            Just(Answers::Falsely)
        ];
        (any::<bool>(), proptest::collection::vec(any::<bool>(), n), answers, proptest::option::of(0usize..400))
            .prop_map(|(whole, has, answers, leaves_at)| Spec { whole, has, answers, leaves_at })
    }

    /// A download with its peers: peer 0 has everything, answers honestly or busily
    /// and stays, so the download can always finish; the others are anything.
    fn mesh() -> impl Strategy<Value = (Vec<u32>, Vec<Spec>, u64)> {
        proptest::collection::vec(1u32..300_000, 1..80).prop_flat_map(|lens| {
            let n = lens.len();
            let first = prop_oneof![Just(Answers::Honestly), Just(Answers::Busily)].prop_map(move |answers| Spec {
                whole: true,
                has: vec![true; n],
                answers,
                leaves_at: None,
            });
            let others = proptest::collection::vec(spec(n), 0..10);
            (Just(lens), first, others, any::<u64>())
                .prop_map(|(lens, first, others, seed)| (lens, std::iter::once(first).chain(others).collect(), seed))
        })
    }

    proptest! {
        /// Driven by peers that are busy, lie, corrupt data or leave, answering in any
        /// order: every request is for a chunk its peer announced, still missing, not
        /// refused by that peer and not deferred there; duplicates stay within the
        /// endgame's copies and are cancelled by the first answer; and the download
        /// always completes.
        #[test]
        fn every_download_completes_and_every_request_is_fair((lens, specs, seed) in mesh()) {
            use rand::Rng;
            let n = lens.len();
            let chunk_list: Vec<(ChunkHash, u32)> =
                lens.iter().enumerate().map(|(i, l)| (ChunkHash::of(&i.to_le_bytes()), *l)).collect();
            let peers = ids(specs.len() as u8);
            let mut s = Swarm::new(chunk_list, seed);
            let mut has: Vec<Vec<bool>> = specs.iter().map(|p| p.has.clone()).collect();
            for (id, p) in peers.iter().zip(&specs) {
                let have = if p.whole {
                    Have::All
                } else {
                    Have::Some((0..n).filter(|i| p.has[*i]).collect())
                };
                s.set_peer(*id, have);
            }
            let mut rng = StdRng::seed_from_u64(seed);
            let mut now = Duration::ZERO;
            let mut done = vec![false; n];
            let mut live = vec![true; specs.len()];
            let mut strikes = vec![0u32; specs.len()];
            let mut refused: HashSet<(usize, usize)> = HashSet::new();
            let mut deferred: HashMap<(usize, usize), Duration> = HashMap::new();
            let mut out: Vec<(usize, usize)> = Vec::new();
            let slot = |id: &NodeId| peers.iter().position(|p| p == id).unwrap();
            for step in 0..100_000 {
                for (i, p) in specs.iter().enumerate() {
                    if p.leaves_at == Some(step) && live[i] {
                        s.remove_peer(&peers[i]);
                        live[i] = false;
                    }
                }
                // A relay's download goes on: now and then it announces one more chunk.
                if rng.gen_ratio(1, 8) {
                    let (i, c) = (rng.gen_range(0..specs.len()), rng.gen_range(0..n));
                    if !specs[i].whole && !has[i][c] {
                        has[i][c] = true;
                        s.add_have(&peers[i], c);
                    }
                }
                for r in s.poll(now) {
                    let (p, c) = (slot(&r.peer), r.chunk);
                    prop_assert!(live[p], "asked peer {p}, which is gone");
                    prop_assert!(specs[p].whole || has[p][c], "asked peer {p} for chunk {c}, never announced");
                    prop_assert!(!done[c], "asked for chunk {c}, already verified");
                    prop_assert!(!refused.contains(&(p, c)), "asked peer {p} again for chunk {c} it failed");
                    prop_assert!(deferred.get(&(p, c)).is_none_or(|t| *t <= now), "asked busy peer {p} for {c} too soon");
                    prop_assert!(!out.contains(&(p, c)), "asked peer {p} twice at once for chunk {c}");
                    out.push((p, c));
                    // Requests to a peer that left or was dropped still run out in
                    // the driver, but no longer count as copies.
                    let copies = out.iter().filter(|o| o.1 == c && live[o.0]).count();
                    prop_assert!(copies <= ENDGAME_COPIES, "chunk {c} in flight {copies} times");
                }
                if s.is_complete() {
                    break;
                }
                if out.is_empty() {
                    // Nothing in flight: only a `Busy` deferral may hold the download back.
                    let wake = s.next_wakeup(now);
                    prop_assert!(wake.is_some(), "stalled at step {step} with {} chunks missing", n - s.done_count());
                    now = wake.unwrap_or(now);
                    continue;
                }
                let (p, c) = out.swap_remove(rng.gen_range(0..out.len()));
                let outcome = if !live[p] {
                    Outcome::Failed
                } else {
                    match specs[p].answers {
                        Answers::Honestly => Outcome::Verified,
                        Answers::Busily if rng.gen_bool(0.5) => Outcome::Busy,
                        Answers::Busily => Outcome::Verified,
                        Answers::Corruptly => Outcome::Corrupt,
                        Answers::Falsely => Outcome::NotFound,
                    }
                };
                match outcome {
                    Outcome::Verified => done[c] = true,
                    Outcome::Busy => {
                        deferred.insert((p, c), now + RELAY_FULL_BACKOFF.min(BUSY_BACKOFF));
                    }
                    Outcome::Corrupt | Outcome::NotFound => {
                        refused.insert((p, c));
                    }
                    Outcome::Failed => {}
                }
                if outcome == Outcome::Corrupt {
                    strikes[p] += 1;
                    if strikes[p] >= MAX_STRIKES {
                        live[p] = false;
                    }
                }
                let cancels = s.complete(Request { peer: peers[p], chunk: c }, outcome, now);
                for r in cancels {
                    let o = (slot(&r.peer), r.chunk);
                    prop_assert!(outcome == Outcome::Verified && o.1 == c, "cancelled {o:?} after {outcome:?} of {c}");
                    let at = out.iter().position(|x| *x == o);
                    prop_assert!(at.is_some(), "cancelled {o:?}, which was not in flight");
                    out.swap_remove(at.unwrap_or_default());
                }
                let missing: u64 = (0..n).filter(|i| !done[*i]).map(|i| lens[i] as u64).sum();
                prop_assert_eq!(s.missing_bytes(), missing);
                now += Duration::from_millis(rng.gen_range(0..20));
            }
            prop_assert!(s.is_complete(), "not complete after 100 000 steps: {} of {n} chunks", s.done_count());
            prop_assert!(done.iter().all(|d| *d));
        }
    }
}
