//! The bandwidth lab: N+1 hosts as network namespaces on one bridge, each link
//! shaped with tbf, a file placed on host 0, and the time until every other host
//! holds a verified copy — for meshsync (a fresh mesh of real daemons per N) and
//! for the rsync-over-ssh setups it replaces (serial = cron + rsync, parallel =
//! lsyncd). Used by `benches/lab/main.rs` and by `tests/lab_smoke.rs`.

#[path = "mesh.rs"]
mod mesh;
#[path = "netns.rs"]
mod netns;
#[path = "report.rs"]
pub mod report;
#[path = "ssh.rs"]
mod ssh;
#[path = "util.rs"]
mod util;

use anyhow::{bail, Context};
use netns::{DelayOutcome, Host, Shaping, Topology};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The file every method transfers (same name on every host).
pub const FILE: &str = "payload.bin";
/// How often the harness looks for the file on every host.
pub const POLL: Duration = Duration::from_millis(20);
/// Attempts per receiver for rsync: a failed transfer is started again, as lsyncd
/// does, before the method counts as failed.
pub const RSYNC_ATTEMPTS: usize = 3;

/// A way of getting the file from host 0 to every other host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// meshsync daemons on every host.
    Meshsync,
    /// `rsync -e ssh` to one host after another (cron + rsync).
    RsyncSerial,
    /// All those rsyncs at once (lsyncd).
    RsyncParallel,
}

impl Method {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Meshsync => "meshsync",
            Method::RsyncSerial => "rsync-serial",
            Method::RsyncParallel => "rsync-parallel",
        }
    }
    /// Every method, in report order.
    pub const ALL: [Method; 3] = [Method::Meshsync, Method::RsyncSerial, Method::RsyncParallel];
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown method {s:?}: expected meshsync, rsync-serial or rsync-parallel"))
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Numbers of receivers (hosts besides host 0), one lab per entry.
    pub nodes: Vec<usize>,
    /// Rate of every host link, per direction, Mbit/s.
    pub rate_mbit: f64,
    /// One-way delay between hosts, ms (needs netem).
    pub delay_ms: u32,
    /// Packet loss on every host's input, percent.
    pub loss_pct: u32,
    /// File size, MiB.
    pub size_mib: u64,
    /// Methods, in the order they run.
    pub methods: Vec<Method>,
    /// Where lab.md, lab.json, lab.svg and the logs go.
    pub out: PathBuf,
    /// The meshsync binary.
    pub bin: PathBuf,
    /// Per-method limit; `None` = derived from size, rate and N.
    pub timeout: Option<Duration>,
}

/// How a run ended.
pub enum Outcome {
    /// The lab cannot run here; the reason says why and how to fix it.
    Skipped(String),
    /// Figures measured and written.
    Done(Box<report::Report>),
}

/// Runs the lab. A method that fails for one N (a copy missing or corrupt, a daemon
/// dying, a timeout) is recorded in `Report::failures` and the run goes on; errors
/// are what stops the whole run (the network cannot be built, an interrupt). An
/// environment that cannot host the lab is `Outcome::Skipped`.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    util::install_interrupt_handler();
    validate(opts)?;
    if let Some(why) = preflight(opts) {
        return Ok(Outcome::Skipped(why));
    }
    let bin = opts
        .bin
        .canonicalize()
        .with_context(|| format!("meshsync binary {} not found (cargo build --release)", opts.bin.display()))?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let out = opts.out.canonicalize().with_context(|| format!("resolving {}", opts.out.display()))?;
    let logs = out.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("clearing old logs in {}", logs.display()))?;
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // Big files live in a temp dir next to the reports, removed on drop (also on error).
    let work = tempfile::Builder::new().prefix("work-").tempdir_in(&out).context("creating the work dir")?;

    let mut rep = report::Report::new(opts, &bin);
    let mut methods = opts.methods.clone();
    let rsync_wanted: Vec<Method> = methods.iter().copied().filter(|m| *m != Method::Meshsync).collect();
    let mut tools = None;
    if !rsync_wanted.is_empty() {
        match ssh::Tools::find() {
            Ok(t) => tools = Some(t),
            Err(why) => {
                for m in &rsync_wanted {
                    println!("skipping {}: {why}", m.as_str());
                    rep.skip(m.as_str(), &why);
                }
                methods.retain(|m| *m == Method::Meshsync);
            }
        }
    }

    let size = opts.size_mib << 20;
    let src = work.path().join("source").join(FILE);
    print!("writing a {} MiB random source file ... ", opts.size_mib);
    std::io::stdout().flush().ok();
    let src_hash = util::write_random(&src, size, &mut rand::thread_rng())?;
    println!("blake3 {}", &src_hash.to_hex()[..16]);

    let shaping = Shaping { rate_mbit: opts.rate_mbit, loss_pct: opts.loss_pct, delay_ms: opts.delay_ms };
    let mut ctx = Ctx { opts, bin, logs, work: work.path().to_path_buf(), src, src_hash, size, rescan_warning: None };
    for &n in &opts.nodes {
        util::check_interrupt()?;
        let scratch = ctx.work.join(format!("n{n}"));
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let topo = Topology::create(n + 1, &shaping, &scratch).context("building the lab network")?;
        println!(
            "N={n}: {} namespaces on a bridge, every link tbf {} Mbit/s per direction (burst {} KiB, latency {} ms){}",
            n + 1,
            opts.rate_mbit,
            shaping.burst_bytes() >> 10,
            netns::TBF_LATENCY_MS,
            if opts.loss_pct > 0 { format!(", {} % loss on every host's input", opts.loss_pct) } else { String::new() },
        );
        match &topo.delay {
            DelayOutcome::Skipped(why) if rep.delay.note.is_none() => {
                println!("delay {} ms skipped: {why}", opts.delay_ms);
                rep.delay.note = Some(why.clone());
                rep.skip(&format!("delay {} ms", opts.delay_ms), why);
            }
            DelayOutcome::Applied(ms) => {
                rep.delay.applied = true;
                if rep.delay.note.is_none() {
                    println!("delay: netem adds {ms} ms on every host's upload");
                    rep.delay.note = Some(format!("netem {ms} ms on every host's upload"));
                }
            }
            _ => {}
        }
        let tmin = theoretical_min(size, n, opts.rate_mbit);
        let mut run_n = report::RunN { n, theoretical_min_s: tmin, methods: Vec::new() };
        let mut sshd: Option<ssh::Sshd> = None;
        for &m in &methods {
            util::check_interrupt()?;
            let r = match m {
                Method::Meshsync => ctx.meshsync(&topo, n, tmin),
                Method::RsyncSerial | Method::RsyncParallel => {
                    if sshd.is_none() {
                        let t = tools.clone().context("rsync tools were found")?;
                        let dir = ctx.work.join("ssh");
                        sshd = Some(ssh::Sshd::start(t, &topo.hosts, &dir, &ctx.logs, &format!("n{n}"))?);
                    }
                    let s = sshd.as_ref().context("sshd is running")?;
                    ctx.rsync(&topo, s, n, tmin, m == Method::RsyncParallel)
                }
            }
            .with_context(|| format!("N={n}, {}", m.as_str()));
            let r = match r {
                Ok(r) => r,
                // One method failing (say, an ssh connection dropping) does not void
                // the others' figures: record it, go on, and fail the run at the end.
                Err(e) if util::check_interrupt().is_ok() => {
                    println!("N={n} {} FAILED: {e:#}", m.as_str());
                    rep.failures.push(report::Failure { n, method: m, error: format!("{e:#}") });
                    continue;
                }
                Err(e) => return Err(e),
            };
            println!(
                "N={n} {:<15} {:>8.2} s  = {:.2} x minimum ({:.2} s){}{}{}{}",
                m.as_str(),
                r.time_s,
                r.ratio,
                tmin,
                r.cpu_busy_pct.map(|c| format!(", CPU {c:.0} % busy")).unwrap_or_default(),
                r.cpu_s_per_gib.map(|c| format!(", {c:.1} CPU-s per GiB delivered")).unwrap_or_default(),
                r.daemon_cpu_s_per_gib.map(|c| format!(" ({c:.1} in the daemons)")).unwrap_or_default(),
                r.peak_rss_max_bytes.map(|b| format!(", daemon peak RSS {} MiB", b >> 20)).unwrap_or_default(),
            );
            if let Some(c) = r.source_sent_copies {
                println!("N={n} {:<15} host 0 uploaded {c:.2} copies of the file", m.as_str());
            }
            for (what, per_host) in [("Busy", &r.busy_answers), ("Full", &r.full_answers)] {
                if !per_host.is_empty() {
                    let counts: Vec<String> =
                        per_host.iter().map(|c| c.map_or("?".into(), |c| c.to_string())).collect();
                    println!("N={n} {:<15} {what} answers per host: {}", m.as_str(), counts.join(" "));
                }
            }
            if let Some(q) = &r.quic {
                println!(
                    "N={n} {:<15} QUIC: {:.2} % of {} packets declared lost, {} ACK frames, {:.1} datagrams per send",
                    m.as_str(),
                    100.0 * q.lost_packets as f64 / q.sent_packets.max(1) as f64,
                    q.sent_packets,
                    q.ack_frames,
                    q.datagrams_per_send
                );
            }
            if !r.queue_drops.is_empty() {
                let pairs: Vec<String> = r.queue_drops.iter().map(|(up, down)| format!("{up}/{down}")).collect();
                println!("N={n} {:<15} link queue drops per host (up/down): {}", m.as_str(), pairs.join(" "));
            }
            run_n.methods.push(r);
        }
        // Processes first, then the namespaces they run in.
        drop(sshd);
        drop(topo);
        rep.runs.push(run_n);
        if let Some(w) = &ctx.rescan_warning {
            rep.note(w);
        }
        rep.finish();
        // Written after every N, so the figures so far survive a later failure.
        report::write(&rep, &out)?;
    }
    println!(
        "wrote {}, {} and {}",
        out.join("lab.md").display(),
        out.join("lab.json").display(),
        out.join("lab.svg").display()
    );
    Ok(Outcome::Done(Box::new(rep)))
}

fn validate(o: &Options) -> anyhow::Result<()> {
    if o.nodes.is_empty() || o.nodes.contains(&0) {
        bail!("--nodes needs at least one receiver count, each at least 1");
    }
    if o.nodes.iter().any(|&n| n > 250) {
        bail!("--nodes: at most 250 receivers (one namespace and daemon each)");
    }
    if !(o.rate_mbit > 0.0 && o.rate_mbit <= 100_000.0) {
        bail!("--rate-mbit must be above 0 and at most 100000");
    }
    if o.loss_pct > 99 {
        bail!("--loss-pct must be 0 to 99");
    }
    if o.size_mib == 0 {
        bail!("--size-mib must be at least 1");
    }
    if o.methods.is_empty() {
        bail!("--methods needs at least one method");
    }
    Ok(())
}

/// Why the lab cannot run on this machine, if it cannot.
fn preflight(o: &Options) -> Option<String> {
    let nft: &[(&str, &str)] = if o.loss_pct > 0 { &[("nft", "nftables")] } else { &[] };
    netns::unavailable(nft, "the bandwidth lab")
}

/// The lower bound for getting F bytes from one source to N receivers when
/// everyone may forward: the source must upload it once, the slowest receiver
/// download it once, and N copies must cross the sum of all uploads.
pub fn theoretical_min(size: u64, n: usize, rate_mbit: f64) -> f64 {
    let f = size as f64;
    let rate = rate_mbit * 1e6 / 8.0;
    let (u_s, d_min, sum_u) = (rate, rate, n as f64 * rate);
    (f / u_s).max(f / d_min).max(n as f64 * f / (u_s + sum_u))
}

/// What every method shares during a run.
struct Ctx<'a> {
    opts: &'a Options,
    bin: PathBuf,
    logs: PathBuf,
    work: PathBuf,
    src: PathBuf,
    src_hash: blake3::Hash,
    size: u64,
    /// Set (and printed) the first time `meshsync rescan` fails.
    rescan_warning: Option<String>,
}

impl Ctx<'_> {
    fn timeout(&self, n: usize) -> Duration {
        self.opts.timeout.unwrap_or_else(|| {
            // Ten times the serial-rsync ideal plus slack: generous, but bounded.
            let serial = n as f64 * theoretical_min(self.size, 1, self.opts.rate_mbit);
            let loss_factor = if self.opts.loss_pct > 0 { 4.0 } else { 1.0 };
            Duration::from_secs_f64(120.0 + 10.0 * serial * loss_factor)
        })
    }

    /// GiB that N receivers' copies of the file add up to.
    fn delivered_gib(&self, n: usize) -> f64 {
        (n as u64 * self.size) as f64 / (1u64 << 30) as f64
    }

    /// The machine's CPU since `cpu0`: the share of all cores busy, and the
    /// CPU-seconds per GiB delivered to N receivers.
    fn machine_cpu(&self, n: usize, cpu0: Option<(u64, u64)>) -> (Option<f64>, Option<f64>) {
        let cpu1 = util::cpu_jiffies();
        (util::busy_pct(cpu0, cpu1), util::busy_seconds(cpu0, cpu1).map(|s| s / self.delivered_gib(n)))
    }

    fn meshsync(&mut self, topo: &Topology, n: usize, tmin: f64) -> anyhow::Result<report::MethodResult> {
        let tag = format!("n{n}-meshsync");
        let dir = self.work.join(&tag);
        let mut mesh = mesh::Mesh::start(&self.bin, &topo.hosts, &dir, &self.logs, &tag)?;
        let connect = Duration::from_secs(30 + 2 * n as u64);
        let took = mesh
            .wait_connected(connect)
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        println!("N={n} meshsync: {} daemons fully connected (held for 1 s) after {:.1} s", n + 1, took.as_secs_f64());

        // Staged next to the share on the same file system, so the rename is atomic
        // and the daemon never sees a partial file.
        let staged = dir.join("h0").join(FILE);
        std::fs::copy(&self.src, &staged).with_context(|| format!("copying the source to {}", staged.display()))?;
        std::fs::File::open(&staged).and_then(|f| f.sync_all()).context("syncing the staged file")?;
        let targets: Vec<PathBuf> = mesh.nodes[1..].iter().map(|nd| nd.share.join(FILE)).collect();
        let udp_before = udp_rcvbuf_errors(&topo.hosts);
        let drops_before = topo.queue_drops();
        let cpu0 = util::cpu_jiffies();
        let daemons_cpu0 = mesh.cpu_seconds();
        let t0 = Instant::now();
        std::fs::rename(&staged, mesh.nodes[0].share.join(FILE)).context("renaming the file into host 0's share")?;
        let mut rescan = Some(
            Command::new(&self.bin)
                .arg("rescan")
                .env("MESHSYNC_HOME", &mesh.nodes[0].home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting `meshsync rescan`")?,
        );
        let timeout = self.timeout(n);
        let warning = &mut self.rescan_warning;
        let arrivals = poll_arrivals(&targets, self.size, t0, timeout, || {
            if let Some(c) = rescan.as_mut() {
                if let Some(status) = c.try_wait().context("waiting for `meshsync rescan`")? {
                    let c = rescan.take().context("rescan child")?;
                    if !status.success() && warning.is_none() {
                        let err = c.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string());
                        let w = format!(
                            "`meshsync rescan` failed ({}); relying on the daemon's 1 s periodic rescan",
                            err.unwrap_or_default().lines().next().unwrap_or("")
                        );
                        println!("warning: {w}");
                        *warning = Some(w);
                    }
                }
            }
            mesh.check_alive()
        })
        .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        let (cpu, cpu_per_gib) = self.machine_cpu(n, cpu0);
        let daemons_cpu = mesh.cpu_seconds().zip(daemons_cpu0).map(|(b, a)| b - a);
        // VmHWM is only readable while the process lives: read it just before stopping.
        let rss = mesh.peak_rss();
        let sent = mesh.counter("chunk_bytes_sent");
        let busy = mesh.counter("chunks_busy");
        let full = mesh.counter("requests_full");
        let udp_after = udp_rcvbuf_errors(&topo.hosts);
        let drops = drops_during(drops_before, topo.queue_drops());
        mesh.stop();
        let quic = mesh.quic_figures();
        if let Some(mut c) = rescan {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.verify(&targets, "meshsync")?;
        drop(mesh);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        let mut r = report::MethodResult::new(Method::Meshsync, arrivals, tmin, cpu);
        r.cpu_s_per_gib = cpu_per_gib;
        r.daemon_cpu_s_per_gib = daemons_cpu.map(|s| s / self.delivered_gib(n));
        r.peak_rss_max_bytes = rss.iter().flatten().copied().max();
        r.peak_rss_bytes = rss;
        r.source_sent_copies = sent.first().copied().flatten().map(|b| b as f64 / self.size as f64);
        r.chunk_bytes_sent = sent;
        r.busy_answers = busy;
        r.full_answers = full;
        r.mesh_connect_s = Some(took.as_secs_f64());
        r.udp_rcvbuf_errors = udp_before.zip(udp_after).map(|(a, b)| b.saturating_sub(a));
        r.queue_drops = drops;
        r.quic = quic;
        Ok(r)
    }

    fn rsync(
        &mut self,
        topo: &Topology,
        sshd: &ssh::Sshd,
        n: usize,
        tmin: f64,
        parallel: bool,
    ) -> anyhow::Result<report::MethodResult> {
        let method = if parallel { Method::RsyncParallel } else { Method::RsyncSerial };
        let tag = format!("n{n}-{}", method.as_str());
        let dir = self.work.join(&tag);
        let dests: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("h{i}"))).collect();
        for d in &dests {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let targets: Vec<PathBuf> = dests.iter().map(|d| d.join(FILE)).collect();
        let logs: Vec<PathBuf> = (1..=n).map(|i| self.logs.join(format!("{tag}-h{i}.log"))).collect();
        let hosts: &[Host] = &topo.hosts;
        // Receivers still to start, in order; the running rsyncs with their host index.
        let mut queue: Vec<usize> = (1..=n).rev().collect();
        let mut running: Vec<(usize, Child)> = Vec::new();
        let mut restarts: Vec<report::Restart> = Vec::new();
        let drops_before = topo.queue_drops();
        let cpu0 = util::cpu_jiffies();
        let t0 = Instant::now();
        let mut tick = || -> anyhow::Result<()> {
            let mut i = 0;
            while i < running.len() {
                if let Some(st) = running[i].1.try_wait().context("waiting for rsync")? {
                    let (h, _) = running.remove(i);
                    if st.success() {
                        continue;
                    }
                    let why = format!(
                        "rsync to host {h} failed ({st}):\n{}\nTCP counters, host 0: {}\nTCP counters, host {h}: {}",
                        util::tail(&logs[h - 1], 20),
                        tcp_counters(&hosts[0]),
                        tcp_counters(&hosts[h])
                    );
                    // lsyncd and cron jobs run a failed transfer again; the clock keeps
                    // running, so the table shows what a user of them would wait.
                    if restarts.iter().filter(|r| r.host == h).count() + 1 >= RSYNC_ATTEMPTS {
                        bail!("{why}\n(attempt {RSYNC_ATTEMPTS} of {RSYNC_ATTEMPTS})");
                    }
                    println!(
                        "N={n} {}: rsync to host {h} failed ({st}) after {:.1} s; starting it again",
                        method.as_str(),
                        t0.elapsed().as_secs_f64()
                    );
                    restarts.push(report::Restart {
                        host: h,
                        after_s: t0.elapsed().as_secs_f64(),
                        status: st.to_string(),
                        error: why,
                    });
                    queue.push(h);
                } else {
                    i += 1;
                }
            }
            while (parallel || running.is_empty()) && !queue.is_empty() {
                let h = queue.pop().context("queue")?;
                let c = sshd.rsync(&hosts[0], &self.src, &hosts[h], &dests[h - 1], &logs[h - 1])?;
                running.push((h, c));
            }
            Ok(())
        };
        tick()?;
        let arrivals = poll_arrivals(&targets, self.size, t0, self.timeout(n), &mut tick);
        let (cpu, cpu_per_gib) = self.machine_cpu(n, cpu0);
        // rsync renames the file into place just before it exits: let it finish
        // (or stop it, after a failure) before the copies are checked and removed.
        for (_, c) in running.iter_mut() {
            if arrivals.is_err() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let arrivals = arrivals?;
        let drops = drops_during(drops_before, topo.queue_drops());
        self.verify(&targets, method.as_str())?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        let mut r = report::MethodResult::new(method, arrivals, tmin, cpu);
        r.cpu_s_per_gib = cpu_per_gib;
        r.queue_drops = drops;
        r.restarts = restarts;
        Ok(r)
    }

    /// Checks every copy's blake3 against the source; any mismatch fails the run.
    fn verify(&self, targets: &[PathBuf], method: &str) -> anyhow::Result<()> {
        // Two threads: the machines this runs on have few cores, and hashing is
        // otherwise the slowest part between methods.
        let results: Vec<anyhow::Result<blake3::Hash>> = std::thread::scope(|s| {
            let half = targets.len().div_ceil(2);
            let parts: Vec<_> = targets
                .chunks(half.max(1))
                .map(|c| s.spawn(move || c.iter().map(|p| util::hash_file(p)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(anyhow::anyhow!("hash thread panicked"))]))
                .collect()
        });
        for (i, r) in results.into_iter().enumerate() {
            let got = r?;
            if got != self.src_hash {
                bail!(
                    "{method}: the copy on host {} ({}) is corrupt: blake3 {} but the source is {}",
                    i + 1,
                    targets[i].display(),
                    got.to_hex(),
                    self.src_hash.to_hex()
                );
            }
        }
        Ok(())
    }
}

/// Looks for the file on every receiver every [`POLL`] until all have it at full
/// size (every method renames a complete file into place, so size means done),
/// calling `tick` in between to drive or watch the method. Returns each host's
/// arrival time in seconds since `t0`.
fn poll_arrivals(
    targets: &[PathBuf],
    size: u64,
    t0: Instant,
    timeout: Duration,
    mut tick: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut arrived: Vec<Option<f64>> = vec![None; targets.len()];
    loop {
        util::check_interrupt()?;
        for (a, p) in arrived.iter_mut().zip(targets) {
            if a.is_none() && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == size) {
                *a = Some(t0.elapsed().as_secs_f64());
            }
        }
        if arrived.iter().all(Option::is_some) {
            return Ok(arrived.into_iter().flatten().collect());
        }
        tick()?;
        if t0.elapsed() > timeout {
            let missing: Vec<String> =
                arrived.iter().enumerate().filter(|(_, a)| a.is_none()).map(|(i, _)| format!("h{}", i + 1)).collect();
            bail!(
                "timed out after {:.0} s: {} of {} receivers still lack the file ({})",
                timeout.as_secs_f64(),
                missing.len(),
                targets.len(),
                missing.join(", ")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Per host, the link drops between two readings (empty if either failed).
fn drops_during(before: Option<Vec<(u64, u64)>>, after: Option<Vec<(u64, u64)>>) -> Vec<(u64, u64)> {
    match (before, after) {
        (Some(b), Some(a)) => {
            b.iter().zip(&a).map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))).collect()
        }
        _ => Vec::new(),
    }
}

/// UDP datagrams dropped for a full receive buffer, summed over the hosts
/// (`/proc/net/snmp` shows the namespace of the reader, hence `ip netns exec`).
fn udp_rcvbuf_errors(hosts: &[Host]) -> Option<u64> {
    let mut sum = 0;
    for h in hosts {
        let snmp = util::run(util::in_ns(&h.ns, "cat").arg("/proc/net/snmp")).ok()?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next()?, udp.next()?);
        let col = names.split_whitespace().position(|c| c == "RcvbufErrors")?;
        sum += values.split_whitespace().nth(col)?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// The non-zero TCP abort, reset and timeout counters of a host's namespace:
/// enough to tell a reset from a timeout when an ssh connection dies.
fn tcp_counters(h: &Host) -> String {
    let mut out = Vec::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let Ok(text) = util::run(util::in_ns(&h.ns, "cat").arg(file)) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some(("Tcp" | "TcpExt", names)), Some((_, values))) =
                (names.split_once(": "), values.split_once(": "))
            else {
                continue;
            };
            for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
                let wanted = ["Abort", "Reset", "Timeout", "RetransSegs", "Fail"].iter().any(|w| k.contains(w));
                if wanted && v != "0" {
                    out.push(format!("{k}={v}"));
                }
            }
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(" ")
    }
}
