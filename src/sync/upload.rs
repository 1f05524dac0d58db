//! The upload policy: which of the peers' chunk requests this node serves now, and
//! which it refuses while its upload is the scarce resource. Pure: time is passed in.

use crate::ids::{ChunkHash, NodeId};
use crate::proto::Holders;
use std::collections::HashMap;
use std::time::Duration;

/// How long a chunk sent to one peer is refused to others while upload is short.
pub const UPLOAD_HOLD: Duration = Duration::from_millis(1500);
/// Uploads in progress from which this node counts its upload as short.
pub const BUSY_FROM_ACTIVE: usize = 2;
/// Peers served at once; others are answered `Busy` until one of them is done.
pub const MAX_PEERS: usize = 4;
/// How long a peer keeps one of the [`MAX_PEERS`] places while others are refused:
/// after this, a refused peer takes the place of the one served longest.
pub const TURN: Duration = Duration::from_millis(1000);
/// A refused peer this many bytes further from done than a served one takes its
/// place after [`CATCH_UP_TURN`]: every receiver's download link is the limit, so
/// one that fell behind (fewer places, a slow CPU, lost packets) can only catch up
/// with more uploaders than the others, and the mesh has the file when the last
/// receiver does. About 0.3 s of a 100 Mbit/s link.
pub const BEHIND_BY: u64 = 4 << 20;
/// How long a served peer far ahead of a refused one keeps its place.
pub const CATCH_UP_TURN: Duration = Duration::from_millis(250);
/// Chunks remembered as sent, per generation (two are kept: 2 × 64 Ki hashes).
const SENT_GENERATION: usize = 1 << 16;

/// Where an upload reads its chunk: what makes this node a source or a relay of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedFrom {
    /// A complete local file: this node is a source of the chunk.
    Files,
    /// The temp file of a download in progress: this node relays the chunk.
    Download,
}

/// Whether to send a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Serve,
    /// Refuse with `Busy`: it just left for another peer, which will announce it.
    Busy,
    /// Refuse with `Busy`: this node already serves [`MAX_PEERS`] other peers.
    Full,
}

/// The uploader's half of "each chunk leaves the source about once": while a
/// source (serving from complete files) is busy uploading, a chunk it is sending or
/// just sent to one peer is refused to the others, who then fetch it from that
/// peer, and a chunk it sent at any time before is refused to a requester that
/// says other peers have it. A relay (serving from a running download) refuses
/// nothing by those rules. Every node serves at most [`MAX_PEERS`] peers at once,
/// so its chunks arrive whole soon enough to be passed on, and hands a place held
/// for a [`TURN`] to a peer it refused, so no receiver is shut out for long. Pure:
/// the caller passes the time.
#[derive(Debug, Default)]
pub struct UploadPolicy {
    /// Per chunk: the peer it went to, and when the send finished (None: still sending).
    recent: HashMap<ChunkHash, (NodeId, Option<Duration>)>,
    /// Chunks sent before, in two generations so the memory stays bounded.
    sent: [std::collections::HashSet<ChunkHash>; 2],
    active: usize,
    /// Peers being served.
    serving: HashMap<NodeId, Turn>,
}

/// One served peer's place.
#[derive(Debug)]
struct Turn {
    /// Uploads to it running now.
    uploads: usize,
    /// Since when it has been served without a break.
    since: Duration,
    /// Its place went to a refused peer: it gets nothing more until its uploads end.
    ended: bool,
    /// Bytes it still had to fetch, as of its latest request.
    remaining: u64,
}

impl UploadPolicy {
    /// Decides a request; a `Serve` must be followed by [`UploadPolicy::finished`].
    pub fn decide(
        &mut self,
        hash: ChunkHash,
        peer: NodeId,
        holders: Holders,
        from: ServedFrom,
        remaining: u64,
        now: Duration,
    ) -> Decision {
        // The uplink is shared by every reply in progress: serving more peers at once
        // only makes every chunk arrive later, and a chunk is passed on only once it
        // has fully arrived.
        let takes_place_of = match self.serving.get(&peer).map(|t| t.ended) {
            Some(true) => return Decision::Full,
            Some(false) => None,
            None if self.serving.len() >= MAX_PEERS => match self.turn_over(remaining, now) {
                Some(p) => Some(p),
                None => return Decision::Full,
            },
            None => None,
        };
        // A relay's upload is what lets the swarm keep pace with the source: in a
        // mesh of N receivers each one must pass on (N-1)/N of the file while it
        // downloads, so refusing a chunk it sent before only idles its uplink.
        // Measured in the N = 8 lab: 33 s with the rules below for relays too (about
        // 1 800 `Busy` per receiver, each pausing the requester at that peer), 27 s
        // without.
        if from == ServedFrom::Download {
            return self.serve(hash, peer, takes_place_of, remaining, now);
        }
        if let Some((to, done)) = self.recent.get(&hash) {
            let held = done.is_none_or(|at| now.saturating_sub(at) < UPLOAD_HOLD);
            if *to != peer && held && self.active >= BUSY_FROM_ACTIVE {
                return Decision::Busy;
            }
        }
        // Sent before, and the requester can get it elsewhere: spend this upload on
        // chunks nobody else has. One that only this node can send is never refused.
        let sent_before = self.sent.iter().any(|g| g.contains(&hash));
        if holders == Holders::Others && sent_before && self.active >= BUSY_FROM_ACTIVE {
            return Decision::Busy;
        }
        self.serve(hash, peer, takes_place_of, remaining, now)
    }

    /// Starts an upload to `peer`, ending the turn of the peer whose place it takes.
    fn serve(
        &mut self,
        hash: ChunkHash,
        peer: NodeId,
        takes_place_of: Option<NodeId>,
        remaining: u64,
        now: Duration,
    ) -> Decision {
        if let Some(t) = takes_place_of.and_then(|p| self.serving.get_mut(&p)) {
            t.ended = true;
        }
        if self.sent[0].len() >= SENT_GENERATION {
            self.sent[1] = std::mem::take(&mut self.sent[0]);
        }
        self.sent[0].insert(hash);
        if self.recent.len() > 65536 {
            self.recent.retain(|_, (_, done)| done.is_none_or(|at| now.saturating_sub(at) < UPLOAD_HOLD));
        }
        self.recent.insert(hash, (peer, None));
        self.active += 1;
        let t = self.serving.entry(peer).or_insert(Turn { uploads: 0, since: now, ended: false, remaining });
        t.uploads += 1;
        t.remaining = remaining;
        Decision::Serve
    }

    /// The peer whose place a refused one with `remaining` bytes to go may take: the
    /// one furthest ahead if the refused peer is [`BEHIND_BY`] behind it and it was
    /// served for a [`CATCH_UP_TURN`], else the one served longest if that was at
    /// least [`TURN`]. A receiver that keeps requests in flight at a peer keeps its
    /// place there: without turns, one receiver in the N = 8 lab at 50 Mbit/s was
    /// refused by most peers for seconds and ran at 60 % of its link while the
    /// others' uploads had room. One place at a time changes hands, and only to a
    /// request that is served.
    fn turn_over(&self, remaining: u64, now: Duration) -> Option<NodeId> {
        if self.serving.values().any(|t| t.ended) {
            return None;
        }
        // Ties go to the lower id, so the simulator stays deterministic.
        let ahead = self
            .serving
            .iter()
            .filter(|(_, t)| {
                t.remaining.saturating_add(BEHIND_BY) <= remaining && now.saturating_sub(t.since) >= CATCH_UP_TURN
            })
            .min_by_key(|(id, t)| (t.remaining, **id));
        if let Some((id, _)) = ahead {
            return Some(*id);
        }
        self.serving
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.since) >= TURN)
            .min_by_key(|(id, t)| (t.since, **id))
            .map(|(id, _)| *id)
    }

    /// An upload of `hash` to `peer` ended (sent or failed); the hold runs from now.
    pub fn finished(&mut self, hash: ChunkHash, peer: &NodeId, now: Duration) {
        self.active = self.active.saturating_sub(1);
        if let Some((_, done)) = self.recent.get_mut(&hash) {
            *done = Some(now);
        }
        if let Some(t) = self.serving.get_mut(peer) {
            t.uploads -= 1;
            if t.uploads == 0 {
                self.serving.remove(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    /// A distinct chunk per number.
    fn chunk(i: u8) -> ChunkHash {
        ChunkHash::of(&[i])
    }

    const ONLY: Holders = Holders::OnlyYou;
    const FILES: ServedFrom = ServedFrom::Files;

    #[test]
    fn a_chunk_sent_before_goes_to_whoever_else_has_it() {
        let mut u = UploadPolicy::default();
        let h = ChunkHash::of(b"x");
        let t = Duration::from_secs(10);
        assert_eq!(u.decide(h, id(1), Holders::Others, FILES, 0, t), Decision::Serve, "never sent: served");
        u.finished(h, &id(1), t);
        let later = t + 100 * UPLOAD_HOLD;
        assert_eq!(u.decide(h, id(2), Holders::Others, FILES, 0, later), Decision::Serve, "idle: served anyway");
        u.finished(h, &id(2), later);
        let later = later + 100 * UPLOAD_HOLD;
        for (i, c) in [b"a", b"b"].iter().enumerate() {
            assert_eq!(u.decide(ChunkHash::of(*c), id(10 + i as u8), ONLY, FILES, 0, later), Decision::Serve);
        }
        assert_eq!(u.decide(h, id(4), Holders::Others, FILES, 0, later), Decision::Busy, "busy, and others have it");
        assert_eq!(u.decide(h, id(4), ONLY, FILES, 0, later), Decision::Serve, "busy, but only this node has it");
    }

    #[test]
    fn busy_only_for_another_peer_while_upload_is_short() {
        let mut u = UploadPolicy::default();
        let h = ChunkHash::of(b"x");
        let t = Duration::from_secs(10);
        assert_eq!(u.decide(h, id(1), ONLY, FILES, 0, t), Decision::Serve);
        assert_eq!(u.decide(h, id(2), ONLY, FILES, 0, t), Decision::Serve, "one upload running is not short");
        assert_eq!(u.decide(ChunkHash::of(b"y"), id(3), ONLY, FILES, 0, t), Decision::Serve);
        assert_eq!(u.decide(h, id(3), ONLY, FILES, 0, t), Decision::Busy, "being sent to peer 2 while busy");
        assert_eq!(u.decide(h, id(2), ONLY, FILES, 0, t), Decision::Serve, "the same peer may ask again (a retry)");
        let later = t + 10 * UPLOAD_HOLD;
        assert_eq!(
            u.decide(h, id(3), ONLY, FILES, 0, later),
            Decision::Busy,
            "a slow send holds the chunk until it ends"
        );
        u.finished(h, &id(2), later);
        assert_eq!(
            u.decide(h, id(3), ONLY, FILES, 0, later + UPLOAD_HOLD / 2),
            Decision::Busy,
            "and for the hold after it"
        );
        assert_eq!(u.decide(h, id(3), ONLY, FILES, 0, later + UPLOAD_HOLD), Decision::Serve, "then anyone may have it");
        for _ in 0..10 {
            u.finished(ChunkHash::of(b"y"), &id(3), later);
        }
        assert_eq!(
            u.decide(h, id(4), ONLY, FILES, 0, later + UPLOAD_HOLD),
            Decision::Serve,
            "an idle uploader serves duplicates"
        );
    }

    #[test]
    fn a_relay_serves_what_it_sent_before_but_not_beyond_max_peers() {
        let mut u = UploadPolicy::default();
        let h = ChunkHash::of(b"x");
        let t = Duration::from_secs(10);
        let relay = ServedFrom::Download;
        for p in 1..=MAX_PEERS as u8 {
            assert_eq!(u.decide(h, id(p), Holders::Others, relay, 0, t), Decision::Serve, "peer {p}");
        }
        assert_eq!(u.decide(h, id(9), ONLY, relay, 0, t), Decision::Full);
        assert_eq!(u.decide(h, id(9), ONLY, FILES, 0, t), Decision::Full, "the peer cap holds for a source too");
        u.finished(h, &id(1), t);
        assert_eq!(u.decide(h, id(9), Holders::Others, FILES, 0, t), Decision::Busy, "a source holds it back");
        assert_eq!(u.decide(h, id(9), Holders::Others, relay, 0, t), Decision::Serve, "a relay does not");
    }

    #[test]
    fn serves_at_most_max_peers_at_once() {
        let mut u = UploadPolicy::default();
        let t = Duration::from_secs(1);
        for p in 1..=MAX_PEERS as u8 {
            assert_eq!(u.decide(chunk(p), id(p), ONLY, FILES, 0, t), Decision::Serve);
        }
        let next = MAX_PEERS as u8 + 1;
        assert_eq!(u.decide(chunk(next), id(next), ONLY, FILES, 0, t), Decision::Full, "one peer too many");
        assert_eq!(
            u.decide(chunk(next), id(1), ONLY, FILES, 0, t),
            Decision::Serve,
            "a peer being served may ask for more"
        );
        u.finished(chunk(1), &id(1), t);
        assert_eq!(
            u.decide(chunk(next + 1), id(next), ONLY, FILES, 0, t),
            Decision::Full,
            "peer 1 still has an upload running"
        );
        u.finished(chunk(1), &id(1), t);
        assert_eq!(
            u.decide(chunk(next + 1), id(next), ONLY, FILES, 0, t),
            Decision::Serve,
            "peer 1 is done: room for another"
        );
    }

    #[test]
    fn a_refused_peer_takes_the_place_of_the_one_served_longest_after_a_turn() {
        let mut u = UploadPolicy::default();
        let t = Duration::from_secs(10);
        for p in 1..=MAX_PEERS as u8 {
            // Peer 1 first, the others a little later.
            let at = if p == 1 { t } else { t + TURN / 4 };
            assert_eq!(u.decide(chunk(p), id(p), ONLY, FILES, 0, at), Decision::Serve);
        }
        let late = MAX_PEERS as u8 + 1;
        assert_eq!(
            u.decide(chunk(late), id(late), ONLY, FILES, 0, t + TURN / 2),
            Decision::Full,
            "no place has been held for a turn yet"
        );
        assert_eq!(u.decide(chunk(late), id(late), ONLY, FILES, 0, t + TURN), Decision::Serve, "peer 1's turn is over");
        assert_eq!(
            u.decide(chunk(50), id(1), ONLY, FILES, 0, t + TURN),
            Decision::Full,
            "peer 1 gets nothing more while its uploads run"
        );
        assert_eq!(u.decide(chunk(51), id(2), ONLY, FILES, 0, t + TURN), Decision::Serve, "the others keep theirs");
        assert_eq!(
            u.decide(chunk(60), id(60), ONLY, FILES, 0, t + 2 * TURN),
            Decision::Full,
            "one place changes hands at a time"
        );
        u.finished(chunk(1), &id(1), t + 2 * TURN);
        assert_eq!(
            u.decide(chunk(60), id(60), ONLY, FILES, 0, t + 2 * TURN),
            Decision::Serve,
            "peer 1 is gone: the next oldest turn ends"
        );
        assert_eq!(
            u.decide(chunk(52), id(1), ONLY, FILES, 0, t + 2 * TURN),
            Decision::Full,
            "peer 1 waits like anyone"
        );
    }

    #[test]
    fn a_peer_far_behind_takes_the_place_of_the_one_furthest_ahead_sooner() {
        let mut u = UploadPolicy::default();
        let t = Duration::from_secs(10);
        let mib = 1u64 << 20;
        // Peers 1..=4 have 100, 90, 80 and 70 MiB to go; peer 3 is furthest ahead.
        for (p, left) in [(1u8, 100), (2, 90), (3, 70), (4, 80)] {
            assert_eq!(u.decide(chunk(p), id(p), ONLY, FILES, left * mib, t), Decision::Serve);
        }
        let (behind, close) = (20u8, 21u8);
        assert_eq!(
            u.decide(chunk(behind), id(behind), ONLY, FILES, 200 * mib, t + CATCH_UP_TURN / 2),
            Decision::Full,
            "even far behind, a place is held for a short turn"
        );
        assert_eq!(
            u.decide(chunk(close), id(close), ONLY, FILES, 70 * mib + BEHIND_BY - 1, t + CATCH_UP_TURN),
            Decision::Full,
            "not far enough behind anyone: it waits for a whole turn"
        );
        assert_eq!(
            u.decide(chunk(behind), id(behind), ONLY, FILES, 200 * mib, t + CATCH_UP_TURN),
            Decision::Serve,
            "far behind: takes a place after a short turn"
        );
        assert_eq!(u.decide(chunk(30), id(3), ONLY, FILES, 60 * mib, t + CATCH_UP_TURN), Decision::Full, "from peer 3");
        assert_eq!(u.decide(chunk(31), id(4), ONLY, FILES, 60 * mib, t + CATCH_UP_TURN), Decision::Serve);
        u.finished(chunk(3), &id(3), t + CATCH_UP_TURN);
        assert_eq!(
            u.decide(chunk(close), id(close), ONLY, FILES, 70 * mib, t + CATCH_UP_TURN),
            Decision::Serve,
            "peer 4 said 60 MiB in its latest request: now it is furthest ahead"
        );
        assert_eq!(
            u.decide(chunk(40), id(40), ONLY, FILES, 500 * mib, t + 2 * CATCH_UP_TURN),
            Decision::Full,
            "one place changes hands at a time"
        );
        assert_eq!(u.decide(chunk(41), id(4), ONLY, FILES, 60 * mib, t + 2 * CATCH_UP_TURN), Decision::Full);
    }

    #[test]
    fn a_request_refused_for_its_chunk_takes_no_place() {
        let mut u = UploadPolicy::default();
        let t = Duration::from_secs(10);
        let sent = ChunkHash::of(b"sent before");
        assert_eq!(u.decide(sent, id(1), ONLY, FILES, 0, t), Decision::Serve);
        for p in 2..=MAX_PEERS as u8 {
            assert_eq!(u.decide(chunk(p), id(p), ONLY, FILES, 0, t), Decision::Serve);
        }
        let late = MAX_PEERS as u8 + 1;
        let later = t + TURN;
        assert_eq!(
            u.decide(sent, id(late), Holders::Others, FILES, 0, later),
            Decision::Busy,
            "a busy source refuses a chunk it sent before that others have"
        );
        assert_eq!(
            u.decide(ChunkHash::of(b"z"), id(1), ONLY, FILES, 0, later),
            Decision::Serve,
            "peer 1 keeps its place"
        );
        assert_eq!(
            u.decide(ChunkHash::of(b"new"), id(late), ONLY, FILES, 0, later),
            Decision::Serve,
            "a chunk it serves"
        );
        assert_eq!(
            u.decide(ChunkHash::of(b"w"), id(1), ONLY, FILES, 0, later),
            Decision::Full,
            "now peer 1's turn is over"
        );
    }

    /// One step of the upload-policy property test.
    #[derive(Clone, Debug)]
    enum Step {
        /// A request: chunk, peer, whether others hold it, from a download, bytes to go.
        Ask(u8, u8, bool, bool, u64),
        /// The upload at this position of the running ones ends.
        End(usize),
        /// Time passes (ms).
        Wait(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..24, 0u8..10, any::<bool>(), any::<bool>(), 0u64..(64 << 20))
                .prop_map(|(c, p, others, relay, left)| Step::Ask(c, p, others, relay, left)),
            3 => any::<usize>().prop_map(Step::End),
            2 => (0u64..1500).prop_map(Step::Wait),
        ]
    }

    proptest::proptest! {
        /// Whatever peers ask, in whatever order, and however long uploads take: at
        /// most one peer beyond MAX_PEERS has uploads running (the one whose place
        /// is changing hands); a new peer is never turned away for places while
        /// places are free; a relay never answers `Busy`; a chunk never sent before
        /// is never refused as `Busy`; and `Busy` comes only while the upload is
        /// short (BUSY_FROM_ACTIVE uploads running).
        #[test]
        fn places_and_refusals_follow_the_rules(steps in proptest::collection::vec(step(), 1..400)) {
            let mut u = UploadPolicy::default();
            let mut now = Duration::from_secs(1);
            let mut running: Vec<(ChunkHash, NodeId)> = Vec::new();
            let mut sent: std::collections::HashSet<ChunkHash> = std::collections::HashSet::new();
            for st in steps {
                match st {
                    Step::Ask(c, p, others, relay, left) => {
                        let (h, peer) = (chunk(c), id(p));
                        let holders = if others { Holders::Others } else { ONLY };
                        let from = if relay { ServedFrom::Download } else { FILES };
                        let mut peers: Vec<NodeId> = running.iter().map(|r| r.1).collect();
                        peers.sort();
                        peers.dedup();
                        let d = u.decide(h, peer, holders, from, left, now);
                        if !peers.contains(&peer) && peers.len() < MAX_PEERS {
                            proptest::prop_assert_ne!(d, Decision::Full, "turned away with {} peers served", peers.len());
                        }
                        if d == Decision::Busy {
                            proptest::prop_assert!(!relay, "a relay answered Busy");
                            proptest::prop_assert!(sent.contains(&h), "Busy for a chunk never sent");
                            proptest::prop_assert!(running.len() >= BUSY_FROM_ACTIVE, "Busy with {} uploads", running.len());
                        }
                        if d == Decision::Serve {
                            running.push((h, peer));
                            sent.insert(h);
                            peers.push(peer);
                            peers.sort();
                            peers.dedup();
                            proptest::prop_assert!(peers.len() <= MAX_PEERS + 1, "{} peers served at once", peers.len());
                        }
                    }
                    Step::End(i) if !running.is_empty() => {
                        let (h, peer) = running.swap_remove(i % running.len());
                        u.finished(h, &peer, now);
                    }
                    Step::End(_) => {}
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                }
            }
        }
    }
}
