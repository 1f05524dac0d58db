//! The lab's results and their three forms: a markdown table, JSON, an SVG plot.

use super::{netns, Method, Options};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Everything a run measured, with the parameters needed to reproduce it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// What was asked for and how the network was built.
    pub parameters: Parameters,
    /// The bound each method is compared with.
    pub theoretical_min_formula: String,
    /// Whether the requested delay was in effect.
    pub delay: Delay,
    /// Methods or settings that were not run, and why.
    pub skipped: Vec<Skip>,
    /// Things that happened and matter for reading the figures (e.g. no `rescan`).
    pub notes: Vec<String>,
    /// Methods that failed for one N (the run went on with the others).
    pub failures: Vec<Failure>,
    /// One entry per receiver count.
    pub runs: Vec<RunN>,
    /// The largest peak RSS of any meshsync daemon in the whole run.
    pub peak_rss_max_bytes: Option<u64>,
}

/// The run's inputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parameters {
    /// Receiver counts.
    pub nodes: Vec<usize>,
    /// Per-direction rate of every host link.
    pub rate_mbit: f64,
    /// Requested one-way delay.
    pub delay_ms: u32,
    /// Loss on every host's input.
    pub loss_pct: u32,
    /// File size in MiB.
    pub size_mib: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Methods asked for, in run order.
    pub methods: Vec<Method>,
    /// The meshsync binary measured.
    pub bin: String,
    /// `meshsync --version` of that binary.
    pub bin_version: String,
    /// tbf burst, bytes.
    pub tbf_burst_bytes: u64,
    /// tbf latency (queue limit), ms.
    pub tbf_latency_ms: u32,
    /// net.core.rmem_max/wmem_max during the run (at least this).
    pub socket_buffer_max_bytes: u64,
    /// How often arrival was checked, ms.
    pub poll_ms: u64,
    /// Kernel release.
    pub kernel: String,
    /// CPUs available to the lab (every host shares them).
    pub cpus: usize,
}

/// The delay setting's fate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delay {
    /// Asked for, ms.
    pub requested_ms: u32,
    /// Whether netem applied it.
    pub applied: bool,
    /// How it was applied, or why not.
    pub note: Option<String>,
}

/// Something that was not measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skip {
    /// The method or setting.
    pub what: String,
    /// Why, and how to get it.
    pub reason: String,
}

/// A method that did not deliver a verified copy everywhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Receivers.
    pub n: usize,
    /// Which method.
    pub method: Method,
    /// The error, with log tails where there are any.
    pub error: String,
}

/// All methods for one receiver count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunN {
    /// Receivers (hosts besides host 0).
    pub n: usize,
    /// max(F/u_s, F/d_min, N·F/(u_s + Σu_i)), seconds.
    pub theoretical_min_s: f64,
    /// In run order.
    pub methods: Vec<MethodResult>,
}

/// One method's figures for one N.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodResult {
    /// Which method.
    pub method: Method,
    /// Until the last receiver had the file, seconds.
    pub time_s: f64,
    /// `time_s` / theoretical minimum.
    pub ratio: f64,
    /// Arrival time on host 1..=N, seconds.
    pub arrivals_s: Vec<f64>,
    /// Every copy's blake3 matched the source (a mismatch fails the run instead).
    pub verified: bool,
    /// Share of all CPUs busy during the transfer.
    pub cpu_busy_pct: Option<f64>,
    /// CPU-seconds the whole machine was busy during the transfer, per GiB
    /// delivered (N copies of the file): every host, the kernel's network and disk.
    #[serde(default)]
    pub cpu_s_per_gib: Option<f64>,
    /// meshsync: CPU-seconds the daemons themselves used, per GiB delivered.
    #[serde(default)]
    pub daemon_cpu_s_per_gib: Option<f64>,
    /// meshsync: VmHWM of the daemon on host 0..=N.
    pub peak_rss_bytes: Vec<Option<u64>>,
    /// meshsync: the largest of those.
    pub peak_rss_max_bytes: Option<u64>,
    /// meshsync: time from starting the daemons to a full mesh, seconds.
    pub mesh_connect_s: Option<f64>,
    /// meshsync: UDP datagrams dropped for full receive buffers, all hosts.
    pub udp_rcvbuf_errors: Option<u64>,
    /// meshsync: chunk bytes uploaded by host 0..=N.
    pub chunk_bytes_sent: Vec<Option<u64>>,
    /// Requests each daemon answered `Busy` (its `chunks_busy` counter).
    pub busy_answers: Vec<Option<u64>>,
    /// Requests each daemon refused for serving its maximum of peers (`requests_full`).
    pub full_answers: Vec<Option<u64>>,
    /// meshsync: what host 0 uploaded, in copies of the file (1.0 is ideal).
    pub source_sent_copies: Option<f64>,
    /// Packets dropped by each host's shaped links during the transfer, as
    /// (upload, download) for host 0..=N: queue overflow, not `--loss-pct`.
    pub queue_drops: Vec<(u64, u64)>,
    /// meshsync: QUIC's figures over every connection (from the daemons' logs).
    #[serde(default)]
    pub quic: Option<super::mesh::QuicFigures>,
    /// rsync: transfers that failed and were started again (the time includes them).
    #[serde(default)]
    pub restarts: Vec<Restart>,
}

/// One failed rsync that the lab started again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restart {
    /// Receiver.
    pub host: usize,
    /// When it failed, seconds after the start.
    pub after_s: f64,
    /// How rsync exited.
    pub status: String,
    /// rsync's log tail and the TCP counters of both hosts.
    pub error: String,
}

impl MethodResult {
    /// A verified result from the receivers' arrival times.
    pub fn new(method: Method, arrivals_s: Vec<f64>, tmin: f64, cpu_busy_pct: Option<f64>) -> Self {
        let time_s = arrivals_s.iter().copied().fold(0.0, f64::max);
        MethodResult {
            method,
            time_s,
            ratio: time_s / tmin,
            arrivals_s,
            verified: true,
            cpu_busy_pct,
            cpu_s_per_gib: None,
            daemon_cpu_s_per_gib: None,
            peak_rss_bytes: Vec::new(),
            peak_rss_max_bytes: None,
            mesh_connect_s: None,
            udp_rcvbuf_errors: None,
            chunk_bytes_sent: Vec::new(),
            busy_answers: Vec::new(),
            full_answers: Vec::new(),
            source_sent_copies: None,
            queue_drops: Vec::new(),
            restarts: Vec::new(),
            quic: None,
        }
    }
}

impl Report {
    /// An empty report for these options.
    pub fn new(o: &Options, bin: &Path) -> Self {
        let shaping = netns::Shaping { rate_mbit: o.rate_mbit, loss_pct: o.loss_pct, delay_ms: o.delay_ms };
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Report {
            parameters: Parameters {
                nodes: o.nodes.clone(),
                rate_mbit: o.rate_mbit,
                delay_ms: o.delay_ms,
                loss_pct: o.loss_pct,
                size_mib: o.size_mib,
                size_bytes: o.size_mib << 20,
                methods: o.methods.clone(),
                bin: bin.display().to_string(),
                bin_version: version,
                tbf_burst_bytes: shaping.burst_bytes(),
                tbf_latency_ms: netns::TBF_LATENCY_MS,
                socket_buffer_max_bytes: netns::SOCKET_BUFFER_MAX,
                poll_ms: super::POLL.as_millis() as u64,
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
                cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            },
            theoretical_min_formula: "max(F/u_s, F/d_min, N*F/(u_s + sum u_i)); every link has the same rate per \
                                      direction"
                .into(),
            delay: Delay { requested_ms: o.delay_ms, applied: false, note: None },
            skipped: Vec::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            runs: Vec::new(),
            peak_rss_max_bytes: None,
        }
    }

    /// Records something that was not measured.
    pub fn skip(&mut self, what: &str, reason: &str) {
        self.skipped.push(Skip { what: what.into(), reason: reason.into() });
    }

    /// Records a remark for readers of the report, once.
    pub fn note(&mut self, text: &str) {
        if !self.notes.iter().any(|n| n == text) {
            self.notes.push(text.into());
        }
    }

    /// Recomputes the run-wide figures.
    pub fn finish(&mut self) {
        self.peak_rss_max_bytes = self.runs.iter().flat_map(|r| &r.methods).filter_map(|m| m.peak_rss_max_bytes).max();
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let p = &self.parameters;
        let mut s = String::new();
        let delay = match (p.delay_ms, self.delay.applied) {
            (0, _) => "no delay".to_string(),
            (d, true) => format!("{d} ms one-way delay"),
            (d, false) => format!("delay {d} ms requested but SKIPPED (no netem)"),
        };
        let _ = writeln!(
            s,
            "## Bandwidth lab: {} MiB from host 0 to N hosts\n\n\
             Every host link: {} Mbit/s per direction (tbf, burst {} KiB, latency {} ms), {} % loss, {}. \
             {} CPU(s) shared by all hosts; kernel {}; {}.\n",
            p.size_mib,
            p.rate_mbit,
            p.tbf_burst_bytes >> 10,
            p.tbf_latency_ms,
            p.loss_pct,
            delay,
            p.cpus,
            p.kernel,
            if p.bin_version.is_empty() { "meshsync" } else { &p.bin_version },
        );
        let _ = writeln!(
            s,
            "| N | method | time (s) | x min | min (s) | first / median host (s) | CPU busy | CPU-s/GiB machine (daemons) | daemon peak RSS |"
        );
        let _ = writeln!(s, "|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        for r in &self.runs {
            for m in &r.methods {
                let mut a = m.arrivals_s.clone();
                a.sort_by(f64::total_cmp);
                let first = a.first().copied().unwrap_or(0.0);
                let median = a.get(a.len() / 2).copied().unwrap_or(0.0);
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} | {} | {} |",
                    r.n,
                    m.method.as_str(),
                    m.time_s,
                    m.ratio,
                    r.theoretical_min_s,
                    first,
                    median,
                    m.cpu_busy_pct.map(|c| format!("{c:.0} %")).unwrap_or_else(|| "-".into()),
                    match (m.cpu_s_per_gib, m.daemon_cpu_s_per_gib) {
                        (Some(a), Some(d)) => format!("{a:.1} ({d:.1})"),
                        (Some(a), None) => format!("{a:.1}"),
                        _ => "-".into(),
                    },
                    m.peak_rss_max_bytes
                        .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
        let _ = writeln!(
            s,
            "\ntime: from the file appearing on host 0 (meshsync: rename into the share; rsync: start) until the \
             last host has it; every copy blake3-verified. min = {}.",
            self.theoretical_min_formula
        );
        if let Some(b) = self.peak_rss_max_bytes {
            let _ = writeln!(s, "\nPeak RSS of any meshsync daemon: {:.0} MiB.", b as f64 / 1048576.0);
        }
        let drops: u64 = self.runs.iter().flat_map(|r| &r.methods).filter_map(|m| m.udp_rcvbuf_errors).sum();
        if drops > 0 {
            let _ = writeln!(s, "\nUDP receive-buffer drops during meshsync transfers: {drops}.");
        }
        let busiest = self.runs.iter().flat_map(|r| &r.methods).filter_map(|m| m.cpu_busy_pct).fold(0.0, f64::max);
        if busiest >= 90.0 {
            let _ = writeln!(
                s,
                "\nCPU was up to {busiest:.0} % busy during transfers: every host shares this machine's {} CPU(s), so \
                 those figures may be CPU-bound rather than network-bound.",
                p.cpus
            );
        }
        let quic: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| r.methods.iter().filter_map(move |m| m.quic.as_ref().map(|q| (r.n, q))))
            .map(|(n, q)| {
                let pct = 100.0 * q.lost_packets as f64 / q.sent_packets.max(1) as f64;
                format!(
                    "N={n} {pct:.2} % of {} packets, {} ACK frames, {:.1} datagrams per send",
                    q.sent_packets, q.ack_frames, q.datagrams_per_send
                )
            })
            .collect();
        if !quic.is_empty() {
            let _ = writeln!(
                s,
                "\nmeshsync, QUIC's count over every connection (packets declared lost; GSO batch): {}.",
                quic.join("; ")
            );
        }
        for r in &self.runs {
            for m in r.methods.iter().filter(|m| !m.restarts.is_empty()) {
                let each: Vec<String> = m
                    .restarts
                    .iter()
                    .map(|x| format!("host {} after {:.1} s ({})", x.host, x.after_s, x.status))
                    .collect();
                let _ = writeln!(
                    s,
                    "\nN={} {}: started again after failing, as lsyncd would (its time includes this): {}.",
                    r.n,
                    m.method.as_str(),
                    each.join("; ")
                );
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "\nFAILED:");
            for f in &self.failures {
                let first = f.error.lines().next().unwrap_or("");
                let _ = writeln!(s, "- N={} {}: {first} (full error in lab.json)", f.n, f.method.as_str());
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "\nSkipped:");
            for k in &self.skipped {
                let _ = writeln!(s, "- {}: {}", k.what, k.reason);
            }
        }
        s
    }
}

/// Writes lab.md, lab.json and lab.svg into `out`.
pub fn write(rep: &Report, out: &Path) -> anyhow::Result<()> {
    let md = out.join("lab.md");
    std::fs::write(&md, rep.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let json = out.join("lab.json");
    let text = serde_json::to_string_pretty(rep).context("encoding the report")?;
    std::fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    let svg = out.join("lab.svg");
    plot(rep, &svg).with_context(|| format!("drawing {}", svg.display()))
}

/// Completion time against N, one line per method plus the theoretical minimum.
fn plot(rep: &Report, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let ns: Vec<f64> = rep.runs.iter().map(|r| r.n as f64).collect();
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in Method::ALL {
        let pts: Vec<(f64, f64)> = rep
            .runs
            .iter()
            .filter_map(|r| r.methods.iter().find(|x| x.method == m).map(|x| (r.n as f64, x.time_s)))
            .collect();
        if !pts.is_empty() {
            series.push((m.as_str().to_string(), pts));
        }
    }
    series.push(("theoretical minimum".into(), rep.runs.iter().map(|r| (r.n as f64, r.theoretical_min_s)).collect()));
    let x_max = ns.iter().copied().fold(1.0, f64::max) + 1.0;
    let y_max = series.iter().flat_map(|(_, p)| p).map(|p| p.1).fold(1.0, f64::max) * 1.1;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = &rep.parameters;
    let caption = format!(
        "{} MiB to N hosts, {} Mbit/s links, {} % loss{}",
        p.size_mib,
        p.rate_mbit,
        p.loss_pct,
        if rep.delay.applied { format!(", {} ms delay", p.delay_ms) } else { String::new() }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("N (receiving hosts)")
        // N is a count: whole-number ticks only.
        .x_labels((x_max as usize + 1).min(20))
        .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
        .y_desc("time until every host has it (s)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(255, 127, 14), RGBColor(90, 90, 90)];
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = colors[k % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
