//! The `meshsync bench` command line: progress bar while the daemon measures, then
//! a summary table.

use crate::daemon::bench::{BenchEvent, BenchReport};
use crate::home::Home;
use indicatif::{ProgressBar, ProgressStyle};

/// Runs a bench on the local daemon, showing progress; the caller prints the report.
pub async fn run(home: &Home, size_mib: u64, probe_mib: u64) -> anyhow::Result<BenchReport> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("probing peers (one at a time)");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut bar: Option<ProgressBar> = None;
    let report = super::control::bench(home, size_mib << 20, probe_mib << 20, |ev| match ev {
        BenchEvent::Probe { peer, rtt_ms, mbit_s } => {
            spinner.println(format!("  {peer:<20} rtt {rtt_ms:>7.2} ms   {mbit_s:>9.1} Mbit/s"));
        }
        BenchEvent::Blob { bytes, chunks, peers } => {
            spinner.finish_and_clear();
            println!("swarming a {} MiB blob ({chunks} chunks) to {peers} peer(s)", bytes >> 20);
            let b = ProgressBar::new(bytes * *peers as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "  [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar = Some(b);
        }
        BenchEvent::Progress { held_bytes, .. } => {
            if let Some(b) = &bar {
                b.set_position(*held_bytes);
            }
        }
        BenchEvent::PeerDone { peer, secs, ok } => {
            let what = if *ok { "verified copy" } else { "FAILED" };
            let line = format!("  {peer:<20} {what} after {secs:.2} s");
            match &bar {
                Some(b) => b.println(line),
                None => println!("{line}"),
            }
        }
        BenchEvent::Result(_) | BenchEvent::Error { .. } => {
            spinner.finish_and_clear();
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
        }
    })
    .await?;
    Ok(report)
}

/// The summary as a markdown table plus the totals.
pub fn table(r: &BenchReport) -> String {
    let mut s = String::from("\n| peer | rtt ms | Mbit/s (probe) | blob verified after s |\n|---|---:|---:|---:|\n");
    for p in &r.peers {
        let secs = p.secs.map_or("did not finish".to_string(), |x| format!("{x:.2}"));
        s += &format!("| {} | {:.2} | {:.1} | {} |\n", p.name, p.rtt_ms, p.mbit_s, secs);
    }
    let mib = r.bytes as f64 / (1 << 20) as f64;
    match r.swarm_secs {
        Some(t) => {
            s += &format!(
                "\nswarm: {mib:.0} MiB on all {} peer(s) in {t:.2} s; one source copying to each in turn at the probed \
                 rates: {:.2} s ({:.1}x)\n",
                r.peers.len(),
                r.serial_estimate_secs,
                r.serial_estimate_secs / t.max(1e-6)
            )
        }
        None => s += "\nswarm: not every peer got a verified copy (see the daemon logs)\n",
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::bench::PeerFigure;

    #[test]
    fn table_shows_every_peer_and_the_speedup() {
        let r = BenchReport {
            bytes: 256 << 20,
            peers: vec![
                PeerFigure { name: "b".into(), rtt_ms: 0.5, mbit_s: 100.0, secs: Some(21.0) },
                PeerFigure { name: "c".into(), rtt_ms: 0.7, mbit_s: 100.0, secs: None },
            ],
            swarm_secs: None,
            serial_estimate_secs: 42.9,
        };
        let t = table(&r);
        assert!(t.contains("| b | 0.50 | 100.0 | 21.00 |"), "{t}");
        assert!(t.contains("| c | 0.70 | 100.0 | did not finish |"), "{t}");
        assert!(t.contains("not every peer"), "{t}");
        let done = BenchReport { swarm_secs: Some(21.45), ..r };
        assert!(table(&done).contains("in 21.45 s") && table(&done).contains("(2.0x)"), "{}", table(&done));
    }
}
