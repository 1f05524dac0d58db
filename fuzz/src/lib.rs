//! What each fuzz target does with its input: the parsers a stranger or a typo can
//! reach, called exactly as the daemon and the CLI call them.
//!
//! One file for two users: the cargo-fuzz targets (`fuzz_targets/*.rs`) and the
//! corpus replay of `cargo test` (`tests/fuzz_corpus.rs` includes this file), so a
//! committed input is checked by CI against the same code the fuzzer ran.
//! A panic is a finding; so is a broken promise checked here (an accepted config
//! whose share cannot start, a decoded message that does not encode back to itself).

use meshsync::config::Config;
use meshsync::gossip::announced::Announced;
use meshsync::identity::token::JoinToken;
use meshsync::index::{conflict_name, pick_winner, Entry};
use meshsync::proto::{self, ChunkReply, Control, HaveMap, Hello, JoinReply, JoinRequest, StreamRequest, WireEntry};
use meshsync::scan::ignore::Ignore;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// A fuzz target's entry point: one input, any outcome but a panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the folder of their corpus), with their entry point.
pub const TARGETS: &[(&str, Target)] = &[("wire", wire), ("token", token), ("config", config), ("ignore", ignore)];

/// Runs a future that never waits (reads from a byte slice) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading from a byte slice never waits"),
    }
}

/// Reads frames of one message type from `stream` with the daemon's `read_frame`
/// (its length prefix and that message's frame limit) until the stream ends or a frame is refused;
/// each decoded message must encode back to exactly the bytes it came from.
fn frames<T: proto::Framed + PartialEq + std::fmt::Debug>(mut stream: &[u8], mut each: impl FnMut(&T)) {
    loop {
        let before = stream;
        let msg = match ready(proto::read_frame::<_, T>(&mut stream)) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return,
        };
        let body = &before[4..before.len() - stream.len()];
        let again = proto::encode(&msg).expect("a decoded message encodes");
        assert_eq!(again, body, "{msg:?} does not encode back to the bytes it was decoded from");
        each(&msg);
    }
}

/// What the daemon does with an entry a peer sent: take it in (checked, the one
/// boundary `gossip::wire`), and only if it passes use it (content id, conflict
/// order, conflict-copy name); what passes must cross back unchanged.
fn received_entry(w: &WireEntry) {
    let Ok(e) = Entry::try_from(w.clone()) else { return };
    assert_eq!(&WireEntry::from(&e), w, "an accepted entry does not cross back unchanged");
    let e = &e;
    let _ = e.content_id();
    let _ = e.block_offsets().count();
    assert!(std::ptr::eq(pick_winner(e, e), e), "an entry does not win against itself");
    let _ = conflict_name(e);
}

/// What the daemon does with a progress map a peer sent.
fn received_have(m: &HaveMap) {
    let announced = Announced::default();
    if announced.record(meshsync::ids::NodeId([1; 32]), m.clone()) {
        let maps = announced.for_content(&m.path, &m.content);
        assert_eq!(maps.len(), 1, "a recorded map is found again");
        let last = (m.blocks as usize).saturating_sub(1);
        for i in (0..m.blocks as usize).take(64).chain([last, last + 1, usize::MAX]) {
            let _ = m.has(i);
        }
    }
}

/// A mesh CA certificate to check records against, made once.
fn ca_cert() -> &'static [u8] {
    static CA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CA.get_or_init(|| meshsync::identity::new_mesh("fuzz").expect("a mesh").ca_cert_der)
}

/// What the daemon does with a removal record a peer sent: checked (bounds, then the
/// CA's signature, which a fuzzed one never has); what passes must cross back unchanged.
fn received_removal(n: &proto::RemovalNotice) {
    if let Ok(r) = meshsync::gossip::trust::removal_from_wire(n.clone(), ca_cert()) {
        assert_eq!(&proto::RemovalNotice::from(&r), n);
    }
}

/// What the daemon does with a membership record a peer sent.
fn received_members(n: &proto::MembersNotice) {
    if let Ok(m) = meshsync::gossip::trust::members_from_wire(n.clone(), ca_cert()) {
        let _ = m.admits(&meshsync::ids::NodeId([1; 32]));
    }
}

/// The wire decoder: the first byte picks which message type the rest is read as
/// (a stream of length-prefixed frames), covering every type the daemon reads from
/// a peer or a joiner: Hello, Control (index batches, peer lists, progress maps,
/// bench messages, trust records), StreamRequest, ChunkReply, JoinRequest and JoinReply.
pub fn wire(data: &[u8]) {
    let Some((&kind, stream)) = data.split_first() else { return };
    match kind % 6 {
        0 => frames::<Hello>(stream, |_| {}),
        1 => frames::<Control>(stream, |c| match c {
            Control::Index { entries, .. } | Control::IndexBatch { entries, .. } => {
                entries.iter().for_each(received_entry)
            }
            Control::BenchOffer { entry, .. } => received_entry(entry),
            Control::Have(m) => received_have(m),
            Control::Removed(n) => received_removal(n),
            Control::Members(n) => received_members(n),
            _ => {}
        }),
        2 => frames::<StreamRequest>(stream, |r| {
            if let StreamRequest::Chunk(req) = r {
                if req.refusal().is_none() {
                    assert!(req.bytes() <= u64::from(proto::MAX_CHUNK));
                }
            }
        }),
        3 => frames::<ChunkReply>(stream, |_| {}),
        4 => frames::<JoinRequest>(stream, |_| {}),
        _ => frames::<JoinReply>(stream, |_| {}),
    }
}

/// The join token parser, on text as `join` receives it (argv, stdin or a file):
/// a token it accepts must print back as a token that parses to the same value.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = JoinToken::decode(text) {
        assert_eq!(JoinToken::decode(&t.encode()), Ok(t), "a parsed token does not survive encode/parse");
    }
}

/// The config parser: an error must render (it names a line), and an accepted
/// config must start every share it defines (ignore patterns compile, the schedule
/// answers whether its window is open).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = match Config::parse(text, std::path::Path::new("/fuzz/config.toml")) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid instant");
    for s in &cfg.shares {
        if let Err(e) = Ignore::new(&s.ignore) {
            panic!("config accepted ignore patterns {:?} that the share cannot use: {e}", s.ignore);
        }
        if let Some(sched) = &s.schedule {
            let _ = sched.at(&now);
            let _ = sched.describe();
        }
    }
}

/// The ignore-pattern parser: one pattern per line, then the checks the walker and
/// the watcher make, on the patterns themselves and on a few fixed paths.
pub fn ignore(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let patterns: Vec<String> = text.lines().map(String::from).collect();
    let Ok(ig) = Ignore::new(&patterns) else { return };
    let fixed = ["a", "a/b", "dir/file.txt", ".meshsync/x", "x.part", "a/b/c/d/e"];
    for p in patterns.iter().map(String::as_str).chain(fixed) {
        let _ = ig.covers(p);
        let _ = ig.is_ignored(p);
    }
}
