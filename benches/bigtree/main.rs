//! One share of a big tree: `cargo bench --bench bigtree`. Generates (once, then
//! reused) a tree of `--files` files of mixed sizes from a seed, then measures with
//! real `meshsync run` daemons on loopback:
//!
//! - a plain walk + blake3 of every file, on 1 and 2 threads (the reference);
//! - one node's initial index of the tree, its idle RSS afterwards, and an
//!   unchanged rescan;
//! - a second node joining with the same files (hard links of the tree, or a copy):
//!   its own index, then the index exchange until both are in sync, in bytes and
//!   batches each way and seconds; both nodes' idle RSS; an unchanged rescan again.
//!
//! Figures, not assertions (benches/LAB.md, "Big tree").

#[path = "../common/daemon.rs"]
mod daemon;
mod measure;
#[path = "../common/procfs.rs"]
mod procfs;
mod reference;
mod tree;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use daemon::{Daemon, NodeSpec};
use measure::{fmt_secs, load, wait_idle, wait_in_sync, wait_scanned, Scanned};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "bigtree", about = "meshsync on one share of a big generated tree")]
struct Args {
    /// Files in the tree.
    #[arg(long, default_value_t = 1_000_000)]
    files: usize,
    /// Leaf directories (default: one per 100 files).
    #[arg(long)]
    dirs: Option<usize>,
    /// Size mix: PERCENT:MIN-MAX byte ranges, comma-separated, adding up to 100.
    #[arg(long, default_value = tree::DEFAULT_MIX)]
    mix: String,
    /// Seed of sizes and contents.
    #[arg(long, default_value_t = 25)]
    seed: u64,
    /// Where trees (kept between runs) and the nodes' homes (removed) go.
    #[arg(long, default_value = "/work/tmp-bigtree")]
    dir: PathBuf,
    /// How the second node gets the same files.
    #[arg(long, value_enum, default_value_t = Second::Link)]
    second: Second,
    /// Stop after the first node (no second node, no exchange).
    #[arg(long)]
    one_node: bool,
    /// How often `status` is asked while waiting, in ms (each answer may read the
    /// whole index while it changes).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// The nodes' `index_cache_mib` (default: the daemon's).
    #[arg(long)]
    index_cache_mib: Option<u64>,
    /// Remove the generated tree at the end.
    #[arg(long)]
    remove_tree: bool,
    /// Keep the nodes' homes, logs and folders (`DIR/run`) at the end.
    #[arg(long)]
    keep_run: bool,
    /// The meshsync binary (default: the one Cargo built for this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_meshsync"))]
    bin: PathBuf,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How the second node's folder holds the same files as the first's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Second {
    /// `cp -al`: hard links to the same inodes (no disk; meshsync only reads them).
    Link,
    /// `cp -a`: a copy (as much disk again).
    Copy,
}

const SHARE: &str = "big";

/// The tree under `base`, generated unless a finished one is there; its totals.
fn ensure_tree(spec: &tree::Spec, root: &Path) -> anyhow::Result<tree::Totals> {
    if let Some(t) = tree::read_stamp(root) {
        println!("tree: reusing {} ({} files, {} bytes, {} dirs)", root.display(), t.files, t.bytes, t.dirs);
        return Ok(t);
    }
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("removing the unfinished {}", root.display()))?;
    }
    println!("tree: generating {} ...", root.display());
    let start = Instant::now();
    let t = tree::generate(spec, root)?;
    tree::write_stamp(root, &t)?;
    println!("tree: {} files, {} bytes, {} dirs in {}", t.files, t.bytes, t.dirs, fmt_secs(start.elapsed()));
    Ok(t)
}

/// A folder holding the tree's files for one node (its own `.meshsync` removed).
fn node_folder(tree: &Path, folder: &Path, how: Second) -> anyhow::Result<()> {
    if folder.exists() {
        std::fs::remove_dir_all(folder).with_context(|| format!("removing {}", folder.display()))?;
    }
    let start = Instant::now();
    let flag = if how == Second::Link { "-al" } else { "-a" };
    let st = std::process::Command::new("cp").arg(flag).arg(tree).arg(folder).status()?;
    if !st.success() {
        bail!("cp {flag} {} {} failed", tree.display(), folder.display());
    }
    println!("{}: cp {flag} in {}", folder.display(), fmt_secs(start.elapsed()));
    Ok(())
}

fn du_mib(p: &Path) -> f64 {
    let out = std::process::Command::new("du").arg("-sk").arg(p).output();
    let kib = out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse::<f64>().ok());
    kib.unwrap_or(f64::NAN) / 1024.0
}

async fn run(a: &Args) -> anyhow::Result<()> {
    let mix = tree::parse_mix(&a.mix)?;
    let spec = tree::Spec { files: a.files, dirs: a.dirs.unwrap_or((a.files / 100).max(1)), mix, seed: a.seed };
    std::fs::create_dir_all(&a.dir)?;
    let tree_root = a.dir.join(spec.name());
    let totals = ensure_tree(&spec, &tree_root)?;

    println!("\n## reference: plain walk + blake3 of every file (page cache warm after the first)");
    let warm = reference::walk_and_hash(&tree_root, ".meshsync", 2);
    if warm.files != totals.files || warm.bytes != totals.bytes {
        bail!(
            "the tree holds {} files, {} bytes; its stamp says {}, {}: remove it",
            warm.files,
            warm.bytes,
            totals.files,
            totals.bytes
        );
    }
    let one = reference::walk_and_hash(&tree_root, ".meshsync", 1);
    let two = reference::walk_and_hash(&tree_root, ".meshsync", 2);
    println!(
        "walk+hash, 1 thread : {} ({:.1} CPU-s; {} files, {} MiB) [{}]",
        fmt_secs(one.time),
        one.cpu,
        one.files,
        one.bytes >> 20,
        load()
    );
    println!("walk+hash, 2 threads: {} ({:.1} CPU-s) [{}]", fmt_secs(two.time), two.cpu, load());

    let work = a.dir.join("run");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    node_folder(&tree_root, &work.join("a-share"), Second::Link)?;

    println!("\n## node a: initial index");
    let t0 = Instant::now();
    let node_lines: Vec<String> = a.index_cache_mib.map(|m| format!("index_cache_mib = {m}")).into_iter().collect();
    let spec_a =
        NodeSpec { dir: &work, name: "a", share_name: SHARE, share: work.join("a-share"), node_lines: &node_lines };
    let node_a = Daemon::start(&a.bin, spec_a, None).await?;
    let scanned = wait_scanned(&node_a, SHARE, t0, totals.files, a.poll_ms).await?;
    print_scan("a", &scanned, one.time);
    let (quiet, cpu) = wait_idle(&node_a).await?;
    println!(
        "a: idle {} after `run` ({cpu:.1} CPU-s after the scan); RSS {:.1} MiB (peak {:.1} MiB) [{}]",
        fmt_secs(quiet - t0),
        node_a.rss_mib()?,
        hwm(&node_a),
        load()
    );
    println!("a: index on disk {:.0} MiB", du_mib(&node_a.home.join("index")));

    println!("\n## node a: unchanged rescan, alone");
    rescan(&node_a, a.poll_ms).await?;

    if a.one_node {
        return finish(a, &tree_root, &work);
    }
    println!("\n## node b joins with the same files ({:?})", a.second);
    node_folder(&tree_root, &work.join("b-share"), a.second)?;
    let t0 = Instant::now();
    let spec_b =
        NodeSpec { dir: &work, name: "b", share_name: SHARE, share: work.join("b-share"), node_lines: &node_lines };
    let mut node_b = Daemon::start(&a.bin, spec_b, Some(&node_a)).await?;
    let scanned = wait_scanned(&node_b, SHARE, t0, totals.files, a.poll_ms).await?;
    print_scan("b", &scanned, one.time);
    let synced = wait_in_sync(&[&node_a, &node_b], SHARE, t0, a.poll_ms).await?;
    println!("slowest `status` answer while exchanging: {}", fmt_secs(measure::slowest_status()));
    println!(
        "a and b in sync {} after b started ({} after b's scan) [{}]",
        fmt_secs(synced),
        fmt_secs(synced.saturating_sub(scanned.wall)),
        load()
    );
    for (name, d) in [("a", &node_a), ("b", &node_b)] {
        let c = measure::status(d).await?.counters;
        println!(
            "{name}: index sent {} entries in {} batches, {:.1} MiB; received {} entries in {} batches, {:.1} MiB; largest batch ≤ {} entries",
            c.entries_sent,
            c.index_batches_sent,
            c.index_bytes_sent as f64 / 1048576.0,
            c.entries_received,
            c.index_batches_received,
            c.index_bytes_received as f64 / 1048576.0,
            meshsync::proto::MAX_BATCH_ENTRIES,
        );
    }
    for (name, d) in [("a", &node_a), ("b", &node_b)] {
        let (quiet, _) = wait_idle(d).await?;
        println!(
            "{name}: idle {} after b started; RSS {:.1} MiB (peak {:.1} MiB); index on disk {:.0} MiB [{}]",
            fmt_secs(quiet - t0),
            d.rss_mib()?,
            hwm(d),
            du_mib(&d.home.join("index")),
            load()
        );
    }
    // At rest means after the daemon's periodic give-back too: until then glibc
    // holds what the exchange freed (resident, not in use).
    tokio::time::sleep(meshsync::daemon::GIVE_BACK_EVERY + Duration::from_secs(2)).await;
    for (name, d) in [("a", &node_a), ("b", &node_b)] {
        println!(
            "{name}: RSS {:.1} MiB {} s later, after the daemon gave freed memory back [{}]",
            d.rss_mib()?,
            meshsync::daemon::GIVE_BACK_EVERY.as_secs() + 2,
            load()
        );
    }
    println!("\n## node a: unchanged rescan, with b");
    rescan(&node_a, a.poll_ms).await?;

    println!("\n## node b restarts: the exchange starts from what each side holds");
    let before = measure::status(&node_a).await?.counters;
    let t0 = Instant::now();
    node_b.restart(&a.bin).await?;
    let synced = wait_in_sync(&[&node_a, &node_b], SHARE, t0, a.poll_ms).await?;
    let (after, b_now) = (measure::status(&node_a).await?.counters, measure::status(&node_b).await?.counters);
    println!(
        "in sync {} after b restarted; a sent {} entries in {} batches ({} bytes), b sent {} entries in {} batches ({} bytes) [{}]",
        fmt_secs(synced),
        after.entries_sent - before.entries_sent,
        after.index_batches_sent - before.index_batches_sent,
        after.index_bytes_sent - before.index_bytes_sent,
        b_now.entries_sent,
        b_now.index_batches_sent,
        b_now.index_bytes_sent,
        load()
    );
    drop((node_a, node_b));
    finish(a, &tree_root, &work)
}

fn hwm(d: &Daemon) -> f64 {
    daemon::proc_kib(d.child.id(), "VmHWM:").map(|k| k / 1024.0).unwrap_or(f64::NAN)
}

fn print_scan(name: &str, s: &Scanned, walk: std::time::Duration) {
    println!("{name}: slowest `status` answer while scanning: {}", fmt_secs(measure::slowest_status()));
    println!(
        "{name}: indexed {} files in {} (wall, run to status done; the scan's own log: {}; {:.1} CPU-s); {:.2}x the 1-thread walk+hash [{}]",
        s.files,
        fmt_secs(s.wall),
        s.logged.map_or("-".into(), fmt_secs),
        s.cpu,
        s.wall.as_secs_f64() / walk.as_secs_f64(),
        load()
    );
}

async fn rescan(d: &Daemon, poll_ms: u64) -> anyhow::Result<()> {
    let t = Instant::now();
    meshsync::ops::control::rescan(&d.home(), Some(SHARE.into())).await?;
    measure::slowest_status();
    let done = measure::wait_rescanned(d, SHARE, poll_ms).await?;
    println!(
        "rescan: scan done {} after `rescan` (slowest `status` answer {}) [{}]",
        fmt_secs(done),
        fmt_secs(measure::slowest_status()),
        load()
    );
    let (quiet, cpu) = wait_idle(d).await?;
    println!(
        "rescan: daemon idle {} after `rescan` (the plan after the scan included; {cpu:.1} CPU-s); RSS {:.1} MiB [{}]",
        fmt_secs(quiet - t),
        d.rss_mib()?,
        load()
    );
    Ok(())
}

fn finish(a: &Args, tree_root: &Path, work: &Path) -> anyhow::Result<()> {
    if !a.keep_run {
        std::fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    if a.remove_tree {
        std::fs::remove_dir_all(tree_root)?;
        let _ = std::fs::remove_file(tree::stamp_path(tree_root));
    }
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    daemon::block_on_main("bigtree", run(&a))
}
