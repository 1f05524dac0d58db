//! The scheduling half of the swarm: which peer gets which chunk when it has room
//! (rarest first, endgame duplicates), and what an answer changes.

use super::*;

impl Swarm {
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
        let sent = slot.and_then(|s| self.sent_at.remove(&(s, chunk))).map(|(at, _)| at);
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
                if outcome == Outcome::Verified {
                    (p.timeouts, p.probation, p.busy_since) = (0, false, None);
                }
            }
            self.mark(s);
            self.update(chunk, |c| c.inflight.retain(|p| *p != s));
        }
        let mut cancel = Vec::new();
        match outcome {
            Outcome::Verified => {
                self.last_progress = Some(now);
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
                    self.forget_request(other, chunk);
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
                        self.drop_peer(peer, Dropped::Corrupt);
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
                    self.defer(s, chunk, until, now);
                    if self.busy_too_long(s, now) {
                        self.drop_peer(peer, Dropped::Busy);
                    }
                }
            }
            Outcome::Failed => {}
        }
        cancel
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

    /// The rarest chunk this peer can serve now.
    pub(super) fn pick_fresh(&self, slot: Slot, p: &Peer, now: Duration) -> Option<usize> {
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
    pub(super) fn pick_endgame(&self, slot: Slot, p: &Peer, now: Duration) -> Option<usize> {
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
    pub(super) fn holder_with_room(&mut self, i: usize, now: Duration) -> Option<Slot> {
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
    pub(super) fn beyond_window(&self, p: &Peer, i: usize) -> bool {
        self.may_pass_window(p) && (p.whole() || self.chunks[i].avail == 1)
    }

    /// The half of [`Swarm::beyond_window`] that does not depend on the chunk: cheap
    /// enough to skip picking a chunk for every other peer while the window is full.
    pub(super) fn may_pass_window(&self, p: &Peer) -> bool {
        let depth = if p.whole() { SOURCE_PAST_WINDOW } else { 1 };
        self.small_mesh() && p.inflight < depth
    }

    /// Up to [`SMALL_MESH`] peers: every peer sees every other, and each is a large
    /// share of what a receiver can ask.
    pub(super) fn small_mesh(&self) -> bool {
        self.live_peers <= SMALL_MESH
    }

    /// True if more may be in flight: a receiver that asks every peer for all it can
    /// serve has its whole file in flight at once in a large mesh, which splits its
    /// downlink and every uplink into slow trickles and starts the endgame at once.
    pub(super) fn total_room(&self) -> bool {
        self.inflight_bytes == 0 || self.inflight_bytes < TOTAL_WINDOW.max(self.max_window)
    }

    pub(super) fn start(&mut self, slot: Slot, i: usize, now: Duration, out: &mut Vec<Request>) {
        let len = self.chunks[i].len as u64;
        self.inflight_bytes += len;
        self.update(i, |c| c.inflight.push(slot));
        if let Some(p) = &mut self.peers[slot as usize] {
            p.inflight += 1;
            p.inflight_bytes += len;
        }
        let deadline = now.saturating_add(self.peer(slot).map_or(FIRST_DEADLINE, |p| p.time_allowed()));
        self.sent_at.insert((slot, i), (now, deadline));
        self.deadlines.push(Reverse((deadline, slot, i)));
        out.push(Request { peer: self.ids[slot as usize], chunk: i });
    }

    pub(super) fn refuse(&mut self, peer: Slot, chunk: usize) {
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
}
