//! The stranger flood: `cargo bench --bench flood`. Two real `meshsync run` daemons
//! on loopback share a folder; then `--connections` certificate-less join
//! connections from `--sources` loopback addresses each send a 4-byte length
//! claiming `--claim-bytes` and trickle a byte a second (`--bytes-per-sec`),
//! reconnecting whenever the node closes them. Prints the daemon's RSS (VmRSS) before, during and after, how
//! long `status` takes to answer, and how long a small file takes to replicate
//! before and during the flood. Figures, not assertions (benches/LAB.md, "Flood").

use anyhow::bail;
use clap::Parser;
use meshsync::home::Home;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "flood", about = "meshsync under a flood of certificate-less join connections")]
struct Args {
    /// Join connections kept going at once.
    #[arg(long, default_value_t = 300)]
    connections: usize,
    /// Loopback source addresses they come from (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 75)]
    sources: usize,
    /// The length each announces in its 4-byte prefix.
    #[arg(long, default_value_t = 32 << 20)]
    claim_bytes: u32,
    /// How fast each then sends the body it announced, in bytes per second
    /// (1: a trickle; a large rate fills the announced length at once).
    #[arg(long, default_value_t = 1)]
    bytes_per_sec: u64,
    /// How long the flood lasts, in seconds.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// How long a flooder waits before connecting again once refused or closed, in ms.
    #[arg(long, default_value_t = 1000)]
    reconnect_ms: u64,
    /// The meshsync binary (default: the one Cargo built for this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_meshsync"))]
    bin: PathBuf,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[path = "../common/daemon.rs"]
mod daemon;

use daemon::{Daemon, NodeSpec};

const SHARE: &str = "flood";

async fn node(bin: &Path, dir: &Path, name: &str, inviter: Option<&Daemon>) -> anyhow::Result<Daemon> {
    let spec = NodeSpec { dir, name, share_name: SHARE, share: dir.join(format!("{name}-share")), node_lines: &[] };
    Daemon::start(bin, spec, inviter).await
}

/// How long `status` takes to answer over the control socket, in ms.
async fn status_ms(home: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    meshsync::ops::control::status(&Home::new(home)).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Writes a 64 KiB file into `from`'s share, asks for a rescan, and times until
/// `to` holds it whole, in ms.
async fn replicate_ms(from: &Daemon, to: &Daemon, name: &str) -> anyhow::Result<f64> {
    let data: Vec<u8> = (0..64 << 10).map(|_| rand::random::<u8>()).collect();
    let t = Instant::now();
    std::fs::write(from.share.join(name), &data)?;
    meshsync::ops::control::rescan(&Home::new(&from.home), Some(SHARE.into())).await?;
    let target = to.share.join(name);
    loop {
        if std::fs::read(&target).is_ok_and(|d| d == data) {
            return Ok(t.elapsed().as_secs_f64() * 1000.0);
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not replicate within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the flooders saw.
#[derive(Default)]
struct Seen {
    attempts: AtomicU64,
    refused_at_handshake: AtomicU64,
    admitted: AtomicU64,
    closed_busy: AtomicU64,
    closed_bad_request: AtomicU64,
    closed_late: AtomicU64,
    held_to_the_end: AtomicU64,
}

/// One flooder: connect, claim, trickle, until told to stop.
async fn flooder(from: String, to: std::net::SocketAddr, fp: [u8; 32], a: Arc<FloodArgs>, seen: Arc<Seen>) {
    let bind: std::net::SocketAddr = format!("{from}:0").parse().expect("a loopback address");
    while !a.stop.load(Ordering::Relaxed) {
        seen.attempts.fetch_add(1, Ordering::Relaxed);
        match meshsync::net::connect_join_from(bind, fp, to).await {
            Err(_) => {
                seen.refused_at_handshake.fetch_add(1, Ordering::Relaxed);
            }
            Ok(conn) => {
                seen.admitted.fetch_add(1, Ordering::Relaxed);
                if let Ok((mut send, _recv)) = conn.open_bi().await {
                    let _ = send.write_all(&a.claim.to_be_bytes()).await;
                    let trickle = async {
                        let piece = vec![0u8; a.rate.clamp(1, 64 << 10) as usize];
                        let pause = Duration::from_secs_f64(piece.len() as f64 / a.rate.max(1) as f64);
                        let mut left = a.claim as usize;
                        while !a.stop.load(Ordering::Relaxed) {
                            let n = piece.len().min(left);
                            if n > 0 && send.write_all(&piece[..n]).await.is_err() {
                                break;
                            }
                            left -= n;
                            tokio::time::sleep(pause).await;
                        }
                    };
                    tokio::select! { _ = trickle => {}, _ = conn.closed() => {} }
                }
                let why = match conn.close_reason() {
                    Some(quinn::ConnectionError::ApplicationClosed(c)) => c.error_code.into_inner(),
                    _ => 0,
                };
                use meshsync::net::gate::{CLOSE_BAD_JOIN_REQUEST, CLOSE_BUSY, CLOSE_LATE_JOIN_REQUEST};
                let counter = match why {
                    c if c == CLOSE_BUSY as u64 => &seen.closed_busy,
                    c if c == CLOSE_BAD_JOIN_REQUEST as u64 => &seen.closed_bad_request,
                    c if c == CLOSE_LATE_JOIN_REQUEST as u64 => &seen.closed_late,
                    _ => &seen.held_to_the_end,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                conn.close(0u32.into(), b"flood");
            }
        }
        tokio::time::sleep(a.reconnect).await;
    }
}

struct FloodArgs {
    claim: u32,
    rate: u64,
    reconnect: Duration,
    stop: AtomicBool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
}

async fn run(a: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let alpha = node(&a.bin, dir.path(), "alpha", None).await?;
    let beta = node(&a.bin, dir.path(), "beta", Some(&alpha)).await?;
    // Connected both ways and caught up: a first file goes through.
    replicate_ms(&alpha, &beta, "warm-up").await?;

    let mut before = Vec::new();
    let mut rep_before = Vec::new();
    for i in 0..3 {
        before.push(status_ms(&alpha.home).await?);
        rep_before.push(replicate_ms(&alpha, &beta, &format!("before-{i}")).await?);
    }
    let rss_before = alpha.rss_mib()?;

    let ident = meshsync::identity::Identity::load(&Home::new(&alpha.home))?;
    let cfg = meshsync::config::Config::load(&Home::new(&alpha.home).config())?;
    let fa = Arc::new(FloodArgs {
        claim: a.claim_bytes,
        rate: a.bytes_per_sec,
        reconnect: Duration::from_millis(a.reconnect_ms),
        stop: AtomicBool::new(false),
    });
    let seen = Arc::new(Seen::default());
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..a.connections {
        let from = format!("127.0.0.{}", 2 + i % a.sources.clamp(1, 250));
        flood.spawn(flooder(from, cfg.node.listen, ident.ca_fingerprint(), fa.clone(), seen.clone()));
    }
    println!(
        "flood: {} connections from {} addresses, each claiming {} bytes and sending {} bytes/s, for {} s",
        a.connections, a.sources, a.claim_bytes, a.bytes_per_sec, a.seconds
    );
    let start = Instant::now();
    let (mut rss_max, mut during, mut rep_during) = (rss_before, Vec::new(), Vec::new());
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(alpha.rss_mib()?);
        // After the first seconds, while every flooder is connected or refused.
        if start.elapsed() > Duration::from_secs(5) && i < 5 {
            during.push(status_ms(&alpha.home).await?);
            rep_during.push(replicate_ms(&alpha, &beta, &format!("during-{i}")).await?);
            rss_max = rss_max.max(alpha.rss_mib()?);
            i += 1;
        }
    }
    let rss_end_of_flood = alpha.rss_mib()?;
    fa.stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    // Past every deadline: what the daemon keeps once the strangers are gone.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_after = alpha.rss_mib()?;
    let after = status_ms(&alpha.home).await?;
    let rep_after = replicate_ms(&alpha, &beta, "after").await?;
    let st = meshsync::ops::control::status(&Home::new(&alpha.home)).await?;

    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!("\n| figure | before | during the flood | after |");
    println!("|---|---|---|---|");
    println!(
        "| daemon RSS (MiB) | {rss_before:.1} | max {rss_max:.1}, {rss_end_of_flood:.1} at its end | {rss_after:.1} |"
    );
    println!(
        "| `status` answer (ms, median) | {:.1} ({}) | {:.1} ({}) | {after:.1} |",
        median(before.clone()),
        list(&before),
        median(during.clone()),
        list(&during)
    );
    println!(
        "| 64 KiB file replicated (ms, median) | {:.0} ({}) | {:.0} ({}) | {rep_after:.0} |",
        median(rep_before.clone()),
        list(&rep_before),
        median(rep_during.clone()),
        list(&rep_during)
    );
    println!("\nRSS growth during the flood: {:.1} MiB (target: at most 64 MiB)", rss_max - rss_before);
    println!(
        "flooders: {} attempts; {} refused before or during the handshake; {} got through it, of which {} \
         closed for want of a place, {} for a bad request (its length prefix), {} at the join deadline, {} still open when the flood ended",
        g(&seen.attempts),
        g(&seen.refused_at_handshake),
        g(&seen.admitted),
        g(&seen.closed_busy),
        g(&seen.closed_bad_request),
        g(&seen.closed_late),
        g(&seen.held_to_the_end),
    );
    println!("the daemon counted {} refused connections", st.counters.connections_refused);
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    daemon::block_on_main("flood", run(&a))
}
