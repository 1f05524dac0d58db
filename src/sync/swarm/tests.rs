//! The swarm scheduler's rules, one test each, and its invariants under random play.

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
    let answers =
        prop_oneof![Just(Answers::Honestly), Just(Answers::Busily), Just(Answers::Corruptly), Just(Answers::Falsely)];
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
