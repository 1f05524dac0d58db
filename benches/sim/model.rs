//! A discrete-event simulator of swarm distribution: one source and N receivers,
//! to see how the scheduler behaves on meshes larger than a test machine. Pure:
//! no I/O, no clock, no threads; virtual time only, deterministic by seed.
//!
//! What is real: every receiver drives the daemon's own [`Swarm`] the way
//! `sync::apply` does (the source is `Have::All` from the start; peers' progress
//! maps are fed in at every refresh; a peer that completed becomes `Have::All`;
//! `poll` after every event; cancels of endgame duplicates), and every uploader
//! answers with the daemon's own [`UploadPolicy`] (`Busy` for a chunk it just sent
//! elsewhere while busy). The timers are the daemon's: a receiver announces what
//! it holds every [`announce_every`] (if it changed) and reads announcements every
//! [`REFRESH_EVERY`]; each timer starts at a random phase so receivers do not tick
//! in lockstep.
//!
//! What is modelled, and how:
//! - links: each host has an uplink and a downlink rate (bytes/s) and every pair
//!   of hosts is a fixed one-way delay (RTT/2) apart; the core is never the
//!   bottleneck;
//! - a request reaches the uploader after the one-way delay; `Busy` and
//!   `NotFound` replies and cancels are tiny and cost only the delay;
//! - the uplink: by default its bandwidth is shared equally by the requesters it
//!   is sending to, and each requester's replies go one after the other
//!   ([`Uplink::PerPeer`]): congestion control shares a bottleneck between QUIC
//!   connections, and the daemon turns send fairness off, so the streams of one
//!   connection go in request order. [`Uplink::Shared`] shares it equally by every
//!   reply (round-robin streams), [`Uplink::Fifo`] sends whole replies one after
//!   the other (an upload queue). Sharing is kept fast with virtual time: each
//!   reply finishes when the per-flow service count reaches its start value plus
//!   its length;
//! - the downlink: a reply's last byte reaches the receiver one delay after it
//!   left the uplink; the downlink passes bytes at its rate in arrival order, so a
//!   chunk is verified at `max(arrival, downlink free + len/down)`. When the
//!   downlink is faster than what feeds it this adds nothing; when it is the
//!   bottleneck, deliveries are spaced at its rate. There is no back-pressure from
//!   a full downlink to the uplinks (the requester's pipeline bounds it);
//! - progress maps cost bandwidth: an announcement is one map per connected peer
//!   on the sender's uplink and one map on each reader's downlink (a map is one
//!   bit per chunk plus [`MAP_OVERHEAD`]); they arrive one delay after they are
//!   sent, whatever the queue (no head-of-line blocking behind data);
//! - chunks all have the same size (content-defined chunks vary around it), no
//!   loss, no corruption, every node connected to every other (or, with
//!   [`Config::view`], each receiver learning of a random subset only).
//!
//! The theoretical minimum is `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`: the source
//! must send every byte once, the slowest receiver must receive every byte, and
//! all uplinks together must carry N copies.

use meshsync::ids::ChunkHash;
use meshsync::ids::NodeId;
use meshsync::proto::Holders;
use meshsync::sync::swarm::{ChunkSet, Have, Outcome, Swarm};
use meshsync::sync::upload::{Decision, ServedFrom, UploadPolicy};
use meshsync::transfer::{announce_every, REFRESH_EVERY};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

/// Bytes of a progress map besides its bitmap: share, path, content id, framing, headers.
pub const MAP_OVERHEAD: u64 = 120;

/// One host's access link, in bytes per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Upload rate.
    pub up: f64,
    /// Download rate.
    pub down: f64,
}

/// How an uplink divides itself among the replies it is sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uplink {
    /// Equal shares for every requester's connection, and each connection's
    /// replies one after the other: what the daemon's QUIC does (congestion control
    /// shares the bottleneck between connections, and send fairness is off).
    PerPeer,
    /// Equal shares for all replies in progress (processor sharing): QUIC with
    /// round-robin between streams.
    Shared,
    /// Whole replies one at a time, in the order they were accepted.
    Fifo,
}

/// One simulated distribution.
#[derive(Clone, Debug)]
pub struct Config {
    /// Access links: `[0]` is the source, the rest are the receivers.
    pub links: Vec<Link>,
    /// Size of the file.
    pub file_bytes: u64,
    /// Size of each chunk (the last one may be shorter): a bit in a progress map.
    pub chunk_bytes: u32,
    /// Size of each piece (the last one may be shorter): the unit of a request, as
    /// the daemon cuts them ([`meshsync::sync::pieces::piece_target`]).
    pub piece_bytes: u32,
    /// Round-trip time between any two hosts.
    pub rtt: Duration,
    /// Seed for every random choice (scheduler tie-breaks, timer phases, views).
    pub seed: u64,
    /// If set, each receiver learns the progress of only this many random other receivers.
    pub view: Option<usize>,
    /// How uplinks share their bandwidth.
    pub uplink: Uplink,
    /// Whether progress maps take bandwidth.
    pub count_maps: bool,
}

impl Config {
    /// `receivers` hosts and a source, all with `rate` bytes/s up and down.
    pub fn uniform(receivers: usize, rate: f64, file_bytes: u64, rtt: Duration, seed: u64) -> Self {
        Self {
            links: vec![Link { up: rate, down: rate }; receivers + 1],
            file_bytes,
            chunk_bytes: 64 << 10,
            piece_bytes: meshsync::sync::pieces::piece_target(file_bytes) as u32,
            rtt,
            seed,
            view: None,
            uplink: Uplink::PerPeer,
            count_maps: true,
        }
    }

    /// Number of receivers.
    pub fn receivers(&self) -> usize {
        self.links.len().saturating_sub(1)
    }

    /// Number of chunks of the file.
    pub fn chunks(&self) -> usize {
        self.file_bytes.div_ceil(self.chunk_bytes.max(1) as u64) as usize
    }

    /// Number of pieces of the file.
    pub fn pieces(&self) -> usize {
        self.file_bytes.div_ceil(self.piece_bytes.max(1) as u64) as usize
    }

    /// `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))` in seconds.
    pub fn minimum(&self) -> f64 {
        let f = self.file_bytes as f64;
        let n = self.receivers() as f64;
        let d_min = self.links[1..].iter().map(|l| l.down).fold(f64::INFINITY, f64::min);
        let up_sum: f64 = self.links.iter().map(|l| l.up).sum();
        (f / self.links[0].up).max(f / d_min).max(n * f / up_sum)
    }
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Number of receivers.
    pub receivers: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// Size of the file.
    pub file_bytes: u64,
    /// When the first receiver completed (s).
    pub first_done: f64,
    /// When the last receiver completed (s); infinite if one never did.
    pub last_done: f64,
    /// The theoretical minimum (s).
    pub minimum: f64,
    /// `last_done / minimum`.
    pub ratio: f64,
    /// Chunk bytes the source sent.
    pub source_uploaded: u64,
    /// ...of which replies cancelled as endgame duplicates.
    pub source_cancelled: u64,
    /// ...of which chunks it had sent completely before.
    pub source_resent: u64,
    /// Chunk bytes all hosts sent, including the sent part of cancelled replies.
    pub uploaded: u64,
    /// Bytes sent beyond one copy per receiver (endgame duplicates, cancelled replies).
    pub duplicate_bytes: u64,
    /// Progress-map bytes all hosts sent.
    pub map_bytes: u64,
    /// Chunk requests sent.
    pub requests: u64,
    /// Requests answered `Busy`.
    pub busy: u64,
    /// ...of which because the uploader was serving as many peers as it will.
    pub full: u64,
    /// Duplicate requests cancelled.
    pub cancels: u64,
    /// Requests taken back at their deadline (the daemon's `requests_timed_out`).
    pub timeouts: u64,
    /// Events processed.
    pub events: u64,
    /// Mean time a chunk waited for the receiver's downlink after its last byte arrived (s).
    pub downlink_wait: f64,
    /// Distinct chunks each receiver holds at the end.
    pub held: Vec<usize>,
    /// Chunks each receiver verified (more than `held` means a chunk was accepted twice).
    pub verified: Vec<usize>,
    /// When each receiver completed (s), infinite if it did not.
    pub done_at: Vec<f64>,
    /// Every [`SAMPLE_EVERY`]: time (s), share of all chunks the receivers hold, chunk
    /// bytes the source and the receivers sent since the last sample.
    pub timeline: Vec<(f64, f64, u64, u64)>,
}

/// How often [`Report::timeline`] is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Nanoseconds of virtual time.
type Ns = u64;

fn ns(d: Duration) -> Ns {
    d.as_nanos() as Ns
}

fn secs_to_ns(s: f64) -> Ns {
    (s * 1e9).ceil().max(0.0) as Ns
}

/// The node id standing for host `h`.
fn node(h: u32) -> NodeId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&h.to_le_bytes());
    NodeId(b)
}

fn host_of(id: &NodeId) -> u32 {
    u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A request reaches its uploader.
    Request(u32, u32),
    /// The uplink of a host may have finished a reply (stale unless the generation matches).
    UplinkDone(u32, u64),
    /// The last byte of a reply reaches the receiver's downlink.
    Arrive(u32, u32),
    /// A chunk has passed the downlink.
    Deliver(u32, u32),
    /// A `Busy` or `NotFound` reply reaches the receiver.
    Reply(u32, u32),
    /// A cancel reaches the uploader.
    Cancel(u32, u32),
    /// A receiver reads announcements and completions and polls.
    Refresh(u32),
    /// A receiver announces what it holds.
    Announce(u32),
    /// A point of the timeline.
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Travelling to the uploader.
    Sent,
    /// Being sent by the uplink.
    Queued,
    /// A reply on its way back.
    Returning(Outcome),
}

/// A request, or a progress map being sent (`chunk == u32::MAX`).
#[derive(Clone, Copy, Debug)]
struct Req {
    from: u32,
    to: u32,
    chunk: u32,
    /// What the requester told the uploader of other holders.
    holders: Holders,
    len: f64,
    /// Processor sharing: the service count at which it is fully sent.
    tag: f64,
    gen: u32,
    state: State,
    cancelled: bool,
}

const MAP: u32 = u32::MAX;

/// One uplink: the replies it is sending, in flows. The link is shared equally
/// by the flows with something to send (processor sharing), and each flow sends
/// its replies one after the other; the three [`Uplink`] models differ only in
/// what a flow is: a requester, a reply, or everything.
struct Up {
    rate: f64,
    mode: Uplink,
    /// Service each flow has had since time zero (virtual time).
    v: f64,
    at: Ns,
    /// (finish tag, id) of each flow's head.
    jobs: BTreeSet<(u64, u32)>,
    /// The replies of each flow in request order (the head first).
    flows: HashMap<u32, VecDeque<u32>>,
    gen: u64,
}

impl Up {
    fn new(rate: f64, mode: Uplink) -> Self {
        Self { rate, mode, v: 0.0, at: 0, jobs: BTreeSet::new(), flows: HashMap::new(), gen: 0 }
    }

    /// The flow a reply belongs to. Per peer: its requester's connection, but a
    /// progress map is sent at a higher priority than data, so it is a flow of its own.
    fn flow(&self, id: u32, reqs: &[Req]) -> u32 {
        let r = &reqs[id as usize];
        match self.mode {
            Uplink::PerPeer if r.chunk == MAP => (1 << 31) | id,
            Uplink::PerPeer => r.from,
            Uplink::Shared => id,
            Uplink::Fifo => 0,
        }
    }

    fn advance(&mut self, now: Ns) {
        let n = self.jobs.len();
        if n > 0 {
            self.v += (now - self.at) as f64 * 1e-9 * self.rate / n as f64;
        }
        self.at = now;
    }

    /// When the next reply will be fully sent, if any.
    fn next(&self, reqs: &[Req]) -> Option<Ns> {
        let &(_, id) = self.jobs.first()?;
        let left = reqs[id as usize].tag - self.v;
        Some(self.at + secs_to_ns(left.max(0.0) / (self.rate / self.jobs.len() as f64)))
    }

    /// Starts sending a flow's head from now on.
    fn schedule(&mut self, id: u32, reqs: &mut [Req]) {
        reqs[id as usize].tag = self.v + reqs[id as usize].len;
        self.jobs.insert((reqs[id as usize].tag.to_bits(), id));
    }

    fn add(&mut self, now: Ns, id: u32, reqs: &mut [Req]) {
        self.advance(now);
        let q = self.flows.entry(self.flow(id, reqs)).or_default();
        q.push_back(id);
        if q.len() == 1 {
            self.schedule(id, reqs);
        }
    }

    /// Takes a reply off the uplink; returns the bytes of it already sent.
    fn remove(&mut self, now: Ns, id: u32, reqs: &mut [Req]) -> f64 {
        self.advance(now);
        let flow = self.flow(id, reqs);
        let Some(q) = self.flows.get_mut(&flow) else { return 0.0 };
        if q.front() != Some(&id) {
            q.retain(|x| *x != id);
            return 0.0;
        }
        let r = reqs[id as usize];
        self.jobs.remove(&(r.tag.to_bits(), id));
        self.pop_head(flow, reqs);
        (r.len - (r.tag - self.v)).clamp(0.0, r.len)
    }

    /// The head of `flow` left; the next reply of that flow starts.
    fn pop_head(&mut self, flow: u32, reqs: &mut [Req]) {
        let Some(q) = self.flows.get_mut(&flow) else { return };
        q.pop_front();
        match q.front().copied() {
            Some(next) => self.schedule(next, reqs),
            None => {
                self.flows.remove(&flow);
            }
        }
    }

    /// Takes off every reply fully sent by `now`.
    fn finished(&mut self, now: Ns, reqs: &mut [Req], out: &mut Vec<u32>) {
        self.advance(now);
        while let Some(&(key, id)) = self.jobs.first() {
            // Event times are rounded up to the nanosecond; allow for float rounding only.
            if self.v + 1e-3 < reqs[id as usize].tag {
                break;
            }
            self.jobs.remove(&(key, id));
            self.pop_head(self.flow(id, reqs), reqs);
            out.push(id);
        }
    }
}

/// What a receiver knows of another host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Nothing,
    Partial,
    All,
}

/// One receiver and its download.
struct Rx {
    swarm: Swarm,
    have: ChunkSet,
    done_at: Option<Ns>,
    verified: usize,
    last_announced: usize,
    /// Receivers (hosts) whose announcements this one reads.
    view: Vec<u32>,
    /// Position in `view` of a host, when the view is a subset.
    view_pos: Option<HashMap<u32, usize>>,
    known: Vec<Known>,
    /// Per view entry: announcements read so far, and the prefix of its log applied.
    read: Vec<u32>,
    applied: Vec<u32>,
    completions_read: usize,
    /// Outstanding requests by (uploader, chunk), for cancels.
    outstanding: HashMap<(u32, u32), u32>,
}

struct Sim<'a> {
    cfg: &'a Config,
    chunks: Vec<(ChunkHash, u32)>,
    one_way: Ns,
    map_bytes: u64,
    queue: BinaryHeap<Reverse<(Ns, u64, Ev)>>,
    seq: u64,
    reqs: Vec<Req>,
    free: Vec<u32>,
    ups: Vec<Up>,
    down_free: Vec<f64>,
    policy: Vec<UploadPolicy>,
    rx: Vec<Rx>,
    /// Per host: chunks in the order it verified them (the source's stays empty).
    logs: Vec<Vec<u32>>,
    /// Per host: (arrival time, log length) of each announcement.
    maps: Vec<Vec<(Ns, u32)>>,
    /// (arrival time, host) of each completion, in time order.
    completions: Vec<(Ns, u32)>,
    done: usize,
    arrivals: u64,
    /// Chunks the source has sent completely.
    source_sent: ChunkSet,
    report: Report,
    finished_buf: Vec<u32>,
}

/// Runs one distribution to the end (or to a generous time limit) and reports.
pub fn run(cfg: &Config) -> Report {
    let mut sim = Sim::new(cfg);
    sim.run();
    sim.finish()
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a Config) -> Self {
        let n = cfg.receivers();
        let count = cfg.pieces();
        let chunks: Vec<(ChunkHash, u32)> = (0..count)
            .map(|i| {
                let len = (cfg.file_bytes - i as u64 * cfg.piece_bytes as u64).min(cfg.piece_bytes as u64) as u32;
                (ChunkHash::of(&(i as u64).to_le_bytes()), len)
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut rx = Vec::with_capacity(n);
        for r in 1..=n as u32 {
            let others: Vec<u32> = (1..=n as u32).filter(|h| *h != r).collect();
            let (view, view_pos) = match cfg.view {
                Some(k) if k < others.len() => {
                    let v: Vec<u32> = others.choose_multiple(&mut rng, k).copied().collect();
                    let pos = v.iter().enumerate().map(|(i, h)| (*h, i)).collect();
                    (v, Some(pos))
                }
                _ => (others, None),
            };
            let mut swarm = Swarm::new(chunks.clone(), rng.gen());
            swarm.set_peer(node(0), Have::All);
            swarm.set_rtt(&node(0), cfg.rtt);
            let len = view.len();
            rx.push(Rx {
                swarm,
                have: ChunkSet::new(count),
                done_at: None,
                verified: 0,
                last_announced: 0,
                view,
                view_pos,
                known: vec![Known::Nothing; len],
                read: vec![0; len],
                applied: vec![0; len],
                completions_read: 0,
                outstanding: HashMap::new(),
            });
        }
        let report = Report {
            receivers: n,
            chunks: count,
            file_bytes: cfg.file_bytes,
            first_done: f64::INFINITY,
            last_done: f64::INFINITY,
            minimum: cfg.minimum(),
            ratio: f64::INFINITY,
            source_uploaded: 0,
            source_cancelled: 0,
            source_resent: 0,
            uploaded: 0,
            duplicate_bytes: 0,
            map_bytes: 0,
            requests: 0,
            busy: 0,
            full: 0,
            cancels: 0,
            timeouts: 0,
            events: 0,
            downlink_wait: 0.0,
            held: vec![],
            verified: vec![],
            done_at: vec![],
            timeline: vec![],
        };
        let mut sim = Self {
            cfg,
            chunks,
            one_way: ns(cfg.rtt) / 2,
            map_bytes: (cfg.chunks() as u64).div_ceil(8) + MAP_OVERHEAD,
            queue: BinaryHeap::new(),
            seq: 0,
            reqs: Vec::new(),
            free: Vec::new(),
            ups: cfg.links.iter().map(|l| Up::new(l.up, cfg.uplink)).collect(),
            down_free: vec![0.0; n + 1],
            policy: (0..=n).map(|_| UploadPolicy::default()).collect(),
            rx,
            logs: vec![Vec::new(); n + 1],
            maps: vec![Vec::new(); n + 1],
            completions: Vec::new(),
            done: 0,
            arrivals: 0,
            source_sent: ChunkSet::new(count),
            report,
            finished_buf: Vec::new(),
        };
        for r in 1..=n as u32 {
            // The download polls as soon as it starts; its timers tick at random phases.
            sim.poll(r, 0);
            let refresh = rng.gen_range(0..ns(REFRESH_EVERY));
            let announce = rng.gen_range(0..ns(sim.announce_every(r)));
            sim.at(refresh, Ev::Refresh(r));
            sim.at(announce, Ev::Announce(r));
        }
        sim.at(ns(SAMPLE_EVERY), Ev::Sample);
        sim
    }

    fn at(&mut self, t: Ns, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn alloc(&mut self, req: Req) -> (u32, u32) {
        match self.free.pop() {
            Some(id) => {
                let gen = self.reqs[id as usize].gen;
                self.reqs[id as usize] = Req { gen, ..req };
                (id, gen)
            }
            None => {
                self.reqs.push(req);
                ((self.reqs.len() - 1) as u32, req.gen)
            }
        }
    }

    fn release(&mut self, id: u32) {
        let r = &mut self.reqs[id as usize];
        r.gen = r.gen.wrapping_add(1);
        self.free.push(id);
    }

    /// The request, if the event still refers to it.
    fn live(&self, id: u32, gen: u32) -> bool {
        self.reqs[id as usize].gen == gen
    }

    fn rx(&mut self, host: u32) -> &mut Rx {
        &mut self.rx[host as usize - 1]
    }

    fn run(&mut self) {
        let n = self.cfg.receivers();
        // Far beyond any sane result: stops a run that can never complete.
        let limit = secs_to_ns(self.report.minimum * 50.0 + 60.0);
        while self.done < n {
            let Some(Reverse((t, _, ev))) = self.queue.pop() else { break };
            if t > limit {
                break;
            }
            self.report.events += 1;
            match ev {
                Ev::Request(id, gen) => self.on_request(t, id, gen),
                Ev::UplinkDone(h, gen) => self.on_uplink(t, h, gen),
                Ev::Arrive(id, gen) => self.on_arrive(t, id, gen),
                Ev::Deliver(id, gen) => self.on_deliver(t, id, gen),
                Ev::Reply(id, gen) => self.on_reply(t, id, gen),
                Ev::Cancel(id, gen) => self.on_cancel(t, id, gen),
                Ev::Refresh(r) => self.on_refresh(t, r),
                Ev::Announce(r) => self.on_announce(t, r),
                Ev::Sample => self.on_sample(t),
            }
        }
    }

    fn finish(mut self) -> Report {
        let n = self.cfg.receivers() as u64;
        let r = &mut self.report;
        r.downlink_wait /= self.arrivals.max(1) as f64;
        r.duplicate_bytes = r.uploaded.saturating_sub(n * self.cfg.file_bytes);
        let times: Vec<f64> = self.rx.iter().map(|x| x.done_at.map_or(f64::INFINITY, |t| t as f64 * 1e-9)).collect();
        r.first_done = times.iter().copied().fold(f64::INFINITY, f64::min);
        r.last_done = times.iter().copied().fold(0.0, f64::max);
        r.ratio = r.last_done / r.minimum;
        r.done_at = times;
        r.held = self.rx.iter().map(|x| x.have.count()).collect();
        r.verified = self.rx.iter().map(|x| x.verified).collect();
        self.report
    }

    /// Sends whatever the receiver's scheduler wants to send now.
    fn poll(&mut self, r: u32, now: Ns) {
        let reqs = self.rx(r).swarm.poll(Duration::from_nanos(now));
        for q in reqs {
            let to = host_of(&q.peer);
            let len = self.chunks[q.chunk].1 as f64;
            let holders = Holders::from_count(self.rx(r).swarm.holders(q.chunk));
            let req = Req {
                from: r,
                to,
                chunk: q.chunk as u32,
                holders,
                len,
                tag: 0.0,
                gen: 0,
                state: State::Sent,
                cancelled: false,
            };
            let (id, gen) = self.alloc(req);
            self.rx(r).outstanding.insert((to, q.chunk as u32), id);
            self.report.requests += 1;
            self.at(now + self.one_way, Ev::Request(id, gen));
        }
    }

    fn reschedule(&mut self, h: u32) {
        let up = &mut self.ups[h as usize];
        up.gen += 1;
        let gen = up.gen;
        if let Some(t) = up.next(&self.reqs) {
            self.at(t, Ev::UplinkDone(h, gen));
        }
    }

    fn on_request(&mut self, now: Ns, id: u32, gen: u32) {
        if !self.live(id, gen) {
            return;
        }
        let Req { from, to, chunk, holders, .. } = self.reqs[id as usize];
        // A receiver serves only what it holds (it announced nothing else).
        if to != 0 && !self.rx(to).have.contains(chunk as usize) {
            self.reqs[id as usize].state = State::Returning(Outcome::NotFound);
            self.at(now + self.one_way, Ev::Reply(id, gen));
            return;
        }
        let hash = self.chunks[chunk as usize].0;
        // As in the daemon: a receiver still downloading relays, anyone else is a source.
        let served_from =
            if to != 0 && self.rx(to).done_at.is_none() { ServedFrom::Download } else { ServedFrom::Files };
        let remaining = self.rx(from).swarm.missing_bytes();
        match self.policy[to as usize].decide(
            hash,
            node(from),
            holders,
            served_from,
            remaining,
            Duration::from_nanos(now),
        ) {
            refused @ (Decision::Busy | Decision::Full) => {
                self.report.busy += 1;
                if refused == Decision::Full {
                    self.report.full += 1;
                }
                self.reqs[id as usize].state = State::Returning(Outcome::Busy);
                self.at(now + self.one_way, Ev::Reply(id, gen));
            }
            Decision::Serve => {
                self.reqs[id as usize].state = State::Queued;
                self.ups[to as usize].add(now, id, &mut self.reqs);
                self.reschedule(to);
            }
        }
    }

    fn on_uplink(&mut self, now: Ns, h: u32, gen: u64) {
        if self.ups[h as usize].gen != gen {
            return;
        }
        let mut done = std::mem::take(&mut self.finished_buf);
        self.ups[h as usize].finished(now, &mut self.reqs, &mut done);
        for &id in &done {
            let r = self.reqs[id as usize];
            if r.chunk == MAP {
                self.release(id);
                continue;
            }
            let hash = self.chunks[r.chunk as usize].0;
            self.policy[h as usize].finished(hash, &node(r.from), Duration::from_nanos(now));
            self.report.uploaded += r.len as u64;
            if h == 0 {
                self.report.source_uploaded += r.len as u64;
                if !self.source_sent.insert(r.chunk as usize) {
                    self.report.source_resent += r.len as u64;
                }
                if r.cancelled {
                    self.report.source_cancelled += r.len as u64;
                }
            }
            self.reqs[id as usize].state = State::Returning(Outcome::Verified);
            self.at(now + self.one_way, Ev::Arrive(id, r.gen));
        }
        done.clear();
        self.finished_buf = done;
        self.reschedule(h);
    }

    fn on_arrive(&mut self, now: Ns, id: u32, gen: u32) {
        if !self.live(id, gen) {
            return;
        }
        let r = self.reqs[id as usize];
        let down = self.cfg.links[r.from as usize].down;
        let free = &mut self.down_free[r.from as usize];
        let t = (*free + r.len / down).max(now as f64 * 1e-9);
        *free = t;
        let at = secs_to_ns(t).max(now);
        self.report.downlink_wait += (at - now) as f64 * 1e-9;
        self.arrivals += 1;
        if at == now {
            self.on_deliver(now, id, gen);
        } else {
            self.at(at, Ev::Deliver(id, gen));
        }
    }

    fn on_deliver(&mut self, now: Ns, id: u32, gen: u32) {
        if !self.live(id, gen) {
            return;
        }
        let req = self.reqs[id as usize];
        self.release(id);
        if req.cancelled {
            return;
        }
        let r = req.from;
        let c = req.chunk as usize;
        let t = Duration::from_nanos(now);
        let x = self.rx(r);
        x.outstanding.remove(&(req.to, req.chunk));
        let cancels =
            x.swarm.complete(meshsync::sync::swarm::Request { peer: node(req.to), chunk: c }, Outcome::Verified, t);
        x.have.insert(c);
        x.verified += 1;
        for d in cancels {
            let to = host_of(&d.peer);
            if let Some(dup) = self.rx(r).outstanding.remove(&(to, d.chunk as u32)) {
                self.reqs[dup as usize].cancelled = true;
                self.report.cancels += 1;
                let g = self.reqs[dup as usize].gen;
                self.at(now + self.one_way, Ev::Cancel(dup, g));
            }
        }
        self.logs[r as usize].push(req.chunk);
        if self.rx(r).swarm.is_complete() {
            self.rx(r).done_at = Some(now);
            self.done += 1;
            self.completions.push((now + self.one_way, r));
            return;
        }
        self.poll(r, now);
    }

    fn on_reply(&mut self, now: Ns, id: u32, gen: u32) {
        if !self.live(id, gen) {
            return;
        }
        let req = self.reqs[id as usize];
        self.release(id);
        let State::Returning(outcome) = req.state else { return };
        if req.cancelled || self.rx(req.from).done_at.is_some() {
            return;
        }
        let x = self.rx(req.from);
        x.outstanding.remove(&(req.to, req.chunk));
        let q = meshsync::sync::swarm::Request { peer: node(req.to), chunk: req.chunk as usize };
        x.swarm.complete(q, outcome, Duration::from_nanos(now));
        self.poll(req.from, now);
    }

    fn on_cancel(&mut self, now: Ns, id: u32, gen: u32) {
        if !self.live(id, gen) || self.reqs[id as usize].state != State::Queued {
            return;
        }
        let Req { from, to, chunk, .. } = self.reqs[id as usize];
        let sent = self.ups[to as usize].remove(now, id, &mut self.reqs);
        self.report.uploaded += sent as u64;
        if to == 0 {
            self.report.source_uploaded += sent as u64;
            self.report.source_cancelled += sent as u64;
        }
        // The aborted stream ends the upload.
        let hash = self.chunks[chunk as usize].0;
        self.policy[to as usize].finished(hash, &node(from), Duration::from_nanos(now));
        self.release(id);
        self.reschedule(to);
    }

    fn on_sample(&mut self, now: Ns) {
        let held: usize = self.logs.iter().map(|l| l.len()).sum();
        let share = held as f64 / (self.report.chunks * self.report.receivers).max(1) as f64;
        let (source, all) = self.report.timeline.iter().fold((0, 0), |a, p| (a.0 + p.2, a.1 + p.2 + p.3));
        let sent_source = self.report.source_uploaded - source;
        let sent_rx = self.report.uploaded - all - sent_source;
        self.report.timeline.push((now as f64 * 1e-9, share, sent_source, sent_rx));
        self.at(now + ns(SAMPLE_EVERY), Ev::Sample);
    }

    fn on_announce(&mut self, now: Ns, r: u32) {
        if self.rx(r).done_at.is_some() {
            return;
        }
        let held = self.logs[r as usize].len();
        if held > self.rx(r).last_announced {
            self.rx(r).last_announced = held;
            self.maps[r as usize].push((now + self.one_way, held as u32));
            if self.cfg.count_maps {
                // One map to every connected peer (the source too).
                let bytes = self.map_bytes * (self.rx(r).view.len() as u64 + 1);
                self.report.map_bytes += bytes;
                let req = Req {
                    from: r,
                    to: r,
                    chunk: MAP,
                    holders: Holders::OnlyYou,
                    len: bytes as f64,
                    tag: 0.0,
                    gen: 0,
                    state: State::Queued,
                    cancelled: false,
                };
                let (id, _) = self.alloc(req);
                self.ups[r as usize].add(now, id, &mut self.reqs);
                self.reschedule(r);
            }
        }
        self.at(now + ns(self.announce_every(r)), Ev::Announce(r));
    }

    /// As in the daemon: a map goes to every peer in the view and the source.
    fn announce_every(&self, r: u32) -> Duration {
        announce_every(self.rx[r as usize - 1].view.len() + 1)
    }

    fn on_refresh(&mut self, now: Ns, r: u32) {
        if self.rx(r).done_at.is_some() {
            return;
        }
        let rtt = self.cfg.rtt;
        let Sim { rx, logs, maps, completions, .. } = self;
        let x = &mut rx[r as usize - 1];
        // Peers that completed: sources from the index from now on.
        while let Some(&(t, h)) = completions.get(x.completions_read) {
            if t > now {
                break;
            }
            x.completions_read += 1;
            let k = match &x.view_pos {
                Some(pos) => pos.get(&h).copied(),
                None => Some(if h < r { h as usize - 1 } else { h as usize - 2 }),
            };
            if let Some(k) = k {
                x.swarm.set_peer(node(h), Have::All);
                x.swarm.set_rtt(&node(h), rtt);
                x.known[k] = Known::All;
            }
        }
        // Announcements that arrived since the last refresh.
        let mut read = 0u64;
        for k in 0..x.view.len() {
            if x.known[k] == Known::All {
                continue;
            }
            let h = x.view[k] as usize;
            let sent = &maps[h];
            let mut i = x.read[k] as usize;
            while i < sent.len() && sent[i].0 <= now {
                i += 1;
            }
            if i == x.read[k] as usize {
                continue;
            }
            read += (i - x.read[k] as usize) as u64;
            x.read[k] = i as u32;
            let upto = sent[i - 1].1 as usize;
            let from = x.applied[k] as usize;
            x.applied[k] = upto as u32;
            // Chunks this receiver holds change nothing in its scheduler: skip them.
            let news = logs[h][from..upto].iter().map(|c| *c as usize).filter(|c| !x.have.contains(*c));
            if x.known[k] == Known::Nothing {
                x.swarm.set_peer(node(h as u32), Have::Some(news.collect()));
                x.swarm.set_rtt(&node(h as u32), rtt);
                x.known[k] = Known::Partial;
            } else {
                x.swarm.add_haves(&node(h as u32), news);
            }
        }
        if self.cfg.count_maps && read > 0 {
            let down = self.cfg.links[r as usize].down;
            let free = &mut self.down_free[r as usize];
            *free = free.max(now as f64 * 1e-9) + (read * self.map_bytes) as f64 / down;
        }
        // As the daemon's refresh does: requests past their deadline go elsewhere.
        for d in self.rx(r).swarm.expire(Duration::from_nanos(now)) {
            self.report.timeouts += 1;
            if let Some(id) = self.rx(r).outstanding.remove(&(host_of(&d.peer), d.chunk as u32)) {
                self.reqs[id as usize].cancelled = true;
                let g = self.reqs[id as usize].gen;
                self.at(now + self.one_way, Ev::Cancel(id, g));
            }
        }
        self.poll(r, now);
        self.at(now + ns(REFRESH_EVERY), Ev::Refresh(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: f64 = 1e6 / 8.0;

    fn small(receivers: usize, rtt_ms: u64, seed: u64) -> Config {
        Config::uniform(receivers, 100.0 * MBIT, 4 << 20, Duration::from_millis(rtt_ms), seed)
    }

    fn assert_everyone_has_the_file(r: &Report) {
        assert!(r.last_done.is_finite(), "a receiver never completed: {r:?}");
        assert!(r.held.iter().all(|h| *h == r.chunks), "held {:?} of {}", r.held, r.chunks);
        assert_eq!(r.held, r.verified, "a chunk was accepted twice");
    }

    #[test]
    fn three_receivers_complete_no_faster_than_the_links_allow() {
        let r = run(&small(3, 0, 1));
        assert_everyone_has_the_file(&r);
        assert!(r.ratio >= 1.0, "faster than the theoretical minimum: {r:?}");
        assert!(r.ratio < 3.0, "{r:?}");
    }

    #[test]
    fn ten_receivers_feed_each_other() {
        // Long enough (5 s at best) for the announcement interval to matter little.
        let r = run(&Config::uniform(10, 100.0 * MBIT, 64 << 20, Duration::ZERO, 2));
        assert_everyone_has_the_file(&r);
        let f = r.file_bytes as f64;
        assert!((r.source_uploaded as f64) < 1.5 * f, "the source sent {:.2} copies", r.source_uploaded as f64 / f);
        assert!(r.uploaded >= 10 * r.file_bytes, "every receiver got a copy from someone");
        assert!(r.ratio >= 1.0, "{r:?}");
    }

    #[test]
    fn delay_costs_at_least_one_round_trip() {
        let r = run(&small(4, 50, 3));
        assert_everyone_has_the_file(&r);
        assert!(r.last_done >= r.minimum + 0.05, "{r:?}");
    }

    #[test]
    fn same_seed_same_run() {
        let a = run(&small(5, 10, 9));
        let b = run(&small(5, 10, 9));
        assert_eq!(a, b);
    }

    #[test]
    fn a_slow_downlink_bounds_the_run() {
        let mut c = small(3, 0, 4);
        c.links[2].down = 10.0 * MBIT;
        let r = run(&c);
        assert_everyone_has_the_file(&r);
        let slowest = r.file_bytes as f64 / (10.0 * MBIT);
        assert!((r.minimum - slowest).abs() < 1e-9);
        assert!(r.last_done >= slowest, "{r:?}");
    }

    /// A reply of 500 bytes to `from`, queued at host 0.
    fn reply(from: u32) -> Req {
        Req {
            from,
            to: 0,
            chunk: 0,
            holders: Holders::OnlyYou,
            len: 500.0,
            tag: 0.0,
            gen: 0,
            state: State::Queued,
            cancelled: false,
        }
    }

    #[test]
    fn shared_uplink_finishes_equal_replies_together() {
        let mut up = Up::new(1000.0, Uplink::Shared);
        let mut reqs = vec![reply(1); 2];
        up.add(0, 0, &mut reqs);
        up.add(0, 1, &mut reqs);
        // Two replies of 500 bytes at 1000 bytes/s share it: both done at 1 s.
        assert_eq!(up.next(&reqs), Some(1_000_000_000));
        let mut out = vec![];
        up.finished(999_000_000, &mut reqs, &mut out);
        assert!(out.is_empty());
        up.finished(1_000_000_000, &mut reqs, &mut out);
        assert_eq!(out.len(), 2);
        let mut fifo = Up::new(1000.0, Uplink::Fifo);
        fifo.add(0, 0, &mut reqs);
        fifo.add(0, 1, &mut reqs);
        assert_eq!(fifo.next(&reqs), Some(500_000_000), "one after the other");
        assert_eq!(fifo.remove(250_000_000, 0, &mut reqs), 250.0, "half of the head was sent");
        assert_eq!(fifo.next(&reqs), Some(750_000_000));
    }

    #[test]
    fn per_peer_uplink_shares_between_requesters_and_queues_within_one() {
        // Requester 1 asks for two replies, requester 2 for one; 1000 bytes/s.
        let mut reqs = vec![reply(1), reply(1), reply(2)];
        let mut up = Up::new(1000.0, Uplink::PerPeer);
        for id in 0..3 {
            up.add(0, id, &mut reqs);
        }
        // Two flows share the link: each head gets 500 bytes/s and ends at 1 s.
        assert_eq!(up.next(&reqs), Some(1_000_000_000));
        let mut out = vec![];
        up.finished(1_000_000_000, &mut reqs, &mut out);
        out.sort();
        assert_eq!(out, vec![0, 2], "the heads of both flows, not requester 1's second reply");
        // Alone now, requester 1's second reply has the whole link.
        assert_eq!(up.next(&reqs), Some(1_500_000_000));
        // A cancel of a queued reply sends nothing of it and leaves the head alone.
        let mut reqs = vec![reply(1), reply(1), reply(2)];
        let mut up = Up::new(1000.0, Uplink::PerPeer);
        for id in 0..3 {
            up.add(0, id, &mut reqs);
        }
        assert_eq!(up.remove(500_000_000, 1, &mut reqs), 0.0, "queued behind its flow's head");
        assert_eq!(up.remove(500_000_000, 0, &mut reqs), 250.0, "half of a head at half the link");
        assert_eq!(up.next(&reqs), Some(750_000_000), "requester 2 alone sends its last 250 bytes at the whole rate");
    }
}
