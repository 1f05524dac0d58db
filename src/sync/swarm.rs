//! The swarm scheduler: which chunk to ask of which peer. A pure state machine:
//! the driver tells it what peers have and what arrived; it answers with requests.
//!
//! Rules: rarest chunk first with a random tie-break; a bounded pipeline per peer;
//! never ask a peer for a chunk it has not announced; in the endgame (every missing
//! chunk already requested) idle peers duplicate in-flight requests, and the first
//! answer cancels the others; a peer that sends a corrupt chunk is not asked for it
//! again, and after repeated failures not at all.

use crate::identity::NodeId;
use crate::index::ChunkHash;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};

/// Corrupt chunks after which a peer is dropped from this download.
pub const MAX_STRIKES: u32 = 3;
/// Requests in flight per peer until throughput measurement sizes the pipeline.
pub const DEFAULT_WINDOW: usize = 16;
/// At most this many peers fetch the same chunk in the endgame.
const ENDGAME_COPIES: usize = 2;

/// What a peer can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Have {
    /// The whole version (from its index).
    All,
    /// Only these chunk indexes (a download in progress).
    Some(HashSet<usize>),
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
    tiebreak: u64,
}

#[derive(Debug)]
struct Peer {
    have: Have,
    inflight: usize,
    window: usize,
    strikes: u32,
}

/// The scheduler state of one download.
#[derive(Debug)]
pub struct Swarm {
    chunks: Vec<Chunk>,
    peers: BTreeMap<NodeId, Peer>,
    remaining: usize,
    rng: StdRng,
}

impl Swarm {
    /// A download of these chunks; `seed` drives the random tie-break.
    pub fn new(chunks: Vec<(ChunkHash, u32)>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let chunks: Vec<Chunk> = chunks
            .into_iter()
            .map(|(hash, len)| Chunk {
                hash,
                len,
                done: false,
                inflight: vec![],
                refused_by: vec![],
                tiebreak: rng.gen(),
            })
            .collect();
        let remaining = chunks.len();
        Self { chunks, peers: BTreeMap::new(), remaining, rng }
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

    /// Adds a source (or replaces what it has).
    pub fn set_peer(&mut self, peer: NodeId, have: Have) {
        match self.peers.get_mut(&peer) {
            Some(p) => p.have = have,
            None => {
                self.peers.insert(peer, Peer { have, inflight: 0, window: DEFAULT_WINDOW, strikes: 0 });
            }
        }
    }

    /// Sets how many requests a peer may have in flight (from its measured bandwidth-delay product).
    pub fn set_window(&mut self, peer: &NodeId, window: usize) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.window = window.max(1);
        }
    }

    /// Forgets a peer; its in-flight requests become available to others.
    pub fn remove_peer(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
        for c in &mut self.chunks {
            c.inflight.retain(|p| p != peer);
        }
    }

    /// Peers still usable.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn peer_has(p: &Peer, idx: usize) -> bool {
        match &p.have {
            Have::All => true,
            Have::Some(s) => s.contains(&idx),
        }
    }

    fn availability(&self, idx: usize) -> usize {
        let c = &self.chunks[idx];
        self.peers.iter().filter(|(id, p)| !c.refused_by.contains(id) && Self::peer_has(p, idx)).count()
    }

    /// The requests to send now, filling every peer's pipeline.
    pub fn poll(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        if self.remaining == 0 {
            return out;
        }
        // Candidates not yet requested, rarest first, random among equals.
        let mut fresh: Vec<(usize, u64, usize)> = (0..self.chunks.len())
            .filter(|&i| !self.chunks[i].done && self.chunks[i].inflight.is_empty())
            .map(|i| (self.availability(i), self.chunks[i].tiebreak, i))
            .filter(|(a, _, _)| *a > 0)
            .collect();
        fresh.sort_unstable();
        let mut peer_ids: Vec<NodeId> = self.peers.keys().copied().collect();
        // Shuffle so no peer is always first in line for the rarest chunks.
        for i in (1..peer_ids.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            peer_ids.swap(i, j);
        }
        let mut taken = vec![false; fresh.len()];
        // Round-robin one request per peer per pass so the load spreads.
        loop {
            let mut progressed = false;
            for id in &peer_ids {
                let Some(p) = self.peers.get(id) else {
                    continue;
                };
                if p.inflight >= p.window {
                    continue;
                }
                let pick = fresh.iter().enumerate().find(|(k, (_, _, i))| {
                    !taken[*k] && Self::peer_has(p, *i) && !self.chunks[*i].refused_by.contains(id)
                });
                if let Some((k, &(_, _, i))) = pick {
                    taken[k] = true;
                    self.chunks[i].inflight.push(*id);
                    if let Some(p) = self.peers.get_mut(id) {
                        p.inflight += 1;
                    }
                    out.push(Request { peer: *id, chunk: i });
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        // Endgame: nothing fresh left anywhere; idle capacity duplicates stragglers.
        if taken.iter().all(|t| *t) {
            for id in &peer_ids {
                while let Some(p) = self.peers.get(id) {
                    if p.inflight >= p.window {
                        break;
                    }
                    let cand = (0..self.chunks.len()).find(|&i| {
                        let c = &self.chunks[i];
                        !c.done
                            && !c.inflight.is_empty()
                            && c.inflight.len() < ENDGAME_COPIES
                            && !c.inflight.contains(id)
                            && !c.refused_by.contains(id)
                            && Self::peer_has(p, i)
                    });
                    let Some(i) = cand else { break };
                    self.chunks[i].inflight.push(*id);
                    if let Some(p) = self.peers.get_mut(id) {
                        p.inflight += 1;
                    }
                    out.push(Request { peer: *id, chunk: i });
                }
            }
        }
        out
    }

    /// Records how a request ended; returns duplicate requests to cancel.
    pub fn complete(&mut self, req: Request, outcome: Outcome) -> Vec<Request> {
        let Request { peer, chunk } = req;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.inflight = p.inflight.saturating_sub(1);
        }
        let c = &mut self.chunks[chunk];
        c.inflight.retain(|p| *p != peer);
        let mut cancel = Vec::new();
        match outcome {
            Outcome::Verified => {
                if !c.done {
                    c.done = true;
                    self.remaining -= 1;
                }
                for other in std::mem::take(&mut c.inflight) {
                    cancel.push(Request { peer: other, chunk });
                    if let Some(p) = self.peers.get_mut(&other) {
                        p.inflight = p.inflight.saturating_sub(1);
                    }
                }
            }
            Outcome::Corrupt => {
                c.refused_by.push(peer);
                let drop = match self.peers.get_mut(&peer) {
                    Some(p) => {
                        p.strikes += 1;
                        p.strikes >= MAX_STRIKES
                    }
                    None => false,
                };
                if drop {
                    self.remove_peer(&peer);
                }
            }
            Outcome::NotFound => c.refused_by.push(peer),
            Outcome::Failed => {}
        }
        cancel
    }

    /// True when every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// True when chunks are missing that no usable peer can serve and nothing is in flight.
    pub fn is_stuck(&self) -> bool {
        self.remaining > 0
            && self.chunks.iter().all(|c| c.inflight.is_empty())
            && (0..self.chunks.len()).all(|i| self.chunks[i].done || self.availability(i) == 0)
    }

    /// Chunks verified so far.
    pub fn done_count(&self) -> usize {
        self.chunks.len() - self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId([i; 32])).collect()
    }
    fn chunks(n: usize) -> Vec<(ChunkHash, u32)> {
        (0..n).map(|i| (ChunkHash::of(&i.to_le_bytes()), 10)).collect()
    }

    #[test]
    fn never_asks_a_peer_for_what_it_lacks() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(10), 1);
        s.set_peer(p[0], Have::Some([0, 1, 2].into_iter().collect()));
        s.set_peer(p[1], Have::Some([5].into_iter().collect()));
        for r in s.poll() {
            let ok = if r.peer == p[0] { [0, 1, 2].contains(&r.chunk) } else { r.chunk == 5 };
            assert!(ok, "{r:?}");
        }
    }

    #[test]
    fn rarest_first() {
        let p = ids(3);
        let mut s = Swarm::new(chunks(4), 7);
        // Chunk 3 is held by one peer only; the others by all.
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::Some([0, 1, 2].into_iter().collect()));
        s.set_peer(p[2], Have::Some([0, 1, 2].into_iter().collect()));
        s.set_window(&p[0], 1);
        s.set_window(&p[1], 1);
        s.set_window(&p[2], 1);
        let reqs = s.poll();
        assert!(reqs.contains(&Request { peer: p[0], chunk: 3 }), "{reqs:?}");
    }

    #[test]
    fn spreads_over_peers_and_completes() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(40), 3);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::All);
        let reqs = s.poll();
        assert_eq!(reqs.len(), 2 * DEFAULT_WINDOW);
        assert!(reqs.iter().any(|r| r.peer == p[0]) && reqs.iter().any(|r| r.peer == p[1]));
        let mut pending = reqs;
        while let Some(r) = pending.pop() {
            let cancels = s.complete(r, Outcome::Verified);
            pending.retain(|x| !cancels.contains(x));
            pending.extend(s.poll());
        }
        assert!(s.is_complete());
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(1), 5);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::All);
        let reqs = s.poll();
        assert_eq!(reqs.len(), 2, "the single chunk is asked of both peers: {reqs:?}");
        assert_eq!(reqs[0].chunk, reqs[1].chunk);
        let cancels = s.complete(reqs[0], Outcome::Verified);
        assert_eq!(cancels, vec![reqs[1]]);
        assert!(s.is_complete());
        assert!(s.poll().is_empty());
    }

    #[test]
    fn corrupt_chunk_is_refetched_elsewhere_and_bad_peer_dropped() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(5), 9);
        s.set_peer(p[0], Have::All);
        let r = s.poll();
        let first = r[0];
        for x in &r[1..] {
            s.complete(*x, Outcome::Failed);
        }
        s.complete(first, Outcome::Corrupt);
        // Only the bad peer: chunk `first` cannot be asked of it again.
        let retry = s.poll();
        assert!(!retry.is_empty() && retry.iter().all(|x| x.chunk != first.chunk));
        s.set_peer(p[1], Have::All);
        let again = s.poll();
        assert!(again.contains(&Request { peer: p[1], chunk: first.chunk }));
        for x in retry.iter().take(2) {
            s.complete(*x, Outcome::Corrupt);
        }
        assert_eq!(s.peer_count(), 1, "three strikes drop the peer");
    }

    #[test]
    fn disconnect_returns_in_flight_work() {
        let p = ids(2);
        let mut s = Swarm::new(chunks(3), 2);
        s.set_peer(p[0], Have::All);
        s.set_window(&p[0], 8);
        assert_eq!(s.poll().len(), 3);
        s.remove_peer(&p[0]);
        assert!(s.is_stuck());
        s.set_peer(p[1], Have::All);
        assert_eq!(s.poll().len(), 3);
    }
}
