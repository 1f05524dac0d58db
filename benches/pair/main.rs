//! The pair benchmark: `cargo bench --bench pair -- --cases small,latency,insert,copy,zstd`.
//! Two hosts in network namespaces on a bridge shaped to 1 Gbit/s (the bandwidth
//! lab's network), real `meshsync` daemons, and rsync over ssh in the same run as
//! the reference. See benches/LAB.md, "Pair".

// The bandwidth lab's network, daemons and sshd (each reaches the others as `super::`).
#[allow(dead_code)]
#[path = "../lab/mesh.rs"]
mod mesh;
#[allow(dead_code)]
#[path = "../lab/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../lab/ssh.rs"]
mod ssh;
#[allow(dead_code)]
#[path = "../lab/util.rs"]
mod util;

mod big;
mod cap;
mod cases;
mod report;
mod tree;
mod zstd;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// One measurement of the pair benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// (1) N x 4 KiB files in 200 dirs, initial sync into an empty peer.
    Small,
    /// (2) Finished 4 KiB files one at a time: time until each is on the peer.
    Latency,
    /// (3) 1 MiB inserted in the middle of the big file: bytes on the wire and time.
    Insert,
    /// (4) The big file's first copy: time and share of the link rate.
    Copy,
    /// (5) A log-like and a random file of the big file's size, compression auto
    /// and off: bytes on the wire and time.
    Zstd,
    /// (6) A random file of the big file's size under a download cap, beside the
    /// same upload cap: the file's rate against the cap.
    Cap,
}

#[derive(Parser)]
#[command(name = "pair", about = "meshsync pair benchmark: two shaped hosts, meshsync beside rsync over ssh")]
struct Args {
    /// Cases to run, in this order: small, latency, insert, copy, zstd, cap.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "small,latency,copy,insert")]
    cases: Vec<Case>,
    /// Rate of both host links, per direction, in Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// Files of the small-file case.
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Files of the latency case, written one at a time.
    #[arg(long, default_value_t = 200)]
    latency_files: usize,
    /// Size of the big file (copy and insert cases), MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Bytes inserted in the middle of the big file, KiB.
    #[arg(long, default_value_t = 1024)]
    insert_kib: u64,
    /// The rate of the cap case's download and upload caps, Mbit/s.
    #[arg(long, default_value_t = 200)]
    cap_mbit: u64,
    /// Leave rsync out (the meshsync figures only).
    #[arg(long)]
    no_rsync: bool,
    /// RUST_LOG of the daemons (`meshsync=debug` adds the timestamps of each stage).
    #[arg(long, default_value = "info")]
    daemon_log: String,
    /// Output directory for pair.md, pair.json and logs/.
    #[arg(long, default_value = "target/pair")]
    out: PathBuf,
    /// The meshsync binary (default: the one Cargo built for this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_meshsync"))]
    bin: PathBuf,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    util::install_interrupt_handler();
    if let Some(why) = netns::unavailable(&[], "the pair benchmark") {
        println!("pair benchmark skipped: {why}");
        return ExitCode::SUCCESS;
    }
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pair benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    if a.cases.is_empty() {
        anyhow::bail!("--cases needs at least one of small, latency, insert, copy, zstd, cap");
    }
    if a.files == 0 || a.latency_files == 0 || a.size_mib == 0 || a.insert_kib == 0 || a.cap_mbit == 0 {
        anyhow::bail!("--files, --latency-files, --size-mib, --insert-kib and --cap-mbit must each be at least 1");
    }
    if !(a.rate_mbit > 0.0 && a.rate_mbit <= 100_000.0) {
        anyhow::bail!("--rate-mbit must be above 0 and at most 100000");
    }
    let bin = a.bin.canonicalize().with_context(|| {
        format!("meshsync binary {} not found (cargo build --release --bin meshsync)", a.bin.display())
    })?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = a.out.canonicalize().with_context(|| format!("resolving {}", a.out.display()))?;
    let logs = out.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("clearing old logs in {}", logs.display()))?;
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let work = tempfile::Builder::new().prefix("work-").tempdir_in(&out).context("creating the work dir")?;
    let rsync = if a.no_rsync { Err("--no-rsync".to_string()) } else { ssh::Tools::find() };
    if let Err(why) = &rsync {
        println!("rsync references skipped: {why}");
    }
    let shaping = netns::Shaping { rate_mbit: a.rate_mbit, loss_pct: 0, delay_ms: 0 };
    let topo = netns::Topology::create(2, &shaping, work.path()).context("building the pair network")?;
    println!(
        "pair: 2 namespaces on a bridge, both links tbf {} Mbit/s per direction (burst {} KiB, latency {} ms); {}",
        a.rate_mbit,
        shaping.burst_bytes() >> 10,
        netns::TBF_LATENCY_MS,
        bin.display()
    );
    let mut bench = cases::Bench {
        bin,
        topo,
        rsync: rsync.ok(),
        sshd: None,
        work: work.path().to_path_buf(),
        logs,
        rate_mbit: a.rate_mbit,
        settings: mesh::Settings { rescan_interval_secs: 3600, log_filter: a.daemon_log.clone() },
        big: None,
    };
    let sizes = cases::Sizes {
        files: a.files,
        latency_files: a.latency_files,
        big: a.size_mib << 20,
        insert: a.insert_kib << 10,
        cap_mbit: a.cap_mbit,
    };
    let mut results = Vec::new();
    for case in &a.cases {
        util::check_interrupt()?;
        let r = bench.run(*case, &sizes).with_context(|| format!("case {case:?}"))?;
        println!("{}", r.line());
        results.push(r);
        // Written after every case, so the figures so far survive a later failure.
        report::write(&out, &results, &a.cases, a.rate_mbit)?;
    }
    println!("\n{}", report::markdown(&results, a.rate_mbit));
    println!("wrote {} and {}", out.join("pair.md").display(), out.join("pair.json").display());
    // Processes first, then the namespaces they run in.
    bench.sshd = None;
    drop(bench);
    Ok(())
}
