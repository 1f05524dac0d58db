//! Swarm simulator figures: completion time of 1 source + N receivers against the
//! theoretical minimum, as a markdown table.
//!
//! `cargo bench --bench sim -- [--nodes 2,4,8] [--rate-mbit 100] [--size-mib 256]
//! [--rtt-ms 0] [--seed 1] [--down-mbit D] [--view K] [--piece-kib P] [--uplink per-peer|shared|fifo] [--free-maps] [--timeline]`
//! (pieces default to the daemon's: 1/2048 of the file, 64 KiB to 1 MiB)

// Its tests run from tests/sim.rs; built here as a bench they are dead code.
#[cfg_attr(test, allow(dead_code))]
mod model;

use model::{run, Config, Uplink};
use std::time::{Duration, Instant};

struct Args {
    nodes: Vec<usize>,
    rate_mbit: f64,
    down_mbit: Option<f64>,
    size_mib: u64,
    rtt_ms: f64,
    seed: u64,
    view: Option<usize>,
    uplink: Uplink,
    free_maps: bool,
    piece_kib: Option<u32>,
    timeline: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![2, 4, 8, 16, 64, 256, 1000],
        rate_mbit: 100.0,
        down_mbit: None,
        size_mib: 256,
        rtt_ms: 0.0,
        seed: 1,
        view: None,
        uplink: Uplink::PerPeer,
        free_maps: false,
        piece_kib: None,
        timeline: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--nodes" => {
                a.nodes =
                    value()?.split(',').map(|s| s.trim().parse().map_err(|e| bad(&e))).collect::<Result<_, _>>()?
            }
            "--rate-mbit" => a.rate_mbit = value()?.parse().map_err(|e| bad(&e))?,
            "--down-mbit" => a.down_mbit = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--size-mib" => a.size_mib = value()?.parse().map_err(|e| bad(&e))?,
            "--rtt-ms" => a.rtt_ms = value()?.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| bad(&e))?,
            "--view" => a.view = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--uplink" => {
                a.uplink = match value()?.as_str() {
                    "per-peer" => Uplink::PerPeer,
                    "shared" => Uplink::Shared,
                    "fifo" => Uplink::Fifo,
                    other => return Err(format!("--uplink: {other:?} is not per-peer, shared or fifo")),
                }
            }
            "--free-maps" => a.free_maps = true,
            "--piece-kib" => a.piece_kib = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--timeline" => a.timeline = true,
            // Cargo passes `--bench` to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rate = a.rate_mbit * 1e6 / 8.0;
    println!(
        "{} MiB file, 64 KiB chunks in {} KiB pieces, {} Mbit/s up and {} Mbit/s down per host, RTT {} ms, seed {}, uplink {}, progress maps {}{}",
        a.size_mib,
        a.piece_kib.unwrap_or((meshsync::sync::pieces::piece_target(a.size_mib << 20) >> 10) as u32),
        a.rate_mbit,
        a.down_mbit.unwrap_or(a.rate_mbit),
        a.rtt_ms,
        a.seed,
        match a.uplink {
            Uplink::PerPeer => "shared by requester, each one's replies in order",
            Uplink::Shared => "shared by reply (processor sharing)",
            Uplink::Fifo => "FIFO",
        },
        if a.free_maps { "free" } else { "counted on the links" },
        match a.view {
            Some(k) => format!(", each receiver sees the progress of only {k} random others (not the full mesh)"),
            None => ", full mesh".to_string(),
        },
    );
    println!();
    println!("| N | last done (s) | minimum (s) | ratio | first done (s) | source sent / F | duplicates / F | maps / F | requests | busy (full) | timed out | events | wall (s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &a.nodes {
        let mut cfg = Config::uniform(n, rate, a.size_mib << 20, Duration::from_secs_f64(a.rtt_ms / 1e3), a.seed);
        cfg.view = a.view;
        if let Some(k) = a.piece_kib {
            cfg.piece_bytes = k << 10;
        }
        for l in &mut cfg.links {
            l.down = a.down_mbit.unwrap_or(a.rate_mbit) * 1e6 / 8.0;
        }
        cfg.uplink = a.uplink;
        cfg.count_maps = !a.free_maps;
        let t0 = Instant::now();
        let r = run(&cfg);
        let wall = t0.elapsed().as_secs_f64();
        let f = r.file_bytes as f64;
        let complete = r.held.iter().all(|h| *h == r.chunks);
        println!(
            "| {n} | {:.2} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} ({}) | {} | {} | {:.1} |{}",
            r.last_done,
            r.minimum,
            r.ratio,
            r.first_done,
            r.source_uploaded as f64 / f,
            r.duplicate_bytes as f64 / f,
            r.map_bytes as f64 / f,
            r.requests,
            r.busy,
            r.full,
            r.timeouts,
            r.events,
            wall,
            if complete { "" } else { " INCOMPLETE" },
        );
        if a.timeline {
            let mut d = r.done_at.clone();
            d.sort_by(f64::total_cmp);
            let q = |p: f64| d[((d.len() - 1) as f64 * p) as usize];
            println!(
                "  source: resent {:.3} F, cancelled {:.3} F",
                r.source_resent as f64 / f,
                r.source_cancelled as f64 / f
            );
            println!("  mean wait for the downlink: {:.1} ms", r.downlink_wait * 1e3);
            println!(
                "  done: min {:.2} p10 {:.2} p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
                q(0.0),
                q(0.1),
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            );
            // Rates over each sample, as a share of one host's uplink.
            let per = model::SAMPLE_EVERY.as_secs_f64() * rate;
            for (t, held, source, rx) in &r.timeline {
                println!(
                    "  t={t:.1}s held={held:.3} source_up={:.2} receivers_up={:.2}/{n}",
                    *source as f64 / per,
                    *rx as f64 / per
                );
            }
        }
    }
}
