//! Fault suite (issue 22, "Nothing lost"): real daemons on network-namespace hosts,
//! driven through the binary's CLI, while receivers and sources are killed with
//! SIGKILL, links are cut, packets are dropped and a disk fills up. Each test
//! asserts what must hold (the data arrives whole, nothing is lost, nothing half
//! written appears) and prints its figures (bytes fetched twice, times) without
//! asserting them. `cargo test --test faults` runs small variants (root; skipped
//! with the reason printed otherwise); `cargo test --release --test faults --
//! --ignored --nocapture` runs the big ones.

mod blackbox;

use blackbox::ledger::Ledger;
use blackbox::netns::Shaping;
use blackbox::tree::{self, Tree};
use blackbox::{mib, piece_size, place, random_bytes, skip_reason, Host, Mesh};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SHARE: &str = "s";

fn mesh_or_skip(n: usize, shaping: Shaping, options: &[(&str, &str)], needs_nft: bool) -> Option<Mesh> {
    if let Some(why) = skip_reason(needs_nft) {
        println!("skipped: {why}");
        return None;
    }
    Some(Mesh::new(n, &shaping, options).expect("a mesh of namespace hosts"))
}

fn links(rate_mbit: f64) -> Shaping {
    Shaping { rate_mbit, loss_pct: 0, delay_ms: 0 }
}

fn status(mesh: &Mesh, h: usize) -> serde_json::Value {
    mesh.hosts[h].status().unwrap_or_default()
}

fn done_of(mesh: &Mesh, h: usize, path: &str) -> Option<u64> {
    mesh.hosts[h].status().and_then(|st| Host::transfer(&st, SHARE, path)).map(|(d, _)| d)
}

/// Waits until `path` under each of `roots` holds exactly `hash`; a file that
/// shows up at the path with other content (a partial file) fails the test.
fn wait_whole(mesh: &Mesh, roots: &[PathBuf], path: &str, hash: blake3::Hash, limit: Duration) -> Duration {
    let mut whole = vec![false; roots.len()];
    mesh.wait(&format!("{path} complete everywhere"), limit, |_| {
        for (r, done) in roots.iter().zip(whole.iter_mut()).filter(|(_, d)| !**d) {
            if let Ok(b) = std::fs::read(r.join(path)) {
                assert_eq!(blake3::hash(&b), hash, "{} appeared with other content ({} bytes)", r.display(), b.len());
                *done = true;
            }
        }
        whole.iter().all(|d| *d)
    })
}

/// Waits until restarted host `h` is connected to every host of `set` again. The
/// limit is half of QUIC's 30 s idle timeout: a peer that keeps a dead connection
/// to `h` must accept `h`'s new one, not refuse it as a duplicate until then.
fn wait_reconnected(mesh: &Mesh, h: usize, set: &[usize]) -> Duration {
    let mut pair: Vec<usize> = set.to_vec();
    pair.push(h);
    mesh.wait(
        &format!("{} (restarted) accepted again by its peers", mesh.hosts[h].name),
        Duration::from_secs(15),
        |m| m.fully_connected(&pair),
    )
}

fn converge(mesh: &Mesh, set: &[usize], roots: &[PathBuf], limit: Duration) -> Duration {
    match mesh.converge(SHARE, set, roots, limit) {
        Ok(d) => d,
        Err(why) => panic!("{why}\n{}", mesh.logs()),
    }
}

// ---------------------------------------------------------------------------
// A node killed and restarted is accepted again at once.

#[test]
fn a_restarted_node_is_accepted_at_once_by_a_peer_holding_its_dead_connection() {
    // The survivor keeps the dead node's connection until QUIC's idle timeout. It
    // used to refuse the restarted node's new connection as a duplicate whenever
    // the survivor had the smaller node id and had dialed the old one: 30 s apart
    // after every crash. A restarted node dials the connection that follows, so
    // killing each side in turn hits that case whatever the ids are.
    let Some(mut mesh) = mesh_or_skip(2, blackbox::fast_links(), &[], false) else { return };
    for victim in [1, 0, 1] {
        // Running a while first, as a node that crashes has: its index has been
        // flushed since it learned its peer (sled flushes every 500 ms).
        std::thread::sleep(Duration::from_secs(2));
        mesh.hosts[victim].kill9();
        mesh.hosts[victim].start().unwrap();
        let took = wait_reconnected(&mesh, victim, &[1 - victim]);
        println!("{} restarted: connected again after {took:.1?}", mesh.hosts[victim].name);
    }
}

// ---------------------------------------------------------------------------
// A receiver killed mid-transfer resumes from its temp file.

fn receiver_killed_mid_transfer(size_mib: usize, rate_mbit: f64, kill_at: &[f64]) {
    let Some(mut mesh) = mesh_or_skip(2, links(rate_mbit), &[], false) else { return };
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    let size = (size_mib as u64) << 20;
    let body = random_bytes(size as usize, 1);
    let hash = blake3::hash(&body);
    let start = Instant::now();
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &body).unwrap();
    drop(body);
    let mut received_before_kill = 0;
    for (k, &at) in kill_at.iter().enumerate() {
        let want = (size as f64 * at) as u64;
        mesh.wait("the receiver has part of the file", Duration::from_secs(120), |m| {
            done_of(m, 1, "big.bin").is_some_and(|d| d >= want)
        });
        let st = status(&mesh, 1);
        received_before_kill += Host::counter(&st, "chunk_bytes_received");
        let done = Host::transfer(&st, SHARE, "big.bin").map_or(0, |t| t.0);
        mesh.hosts[1].kill9();
        assert!(!roots[1].join("big.bin").exists(), "no partial file at the final path after kill -9");
        println!(
            "kill #{}: receiver killed at {} of {} ({:.0} %)",
            k + 1,
            mib(done),
            mib(size),
            done as f64 * 100.0 / size as f64
        );
        mesh.hosts[1].start().unwrap();
        let took = wait_reconnected(&mesh, 1, &[0]);
        println!("the restarted receiver was connected again after {took:.1?}");
    }
    let took = wait_whole(&mesh, &roots[1..], "big.bin", hash, Duration::from_secs(300));
    converge(&mesh, &[0, 1], &roots, Duration::from_secs(60));
    let after_restart = Host::counter(&status(&mesh, 1), "chunk_bytes_received");
    let sent = Host::counter(&status(&mesh, 0), "chunk_bytes_sent");
    let piece = piece_size(size);
    println!(
        "{} at {rate_mbit} Mbit/s, {} kill(s): complete {:.1} s after the file was placed ({took:.1?} after the last restart)",
        mib(size),
        kill_at.len(),
        start.elapsed().as_secs_f64()
    );
    // The receiver's counter starts at 0 with each daemon; each kill's figure is
    // read just before the kill.
    let received = received_before_kill + after_restart;
    let twice = received.saturating_sub(size);
    println!(
        "fetched twice: {} = {:.2} pieces of {} per kill (target <= 1 piece per file in flight); the receiver got \
         {} before the kill(s) and {} after the last restart for the {} file",
        mib(twice),
        twice as f64 / piece as f64 / kill_at.len() as f64,
        mib(piece),
        mib(received_before_kill),
        mib(after_restart),
        mib(size)
    );
    println!(
        "the source sent {}: {} of it was in flight at a kill or sent twice",
        mib(sent),
        mib(sent.saturating_sub(size))
    );
    assert!(after_restart < size, "the download resumed from its temp file instead of starting over");
}

#[test]
fn a_receiver_killed_mid_transfer_resumes() {
    receiver_killed_mid_transfer(24, 40.0, &[0.4]);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn a_receiver_killed_twice_mid_transfer_of_256_mib_resumes() {
    receiver_killed_mid_transfer(256, 100.0, &[0.3, 0.7]);
}

#[test]
fn at_start_stray_temp_files_go_and_a_pending_download_resumes_from_its_own() {
    let Some(mut mesh) = mesh_or_skip(2, links(40.0), &[], false) else { return };
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    let size = 24u64 << 20;
    let body = random_bytes(size as usize, 11);
    let hash = blake3::hash(&body);
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &body).unwrap();
    drop(body);
    mesh.wait("the receiver has part of the file", Duration::from_secs(60), |m| {
        done_of(m, 1, "big.bin").is_some_and(|d| d >= size / 3)
    });
    mesh.hosts[1].kill9();
    let tmp = roots[1].join(".meshsync/tmp");
    // Spread over tmp/0 to tmp/f by name.
    let pending: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .collect();
    assert_eq!(pending.len(), 1, "the download's temp file: {pending:?}");
    // Left by a crash: a download of a version nobody plans any more (in the folder
    // itself, where versions before the spread folders put them), and a restore's copy.
    let stray = tmp.join("0123456789abcdef0123456789abcdef.part");
    std::fs::write(&stray, random_bytes(1 << 20, 12)).unwrap();
    // (A download makes only its own folder of the sixteen.)
    std::fs::create_dir_all(tmp.join("f")).unwrap();
    let spread = tmp.join("f").join("f123456789abcdef0123456789abcdef.part");
    std::fs::write(&spread, random_bytes(1 << 16, 13)).unwrap();
    let restore = tmp.join("restore-00000000000000aa.part");
    std::fs::write(&restore, b"a restore's copy").unwrap();
    mesh.hosts[1].start().unwrap();
    mesh.wait("the stray temp files removed", Duration::from_secs(30), |_| !stray.exists() && !spread.exists());
    assert!(restore.exists(), "only download temp files are touched");
    let log = mesh.hosts[1].log_tail(200);
    assert!(log.contains("temp files of downloads no longer planned removed"), "the removal is logged:\n{log}");
    wait_whole(&mesh, &roots[1..], "big.bin", hash, Duration::from_secs(120));
    let after_restart = Host::counter(&status(&mesh, 1), "chunk_bytes_received");
    println!("after the restart the receiver fetched {} of {}", mib(after_restart), mib(size));
    assert!(after_restart < size, "the pending download resumed from its temp file");
}

// ---------------------------------------------------------------------------
// A download no peer can finish is not shown as a transfer.

#[test]
fn a_download_no_peer_can_finish_leaves_no_transfer_in_status() {
    // Found by tests/convergence.rs (seed 45): a fetch that failed for want of a
    // source stayed in `status` as a transfer (and in memory) until a later attempt
    // succeeded, for good if none did (the version was deleted meanwhile): the node
    // never looked idle again.
    let Some(mesh) = mesh_or_skip(2, links(64.0), &[], false) else { return };
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &random_bytes(64 << 20, 6)).unwrap();
    mesh.wait("the receiver downloads", Duration::from_secs(60), |m| done_of(m, 1, "big.bin").is_some_and(|d| d > 0));
    // The file is deleted on the source mid-transfer: until its next scan the
    // source still lists it but has nothing to serve.
    std::fs::remove_file(roots[0].join("big.bin")).unwrap();
    let took = mesh.wait("no transfer shown once the file is gone", Duration::from_secs(20), |m| {
        status(m, 1)["transfers"].as_array().is_some_and(|t| t.is_empty())
    });
    println!("the receiver showed no transfer {took:.1?} after the source deleted the file");
    converge(&mesh, &[0, 1], &roots, Duration::from_secs(60));
    assert!(!roots[1].join("big.bin").exists(), "the delete reached the receiver");
}

// ---------------------------------------------------------------------------
// The source killed while three receivers swarm its file.

/// What a test holds the receivers to while the source is away.
enum WhileAway {
    /// Print what they have a few seconds after the kill.
    Look,
    /// Each must reach all that any of them holds (or the whole file).
    MustTrade,
}

fn source_killed_mid_distribution(size_mib: usize, rate_mbit: f64, kill_at: f64, away: WhileAway) {
    let Some(mut mesh) = mesh_or_skip(4, links(rate_mbit), &[], false) else { return };
    let all = [0, 1, 2, 3];
    let roots = mesh.share_on(SHARE, &all).unwrap();
    mesh.wait("every host knows the share of every other", Duration::from_secs(30), |m| {
        all.iter()
            .all(|&h| Host::share_of(&status(m, h), SHARE).and_then(|s| s["peers"].as_array().map(Vec::len)) == Some(3))
    });
    let size = (size_mib as u64) << 20;
    let body = random_bytes(size as usize, 2);
    let hash = blake3::hash(&body);
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &body).unwrap();
    drop(body);
    let want = (size as f64 * kill_at) as u64;
    mesh.wait("the source has sent part of the file", Duration::from_secs(120), |m| {
        Host::counter(&status(m, 0), "chunk_bytes_sent") >= want
    });
    let sent = Host::counter(&status(&mesh, 0), "chunk_bytes_sent");
    let at_kill: Vec<u64> = (1..4).map(|h| done_of(&mesh, h, "big.bin").unwrap_or(0)).collect();
    mesh.hosts[0].kill9();
    let killed = Instant::now();
    println!("source killed after sending {} of {}; receivers had {:?} bytes", mib(sent), mib(size), at_kill);

    match away {
        WhileAway::Look => {
            std::thread::sleep(Duration::from_secs(5));
            let now: Vec<u64> = (1..4).map(|h| done_of(&mesh, h, "big.bin").unwrap_or(0)).collect();
            println!("5 s after the kill the receivers show {now:?} bytes (0: between retries)");
        }
        WhileAway::MustTrade => receivers_trade(&mesh, &roots, hash, size, &at_kill, killed),
    }
    mesh.hosts[0].start().unwrap();
    let back = Instant::now();
    wait_reconnected(&mesh, 0, &[1, 2, 3]);
    wait_whole(&mesh, &roots[1..], "big.bin", hash, Duration::from_secs(300));
    println!("every receiver complete {:.1} s after the source returned", back.elapsed().as_secs_f64());
    converge(&mesh, &all, &roots, Duration::from_secs(60));
}

/// Waits until the receivers hold the same bytes, at least what the best of them
/// had at the kill, unchanged for 3 s (or until each has the whole file).
fn receivers_trade(mesh: &Mesh, roots: &[PathBuf], hash: blake3::Hash, size: u64, at_kill: &[u64], killed: Instant) {
    // A download between retries shows no transfer: keep the last figure seen.
    let mut last: Vec<u64> = at_kill.to_vec();
    let mut steady_since = Instant::now();
    let floor = *at_kill.iter().max().unwrap_or(&0);
    let plateau = loop {
        let whole = (1..4).all(|h| std::fs::read(roots[h].join("big.bin")).is_ok_and(|b| blake3::hash(&b) == hash));
        if whole {
            break size;
        }
        let now: Vec<u64> =
            (1..4).map(|h| done_of(mesh, h, "big.bin").unwrap_or(last[h - 1]).max(last[h - 1])).collect();
        if now != last {
            steady_since = Instant::now();
            last = now;
        }
        let equal = last.iter().all(|&d| d == last[0]) && last[0] >= floor;
        if equal && steady_since.elapsed() > Duration::from_secs(3) {
            break last[0];
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "the receivers did not share what they had within 120 s: {last:?} (each >= {floor} expected)\n{}",
            mesh.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "without the source, every receiver reached {} of {} ({:.0} %) {:.1} s after the kill",
        mib(plateau),
        mib(size),
        plateau as f64 * 100.0 / size as f64,
        killed.elapsed().as_secs_f64() - 3.0
    );
}

#[test]
fn the_source_killed_mid_distribution_comes_back_and_every_receiver_completes() {
    source_killed_mid_distribution(32, 40.0, 0.5, WhileAway::Look);
}

// Found by this suite (issue 22 item 6): requests in flight to the killed source
// hung until QUIC's 30 s idle timeout; then every receiver's download failed at
// once with "no connected peer has the missing chunks" and was retried every 5 s,
// each attempt over in about 10 ms: a download between retries served nothing from
// its temp file while the peers still held its last map, and an attempt gave up
// before it read its peers' maps. The retries never overlapped, and a receiver
// missing a piece the others held waited for the source forever (seen:
// [15351596, 15285312, 15351596] bytes for 120 s). Now requests have deadlines, a
// source that answers nothing is disconnected, a waiting download keeps serving
// what its temp file holds, and every attempt reads its peers' maps first.
#[test]
fn without_the_source_the_receivers_finish_from_each_other_what_they_can() {
    source_killed_mid_distribution(32, 40.0, 0.5, WhileAway::MustTrade);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn the_source_killed_mid_distribution_of_256_mib() {
    source_killed_mid_distribution(256, 100.0, 0.5, WhileAway::Look);
}

// ---------------------------------------------------------------------------
// One of three sources stops answering while a fourth host fetches from them.

fn one_source_stalls(size_mib: usize, rate_mbit: f64, stall_at: f64) {
    let Some(mesh) = mesh_or_skip(4, links(rate_mbit), &[], false) else { return };
    let sources = [0, 1, 2];
    let mut roots = mesh.share_on(SHARE, &sources).unwrap();
    let size = (size_mib as u64) << 20;
    let body = random_bytes(size as usize, 8);
    let hash = blake3::hash(&body);
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &body).unwrap();
    drop(body);
    converge(&mesh, &sources, &roots, Duration::from_secs(120));
    // The fourth host takes part now: all three have the whole file.
    let start = Instant::now();
    roots.extend(mesh.share_on(SHARE, &[3]).unwrap());
    let want = (size as f64 * stall_at) as u64;
    mesh.wait("the new host has part of the file", Duration::from_secs(120), |m| {
        done_of(m, 3, "big.bin").is_some_and(|d| d >= want)
    });
    let (done, took) = (done_of(&mesh, 3, "big.bin").unwrap_or(0), start.elapsed());
    mesh.hosts[1].freeze();
    let stalled = Instant::now();
    let rate = done as f64 / took.as_secs_f64();
    println!(
        "{} frozen (SIGSTOP) with {} of {} fetched in {:.1} s ({:.1} MiB/s from three sources)",
        mesh.hosts[1].name,
        mib(done),
        mib(size),
        took.as_secs_f64(),
        rate / (1 << 20) as f64
    );
    wait_whole(&mesh, &roots[3..], "big.bin", hash, Duration::from_secs(300));
    let rest = stalled.elapsed().as_secs_f64();
    let st = status(&mesh, 3);
    let timed_out = Host::counter(&st, "requests_timed_out");
    println!(
        "the other {} arrived {rest:.1} s after the freeze ({:.1} s at the rate before it); {timed_out} requests \
         timed out and went to the other sources",
        mib(size - done),
        (size - done) as f64 / rate
    );
    assert!(timed_out > 0, "the frozen source's requests were taken back at their deadline\n{}", mesh.logs());
    let n1 = mesh.hosts[1].id.clone();
    let dropped =
        st["peers"].as_array().into_iter().flatten().any(|p| p["id"] == n1.as_str() && p["connected"] != true);
    println!("the frozen source is {} by the new host", if dropped { "disconnected" } else { "still connected" });
    mesh.hosts[1].thaw();
    converge(&mesh, &[0, 1, 2, 3], &roots, Duration::from_secs(120));
}

#[test]
fn a_share_completes_from_the_others_when_one_of_three_sources_freezes() {
    one_source_stalls(48, 40.0, 0.2);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn a_share_of_160_mib_completes_from_the_others_when_one_of_three_sources_freezes() {
    // Long enough for the frozen source to miss three deadlines: it is disconnected
    // (and dialed again) before QUIC's idle timeout would have closed it.
    one_source_stalls(160, 40.0, 0.2);
}

/// Drops, on host `h`, every packet from host `from` longer than 300 bytes: QUIC's
/// acknowledgements and keep-alives pass, so the connection stays up, but no
/// chunk data arrives (what a peer whose disk hangs, or a path that loses large
/// packets, looks like). `on = false` removes the rule.
fn blackhole_data(mesh: &Mesh, h: usize, from: usize, on: bool) {
    let drop =
        if on { format!("    ip saddr {} meta length > 300 drop\n", mesh.hosts[from].addr) } else { String::new() };
    let rules = format!(
        "table inet meshsync_hole\ndelete table inet meshsync_hole\ntable inet meshsync_hole {{\n  \
         chain input {{\n    type filter hook input priority -10; policy accept;\n{drop}  }}\n}}\n"
    );
    let file = mesh.dir.join(format!("hole-{h}.nft"));
    std::fs::write(&file, rules).unwrap();
    blackbox::util::run(blackbox::util::in_ns(&mesh.hosts[h].ns, "nft").arg("-f").arg(&file)).expect("nft rule");
}

#[test]
fn a_peer_that_stops_sending_data_holds_no_other_file_of_the_share_up() {
    // Without deadlines, a download whose only source stopped sending (its QUIC
    // connection alive) waited for ever, and with it every other file of the share:
    // the share's worker waits for its pass to end.
    let Some(mesh) = mesh_or_skip(3, links(40.0), &[], true) else { return };
    let roots: Vec<PathBuf> = [1, 2]
        .iter()
        .map(|&h| {
            let dir = mesh.hosts[h].dir.join(SHARE);
            std::fs::create_dir_all(&dir).unwrap();
            mesh.hosts[h].share_add(SHARE, &dir).unwrap()
        })
        .collect();
    // Host 0 only sends: it never becomes a second source of host 2's file.
    let dir0 = mesh.hosts[0].dir.join(SHARE);
    std::fs::create_dir_all(&dir0).unwrap();
    mesh.hosts[0].run_cli(&["share", "add", SHARE, &dir0.to_string_lossy(), "--mode", "send-only"]).unwrap();
    let size = 48u64 << 20;
    let body = random_bytes(size as usize, 13);
    let hash = blake3::hash(&body);
    place(&mesh.dir.join("scratch"), &roots[1], "big.bin", &body).unwrap();
    drop(body);
    mesh.wait("host 1 downloads from host 2", Duration::from_secs(60), |m| {
        done_of(m, 1, "big.bin").is_some_and(|d| d >= size / 5)
    });
    let at_cut = done_of(&mesh, 1, "big.bin").unwrap_or(0);
    blackhole_data(&mesh, 1, 2, true);
    let cut = Instant::now();
    place(&mesh.dir.join("scratch"), &dir0, "small.txt", b"from host 0").unwrap();
    let small = roots[0].join("small.txt");
    let took = mesh.wait("small.txt reaches host 1 meanwhile", Duration::from_secs(120), |_| small.exists());
    let timed_out = Host::counter(&status(&mesh, 1), "requests_timed_out");
    println!(
        "host 2 stopped sending data at {} of {}; host 0's small.txt arrived {:.1} s later ({took:.1?} after it was \
         placed); {timed_out} requests timed out",
        mib(at_cut),
        mib(size),
        cut.elapsed().as_secs_f64()
    );
    assert!(timed_out > 0, "the stalled requests were taken back at their deadline");
    blackhole_data(&mesh, 1, 2, false);
    let rest = wait_whole(&mesh, &roots[..1], "big.bin", hash, Duration::from_secs(120));
    println!("big.bin complete {rest:.1?} after host 2's data flowed again");
}

// ---------------------------------------------------------------------------
// A partition with concurrent edits on both sides.

/// Edits host `h`'s copy through the ledger; panics on an I/O error.
struct Editor<'a> {
    ledger: &'a mut Ledger,
    roots: &'a [PathBuf],
    scratch: Vec<PathBuf>,
}

impl Editor<'_> {
    fn new<'a>(mesh: &Mesh, ledger: &'a mut Ledger, roots: &'a [PathBuf]) -> Editor<'a> {
        let scratch = (0..roots.len())
            .map(|h| {
                let d = mesh.hosts[h].dir.join("scratch");
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect();
        Editor { ledger, roots, scratch }
    }
    fn create(&mut self, h: usize, rel: &str, label: &str) -> bool {
        self.ledger.create(&self.roots[h], &self.scratch[h], rel, label, 3000).unwrap()
    }
    fn modify(&mut self, h: usize, rel: &str, label: &str) -> bool {
        self.ledger.modify(&self.roots[h], &self.scratch[h], rel, label, 3000).unwrap()
    }
    fn delete(&mut self, h: usize, rel: &str, label: &str) -> bool {
        self.ledger.delete(&self.roots[h], &self.scratch[h], rel, label).unwrap()
    }
    fn rename(&mut self, h: usize, from: &str, to: &str) -> bool {
        self.ledger.rename(&self.roots[h], from, to).unwrap()
    }
}

fn versions_trees(roots: &[PathBuf]) -> Vec<Tree> {
    roots.iter().map(|r| tree::snapshot_if_any(&r.join(".meshsync/versions")).unwrap()).collect()
}

fn partition_and_heal(files: usize, cut_secs: u64) {
    let Some(mesh) = mesh_or_skip(3, blackbox::fast_links(), &[], false) else { return };
    let all = [0, 1, 2];
    let roots = mesh.share_on(SHARE, &all).unwrap();
    let mut ledger = Ledger::default();
    let mut ed = Editor::new(&mesh, &mut ledger, &roots);
    for i in 0..files {
        assert!(ed.create(i % 3, &format!("f{i}"), &format!("f{i} made on n{}", i % 3)));
    }
    converge(&mesh, &all, &roots, Duration::from_secs(60));

    // Host 0 loses its cable; both sides keep editing the same files.
    mesh.link(0, false).unwrap();
    let cut = Instant::now();
    let mut expect_conflicts = 0;
    for i in 0..files {
        let f = format!("f{i}");
        match i % 6 {
            // Both sides modify: a conflict, the loser kept as a copy.
            0 | 1 => {
                assert!(ed.modify(0, &f, &format!("{f} edit on n0 (cut off)")));
                assert!(ed.modify(1 + i % 2, &f, &format!("{f} edit on n{} (mesh side)", 1 + i % 2)));
                expect_conflicts += 1;
            }
            // Modify on one side, delete on the other: the change wins.
            2 => {
                assert!(ed.modify(0, &f, &format!("{f} edit on n0 (cut off)")));
                assert!(ed.delete(2, &f, &format!("{f} deleted on n2")));
            }
            3 => {
                assert!(ed.delete(0, &f, &format!("{f} deleted on n0")));
                assert!(ed.modify(1, &f, &format!("{f} edit on n1 (mesh side)")));
            }
            // Renamed on one side, modified on the other.
            4 => {
                assert!(ed.rename(0, &f, &format!("moved/{f}")));
                assert!(ed.modify(2, &f, &format!("{f} edit on n2 (mesh side)")));
            }
            // Both sides create the same new path, and edit twice on one side.
            _ => {
                let g = format!("new/g{i}");
                assert!(ed.create(0, &g, &format!("{g} made on n0 (cut off)")));
                assert!(ed.create(1, &g, &format!("{g} made on n1 (mesh side)")));
                assert!(ed.modify(1, &f, &format!("{f} first edit on n1")));
                assert!(ed.modify(1, &f, &format!("{f} second edit on n1")));
                expect_conflicts += 1;
            }
        }
    }
    // The mesh side syncs its own edits while host 0 is away.
    converge(&mesh, &[1, 2], &roots[1..], Duration::from_secs(60));
    let left = Duration::from_secs(cut_secs).saturating_sub(cut.elapsed());
    std::thread::sleep(left);
    mesh.link(0, true).unwrap();
    println!("host 0 was cut off for {:.1} s", cut.elapsed().as_secs_f64());
    let took = converge(&mesh, &all, &roots, Duration::from_secs(120));
    drop(ed);

    let trees: Vec<Tree> = roots.iter().map(|r| tree::snapshot(r).unwrap()).collect();
    let conflicts = trees[0].keys().filter(|p| tree::is_conflict_copy(p)).count();
    let audit = ledger.audit(&trees, &versions_trees(&roots));
    println!(
        "converged {took:.1?} after the link came back: {} versions written, {} replaced on purpose, \
         {} present, {} in versions/, {} conflict copies (>= {expect_conflicts} expected), lost writes: {}",
        audit.written,
        audit.replaced,
        audit.present,
        audit.in_versions,
        conflicts,
        audit.lost.len()
    );
    assert!(audit.unknown.is_empty(), "files no write made: {:#?}", audit.unknown);
    assert!(audit.lost.is_empty(), "lost writes: {:#?}\n{}", audit.lost, mesh.logs());
    assert!(conflicts >= expect_conflicts, "each concurrent edit keeps its loser as a conflict copy");
}

#[test]
fn a_partition_with_edits_on_both_sides_heals_without_losing_a_write() {
    partition_and_heal(12, 3);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn a_partition_longer_than_the_idle_timeout_heals_without_losing_a_write() {
    // 45 s: past QUIC's 30 s idle timeout, so every connection to host 0 is
    // declared dead and must be dialled again.
    partition_and_heal(60, 45);
}

#[test]
fn a_conflict_winner_that_deletes_its_version_takes_the_losers() {
    // Found by tests/convergence.rs (seed 45). B wins a conflict on f (later mtime)
    // and leaves it to A to resolve; A's fetch of B's version fails because B moves
    // the file away meanwhile; B's scan turns f into a tombstone, which loses to A's
    // live version. Nothing changes on A's side, and B planned paths only when a
    // peer's entries changed or after a full rescan (hourly): B lacked f for an hour.
    let Some(mut mesh) = mesh_or_skip(2, links(64.0), &[], false) else { return };
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    let scratch = mesh.dir.join("scratch");
    place(&scratch, &roots[0], "f", b"first").unwrap();
    converge(&mesh, &[0, 1], &roots, Duration::from_secs(30));
    // Concurrent versions: A's small one, then B's big one, written while B is down.
    mesh.hosts[1].stop();
    place(&scratch, &roots[0], "f", b"a: edited on A").unwrap();
    let b = random_bytes(64 << 20, 7);
    let b_hash = blake3::hash(&b);
    place(&scratch, &roots[1], "f", &b).unwrap();
    drop(b);
    mesh.hosts[1].start().unwrap();
    mesh.wait("A fetches B's winning version", Duration::from_secs(60), |m| done_of(m, 0, "f").is_some_and(|d| d > 0));
    std::fs::rename(roots[1].join("f"), roots[1].join("g")).unwrap();
    let took = converge(&mesh, &[0, 1], &roots, Duration::from_secs(60));
    println!("converged {took:.1?} after B moved its winning version away");
    for r in &roots {
        assert_eq!(std::fs::read(r.join("f")).ok().as_deref(), Some(&b"a: edited on A"[..]), "{}", r.display());
        assert_eq!(std::fs::read(r.join("g")).map(|g| blake3::hash(&g)).ok(), Some(b_hash), "{}", r.display());
    }
}

// ---------------------------------------------------------------------------
// 5 % packet loss on every link.

fn tree_under_loss(hosts: usize, files: usize, big_mib: usize, rate_mbit: f64) {
    let shaping = Shaping { rate_mbit, loss_pct: 5, delay_ms: 0 };
    let Some(mesh) = mesh_or_skip(hosts, shaping, &[], true) else { return };
    let all: Vec<usize> = (0..hosts).collect();
    let roots = mesh.share_on(SHARE, &all).unwrap();
    let src = mesh.dir.join("tree");
    let mut bytes = 0;
    for i in 0..files {
        let len = 1024 + (i * 7919) % (64 << 10);
        bytes += len;
        let p = src.join(format!("d{}/f{i}", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, random_bytes(len, 100 + i as u64)).unwrap();
    }
    std::fs::write(src.join("big.bin"), random_bytes(big_mib << 20, 3)).unwrap();
    bytes += big_mib << 20;
    let want = tree::snapshot(&src).unwrap();
    let start = Instant::now();
    std::fs::rename(&src, roots[0].join("tree")).unwrap();
    let took = converge(&mesh, &all, &roots, Duration::from_secs(300));
    println!(
        "{files} files + {big_mib} MiB ({}) on {hosts} hosts at {rate_mbit} Mbit/s with 5 % loss: converged in {took:.1?} ({:.1} s since placed)",
        mib(bytes as u64),
        start.elapsed().as_secs_f64()
    );
    for r in &roots {
        let got = tree::snapshot(&r.join("tree")).unwrap();
        assert!(tree::diff(&want, &got).is_empty(), "{}: {:?}", r.display(), tree::diff(&want, &got));
    }
}

#[test]
fn a_tree_converges_with_5_percent_loss_on_every_link() {
    tree_under_loss(3, 300, 8, 100.0);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn a_big_tree_converges_on_5_hosts_with_5_percent_loss() {
    tree_under_loss(5, 3000, 128, 100.0);
}

// ---------------------------------------------------------------------------
// A receiver's disk fills up.

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("meshsync-disk").tempdir().unwrap();
        blackbox::util::run(std::process::Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_mib}m"),
            "tmpfs",
            &dir.path().to_string_lossy(),
        ]))
        .expect("mounting a tmpfs");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn resize(&self, size_mib: u64) {
        blackbox::util::run(std::process::Command::new("mount").args([
            "-o",
            &format!("remount,size={size_mib}m"),
            &self.path().to_string_lossy(),
        ]))
        .expect("remounting the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = blackbox::util::run(std::process::Command::new("umount").arg("-l").arg(self.dir.path()));
    }
}

fn disk_full(disk_mib: u64, filler_mib: usize, file_mib: usize, free_by_remount: Option<u64>) {
    if let Some(why) = skip_reason(false) {
        println!("skipped: {why}");
        return;
    }
    // Declared before the mesh: dropped after its daemons stop.
    let disk = Tmpfs::mount(disk_mib);
    let opts = [("min_free_mib", "1")];
    let mesh = Mesh::new(2, &blackbox::fast_links(), &opts).expect("a mesh of namespace hosts");
    let mut roots = mesh.share_on(SHARE, &[0]).unwrap();
    let share_dir = disk.path().join("share");
    std::fs::create_dir(&share_dir).unwrap();
    roots.push(mesh.hosts[1].share_add(SHARE, &share_dir).unwrap());
    let filler = disk.path().join("filler");
    std::fs::write(&filler, random_bytes(filler_mib << 20, 4)).unwrap();

    place(&mesh.dir.join("scratch"), &roots[0], "small.txt", b"fits").unwrap();
    let body = random_bytes(file_mib << 20, 5);
    let hash = blake3::hash(&body);
    place(&mesh.dir.join("scratch"), &roots[0], "big.bin", &body).unwrap();
    drop(body);
    let final_path = roots[1].join("big.bin");
    mesh.wait("the receiver pauses the share: disk full", Duration::from_secs(60), |m| {
        assert!(!final_path.exists(), "no partial file at the final path");
        Host::share_of(&status(m, 1), SHARE).is_some_and(|s| !s["paused"].is_null())
    });
    let why = Host::share_of(&status(&mesh, 1), SHARE).unwrap()["paused"].as_str().unwrap_or_default().to_string();
    println!("paused: {why}");
    assert!(why.contains("disk full"), "the reason names the full disk: {why}");
    // A while later it is still paused, still without a partial file.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!final_path.exists(), "no partial file at the final path");
    assert_eq!(std::fs::read(roots[1].join("small.txt")).ok().as_deref(), Some(&b"fits"[..]), "what fits arrives");
    let paused_again = Host::share_of(&status(&mesh, 1), SHARE).is_some_and(|s| !s["paused"].is_null());
    assert!(paused_again, "still paused while the disk is full");

    let freed = Instant::now();
    match free_by_remount {
        Some(size) => disk.resize(size),
        None => std::fs::remove_file(&filler).unwrap(),
    }
    let took = wait_whole(&mesh, &roots[1..], "big.bin", hash, Duration::from_secs(120));
    mesh.wait("the share resumes", Duration::from_secs(30), |m| {
        Host::share_of(&status(m, 1), SHARE).is_some_and(|s| s["paused"].is_null())
    });
    println!("complete {took:.1?} after space was freed ({:.1} s until unpaused)", freed.elapsed().as_secs_f64());
    converge(&mesh, &[0, 1], &roots, Duration::from_secs(60));
}

#[test]
fn a_full_disk_pauses_the_share_and_it_resumes_when_space_is_freed() {
    disk_full(64, 40, 32, None);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn a_256_mib_file_on_a_64_mib_disk_waits_for_a_bigger_disk() {
    disk_full(64, 8, 256, Some(512));
}

#[test]
fn a_sparse_file_bigger_than_the_disk_arrives_when_its_data_fits() {
    // A download reserved (fallocate) the file's whole size and asked the disk for
    // all of it: a 256 MiB file with 8 MiB of data paused a 64 MiB disk for good.
    // Now runs of zeros stay holes and only the data is asked for.
    if let Some(why) = skip_reason(false) {
        println!("skipped: {why}");
        return;
    }
    let disk = Tmpfs::mount(64);
    let mesh = Mesh::new(2, &blackbox::fast_links(), &[("min_free_mib", "1")]).expect("a mesh of namespace hosts");
    let mut roots = mesh.share_on(SHARE, &[0]).unwrap();
    let share_dir = disk.path().join("share");
    std::fs::create_dir(&share_dir).unwrap();
    roots.push(mesh.hosts[1].share_add(SHARE, &share_dir).unwrap());
    let size = 256u64 << 20;
    let scratch = mesh.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let sparse = scratch.join("disk.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&random_bytes(4 << 20, 9), 0).unwrap();
        f.write_all_at(&random_bytes(4 << 20, 10), size - (4 << 20)).unwrap();
    }
    let hash = blake3::hash(&std::fs::read(&sparse).unwrap());
    std::fs::rename(&sparse, roots[0].join("disk.img")).unwrap();
    let took = wait_whole(&mesh, &roots[1..], "disk.img", hash, Duration::from_secs(120));
    use std::os::unix::fs::MetadataExt;
    let on_disk = std::fs::metadata(roots[1].join("disk.img")).unwrap().blocks() * 512;
    println!(
        "{} with {} of data arrived on a 64 MiB disk in {took:.1?}, {} allocated",
        mib(size),
        mib(8 << 20),
        mib(on_disk)
    );
    assert!(on_disk < 32 << 20, "the holes stay holes: {on_disk} bytes allocated");
    converge(&mesh, &[0, 1], &roots, Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// kill -9 while thousands of files are being indexed.

fn killed_during_heavy_index_writes(files: usize, over: Duration, kills: &[(usize, f64)]) {
    let Some(mut mesh) = mesh_or_skip(2, blackbox::fast_links(), &[], false) else { return };
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    let root = roots[0].clone();
    let writer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..files {
            let p = root.join(format!("d{:03}/f{i}", i % 100));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("file {i}\n").repeat(1 + i % 50)).unwrap();
            let due = over.mul_f64((i + 1) as f64 / files as f64);
            if let Some(rest) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    });
    let start = Instant::now();
    for &(h, at) in kills {
        let due = over.mul_f64(at);
        std::thread::sleep(due.saturating_sub(start.elapsed()));
        // The other host has just received entries from this one: the index writes
        // behind them are the freshest, the ones a crash is likeliest to lose.
        let other = 1 - h;
        let before = Host::counter(&status(&mesh, other), "entries_received");
        let _ = mesh.try_wait("entries arriving from the host to kill", Duration::from_secs(2), |m| {
            Host::counter(&status(m, other), "entries_received") > before
        });
        let files_then = Host::share_of(&status(&mesh, h), SHARE).map_or(0, |s| s["files"].as_u64().unwrap_or(0));
        mesh.hosts[h].kill9();
        println!(
            "{} killed at {:.1} s with {files_then} files indexed",
            mesh.hosts[h].name,
            start.elapsed().as_secs_f64()
        );
        mesh.hosts[h].start().unwrap();
    }
    writer.join().unwrap();
    let took = converge(&mesh, &[0, 1], &roots, Duration::from_secs(90));
    println!(
        "{files} files: converged {took:.1?} after the last restart ({:.1} s in all)",
        start.elapsed().as_secs_f64()
    );
    for (h, r) in roots.iter().enumerate() {
        let t = tree::snapshot(r).unwrap();
        let on_disk = tree::files(&t).count() as u64;
        let dirs = t.values().filter(|i| **i == tree::Item::Dir).count() as u64;
        assert_eq!(on_disk, files as u64, "{}: every file written is there", mesh.hosts[h].name);
        let st = status(&mesh, h);
        let s = Host::share_of(&st, SHARE).unwrap();
        assert_eq!(s["files"].as_u64(), Some(on_disk), "{}: status counts the files on disk", mesh.hosts[h].name);
        assert_eq!(s["dirs"].as_u64(), Some(dirs), "{}: status counts the folders on disk", mesh.hosts[h].name);
    }
}

#[test]
fn a_restart_during_heavy_index_writes_leaves_a_consistent_index() {
    // Host 0 killed while it scans new files and sends their entries, host 1 while
    // it applies them.
    let kills = [(0, 0.2), (0, 0.35), (1, 0.45), (0, 0.55), (0, 0.7), (1, 0.8), (0, 0.9)];
    killed_during_heavy_index_writes(5000, Duration::from_secs(5), &kills);
}

#[test]
#[ignore = "big variant: cargo test --release --test faults -- --ignored --nocapture"]
fn restarts_during_50_000_index_writes_leave_a_consistent_index() {
    let kills = [(0, 0.1), (1, 0.25), (0, 0.4), (1, 0.55), (0, 0.7), (1, 0.85), (0, 1.0)];
    killed_during_heavy_index_writes(50_000, Duration::from_secs(30), &kills);
}
