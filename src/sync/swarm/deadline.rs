//! Deadlines: one peer cannot hold a download up. A request not answered in time
//! goes to another peer; a peer that keeps missing its deadlines, or answers only
//! `Busy` while nothing arrives from anyone, is dropped from the download (the
//! driver decides whether its connection is dead too).

use super::*;

/// A request may take this many times what the peer's measured rate says it needs.
pub const DEADLINE_FACTOR: u32 = 4;
/// No request's deadline is shorter: a scheduling hiccup, a full serve queue or a
/// busy disk on the peer is not a stall.
pub const MIN_DEADLINE: Duration = Duration::from_secs(3);
/// The deadline while the peer's rate is not measured yet. Generous, and the same
/// whatever is in flight: a slow link shared by many receivers queues first
/// requests for long, and how long depends on the peer's other requesters, not on
/// this download (simulator, 1 Mbit/s links, RTT 100 ms, N = 8 and 32: 34 and 58
/// requests taken back in vain at 30 s, none at 60 s; 3 and 1358 with 60 s per
/// 1 MiB in flight). A peer that is gone altogether is found by QUIC's idle
/// timeout (30 s) anyway.
pub const FIRST_DEADLINE: Duration = Duration::from_secs(60);
/// Deadlines missed in a row (nothing delivered in between) after which a peer is
/// dropped from the download.
pub const MAX_TIMEOUTS: u32 = 3;
/// A peer that has answered only `Busy` for this long, while nothing arrived from
/// anyone, is dropped from the download: the download ends (no source) and is
/// tried again later, instead of keeping its share's other work waiting.
pub const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// Why a peer was dropped from a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// It sent [`MAX_STRIKES`] chunks that did not verify.
    Corrupt,
    /// It missed [`MAX_TIMEOUTS`] deadlines in a row.
    Timeouts,
    /// It answered only `Busy` for [`BUSY_LIMIT`] while the download stood still.
    Busy,
}

impl Pipe {
    /// How long a request sent now may take: the time for everything in flight
    /// (this request included) at the measured rate, plus the base latency, times
    /// [`DEADLINE_FACTOR`]; never under [`MIN_DEADLINE`].
    fn allowed(&self, inflight_bytes: u64) -> Duration {
        let Some(rate) = self.rate.filter(|r| *r > 0.0) else { return FIRST_DEADLINE };
        let transfer = Duration::try_from_secs_f64(inflight_bytes as f64 / rate).unwrap_or(Duration::MAX);
        let expected = transfer.saturating_add(self.base_latency().unwrap_or_default());
        expected.saturating_mul(DEADLINE_FACTOR).max(MIN_DEADLINE)
    }
}

impl Peer {
    /// The deadline of a request just counted in flight.
    pub(super) fn time_allowed(&self) -> Duration {
        self.pipe.allowed(self.inflight_bytes)
    }
}

impl Swarm {
    /// Takes back every request whose deadline has passed at `now`, with the other
    /// requests of its peer (they wait behind the same stall); returns them for the
    /// driver to cancel. Their chunks are asked elsewhere; the peer gets one request
    /// at a time until it delivers, and is dropped after [`MAX_TIMEOUTS`] misses.
    pub fn expire(&mut self, now: Duration) -> Vec<Request> {
        let mut cancel = Vec::new();
        while let Some(Reverse((t, slot, chunk))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if self.sent_at.get(&(slot, chunk)).map(|s| s.1) != Some(t) {
                continue;
            }
            let id = self.ids[slot as usize];
            let mut held: Vec<usize> = self.sent_at.keys().filter(|k| k.0 == slot).map(|k| k.1).collect();
            held.sort_unstable();
            for c in held {
                self.forget_request(slot, c);
                // Others first: this peer may have it again once the rest have had a go.
                self.defer(slot, c, now.saturating_add(MIN_DEADLINE), now);
                cancel.push(Request { peer: id, chunk: c });
            }
            let drop = self.peers[slot as usize].as_mut().is_some_and(|p| {
                p.timeouts += 1;
                p.probation = true;
                p.timeouts >= MAX_TIMEOUTS
            });
            if drop {
                self.drop_peer(id, Dropped::Timeouts);
            }
        }
        cancel
    }

    /// Peers dropped from this download since the last call, and why.
    pub fn take_dropped(&mut self) -> Vec<(NodeId, Dropped)> {
        std::mem::take(&mut self.dropped)
    }

    /// Removes a peer for good (it is not added again) and reports it.
    pub(super) fn drop_peer(&mut self, peer: NodeId, why: Dropped) {
        self.remove_peer(&peer);
        if !self.banned.contains(&peer) {
            self.banned.push(peer);
            self.dropped.push((peer, why));
        }
    }

    /// Forgets one request in flight (answered elsewhere, or taken back); true if it was.
    pub(super) fn forget_request(&mut self, slot: Slot, chunk: usize) -> bool {
        if self.sent_at.remove(&(slot, chunk)).is_none() {
            return false;
        }
        let len = self.chunks[chunk].len as u64;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(len);
        if let Some(p) = &mut self.peers[slot as usize] {
            p.inflight = p.inflight.saturating_sub(1);
            p.inflight_bytes = p.inflight_bytes.saturating_sub(len);
        }
        self.update(chunk, |c| c.inflight.retain(|p| *p != slot));
        self.mark(slot);
        true
    }

    /// Keeps `chunk` from being asked of `slot` until `until`.
    pub(super) fn defer(&mut self, slot: Slot, chunk: usize, until: Duration, now: Duration) {
        self.update(chunk, |c| {
            c.busy_until.retain(|(p, t)| *p != slot && *t > now);
            c.busy_until.push((slot, until));
        });
        self.busy_ends.push(Reverse((until, chunk, slot)));
    }

    /// Notes a `Busy` from `slot`; true if it has answered only that for
    /// [`BUSY_LIMIT`] while nothing arrived from anyone.
    pub(super) fn busy_too_long(&mut self, slot: Slot, now: Duration) -> bool {
        let progress = self.last_progress.unwrap_or_default();
        let Some(p) = self.peers.get_mut(slot as usize).and_then(|p| p.as_mut()) else { return false };
        let since = *p.busy_since.get_or_insert(now);
        now.saturating_sub(since.max(progress)) >= BUSY_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u8) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId([i; 32])).collect()
    }

    /// `n` chunks of 64 KiB.
    fn swarm(n: usize) -> Swarm {
        Swarm::new((0..n).map(|i| (ChunkHash::of(&i.to_le_bytes()), 64 << 10)).collect(), 3)
    }

    const MS: Duration = Duration::from_millis(1);
    const T0: Duration = Duration::ZERO;

    /// Delivers everything asked of `peer` at 10 MiB/s from `at` on; returns the time after.
    fn deliver_all(s: &mut Swarm, reqs: &[Request], peer: NodeId, mut at: Duration) -> Duration {
        for r in reqs.iter().filter(|r| r.peer == peer) {
            at += 6 * MS;
            s.complete(*r, Outcome::Verified, at);
        }
        at
    }

    #[test]
    fn deadlines_follow_the_measured_rate_with_a_floor_and_a_first_default() {
        let mut pipe = Pipe::new();
        assert_eq!(pipe.allowed(INITIAL_WINDOW), FIRST_DEADLINE, "before any measurement");
        assert_eq!(pipe.allowed(1), FIRST_DEADLINE, "whatever is in flight");
        pipe.rate = Some(1e6);
        pipe.rtt = Some(50 * MS);
        // 8 MB in flight at 1 MB/s: 8 s, plus 50 ms, four times over.
        assert_eq!(pipe.allowed(8_000_000), (8000 * MS + 50 * MS) * DEADLINE_FACTOR);
        assert_eq!(pipe.allowed(64 << 10), MIN_DEADLINE, "a small request at a fast peer");
        pipe.rate = Some(f64::MIN_POSITIVE);
        assert_eq!(pipe.allowed(u64::MAX), Duration::MAX, "a rate near zero does not overflow");
    }

    #[test]
    fn a_stalled_peer_loses_its_requests_to_another() {
        let p = peers(2);
        let mut s = swarm(64);
        s.set_peer(p[0], Have::All);
        let first = s.poll(T0);
        assert!(!first.is_empty() && first.iter().all(|r| r.peer == p[0]));
        assert!(s.expire(FIRST_DEADLINE - MS).is_empty(), "not before the deadline");
        // A second peer shows up and answers at once; the first never answers.
        s.set_peer(p[1], Have::All);
        let to_second = s.poll(T0);
        let mut now = deliver_all(&mut s, &to_second, p[1], T0);
        let cancelled = s.expire(FIRST_DEADLINE);
        assert_eq!(cancelled.len(), first.len(), "every request of the stalled peer is taken back");
        assert!(cancelled.iter().all(|r| r.peer == p[0]));
        now = now.max(FIRST_DEADLINE);
        let moved = s.poll(now);
        for r in &first {
            assert!(moved.contains(&Request { peer: p[1], chunk: r.chunk }), "chunk {} asked elsewhere", r.chunk);
        }
        now = deliver_all(&mut s, &moved, p[1], now);
        while !s.is_complete() && now < FIRST_DEADLINE * 2 {
            let reqs = s.poll(now);
            now = deliver_all(&mut s, &reqs, p[1], now + MS);
        }
        assert!(s.is_complete(), "the download completes from the other peer");
        assert!(s.take_dropped().is_empty(), "one miss is not a drop");
    }

    #[test]
    fn a_peer_on_probation_gets_one_request_until_it_delivers() {
        let p = peers(1);
        let mut s = swarm(40);
        s.set_peer(p[0], Have::All);
        let reqs = s.poll(T0);
        assert!(reqs.len() > 1);
        assert_eq!(s.expire(FIRST_DEADLINE).len(), reqs.len());
        let now = FIRST_DEADLINE + MIN_DEADLINE;
        let one = s.poll(now);
        assert_eq!(one.len(), 1, "one request at a time after a miss: {one:?}");
        // It delivers: back to a full pipeline.
        s.complete(one[0], Outcome::Verified, now + 10 * MS);
        assert!(s.poll(now + 10 * MS).len() > 1, "a peer that delivers again gets its pipeline back");
    }

    #[test]
    fn a_peer_that_keeps_missing_deadlines_is_dropped_while_the_others_deliver() {
        let p = peers(2);
        let mut s = swarm(400);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::Some((0..200).collect()));
        // Both deliver for a while: their rates are measured.
        let mut now = T0;
        for _ in 0..3 {
            let reqs = s.poll(now);
            now = deliver_all(&mut s, &reqs, p[0], now);
            now = deliver_all(&mut s, &reqs, p[1], now);
        }
        assert!(s.pipeline(&p[0]).and_then(|x| x.1).is_some(), "the first peer's rate is measured");
        // Then the first stops answering; the second answers everything at once.
        let mut dropped = Vec::new();
        while !s.is_stuck() && now < Duration::from_secs(600) {
            let reqs = s.poll(now);
            now = deliver_all(&mut s, &reqs, p[1], now) + 100 * MS;
            s.expire(now);
            dropped.extend(s.take_dropped());
        }
        assert_eq!(dropped, vec![(p[0], Dropped::Timeouts)], "dropped once, for its deadlines");
        assert!(s.is_stuck(), "what only the dropped peer has waits for the next attempt");
        assert_eq!(s.peer_count(), 1);
        let second_half_left = s.missing_bytes() / (64 << 10);
        assert!(s.done_count() >= 200, "everything the other peer has arrived");
        assert_eq!(s.done_count() as u64 + second_half_left, 400);
    }

    #[test]
    fn a_dead_only_source_is_dropped_after_three_misses_and_the_download_is_stuck() {
        let p = peers(1);
        let mut s = swarm(4);
        s.set_peer(p[0], Have::All);
        let mut now = T0;
        let mut misses = Vec::new();
        for _ in 0..MAX_TIMEOUTS {
            assert!(!s.poll(now).is_empty(), "asked again after {} misses", misses.len());
            now += FIRST_DEADLINE;
            misses.push(s.expire(now).len());
            now += MIN_DEADLINE;
        }
        assert_eq!(s.take_dropped(), vec![(p[0], Dropped::Timeouts)]);
        assert!(s.is_stuck(), "nobody left to ask: the driver ends the download");
        s.set_peer(p[0], Have::All);
        assert!(s.poll(now).is_empty(), "a dropped peer is not added again in this download");
        assert_eq!(misses[1..], [1, 1], "after the first miss, one request at a time: {misses:?}");
    }

    #[test]
    fn an_answer_that_comes_in_time_is_not_taken_back() {
        let p = peers(1);
        let mut s = swarm(2);
        s.set_peer(p[0], Have::All);
        let reqs = s.poll(T0);
        for r in &reqs {
            s.complete(*r, Outcome::Verified, 10 * MS);
        }
        assert!(s.expire(FIRST_DEADLINE * 2).is_empty(), "answered requests have no deadline left");
        assert!(s.is_complete());
    }

    #[test]
    fn busy_past_the_limit_drops_a_peer_only_while_nothing_arrives() {
        let p = peers(2);
        let mut s = swarm(64);
        s.set_peer(p[0], Have::All);
        s.set_peer(p[1], Have::Some((0..32).collect()));
        // p0 answers Busy to everything; p1 delivers what it has, slowly.
        let mut now = T0;
        let mut from_p1: Vec<Request> = Vec::new();
        let mut last_delivery = T0;
        while now < BUSY_LIMIT * 2 {
            for r in s.poll(now) {
                if r.peer == p[0] {
                    s.complete(r, Outcome::Busy, now);
                } else {
                    from_p1.push(r);
                }
            }
            if let Some(r) = from_p1.pop() {
                s.complete(r, Outcome::Verified, now);
                last_delivery = now;
            }
            now += 500 * MS;
            if s.done_count() == 32 {
                break;
            }
        }
        assert!(s.take_dropped().is_empty(), "busy, but the download moved: kept");
        // Now nothing arrives from anyone: the busy peer is held against the limit.
        let stood_still = last_delivery;
        let mut dropped_at = None;
        while dropped_at.is_none() && now <= stood_still + BUSY_LIMIT * 2 {
            for r in s.poll(now) {
                assert_eq!(r.peer, p[0]);
                s.complete(r, Outcome::Busy, now);
            }
            if !s.take_dropped().is_empty() {
                dropped_at = Some(now);
            }
            now += 300 * MS;
        }
        let at = dropped_at.expect("the busy peer is dropped");
        assert!(at >= stood_still + BUSY_LIMIT, "not before the limit: {at:?}");
        assert!(at <= stood_still + BUSY_LIMIT + Duration::from_secs(1), "soon after it: {at:?}");
        assert!(s.is_stuck(), "the rest has no source: the download ends and is tried again later");
    }
}
