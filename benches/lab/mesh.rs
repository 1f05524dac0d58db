//! A mesh of real `meshsync` daemons, one per lab host, set up with the CLI exactly
//! as a user would: `init` on host 0, `invite` there and `join` on every other host.

use super::netns::Host;
use super::util::{self, run};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The share every lab node takes part in.
pub const SHARE: &str = "lab";
/// The QUIC port every node listens on (each namespace has its own port space).
pub const PORT: u16 = 7700;

/// One daemon.
pub struct Node {
    /// `MESHSYNC_HOME`.
    pub home: PathBuf,
    /// The share folder.
    pub share: PathBuf,
    /// The daemon's log.
    pub log: PathBuf,
    /// The namespace it runs in.
    ns: String,
    child: Option<Child>,
}

/// QUIC's own account of a run, summed over every connection of every daemon (so
/// it includes connecting and the index exchange before the clock starts).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct QuicFigures {
    /// Connections that logged their figures (start-up duplicates included).
    pub connections: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// ACK frames sent (most travel alone, one packet each).
    #[serde(default)]
    pub ack_frames: u64,
    /// Packets QUIC declared lost (their frames went out again in new packets).
    pub lost_packets: u64,
    /// UDP datagrams per `sendmsg` (GSO batch), weighted by packets sent.
    pub datagrams_per_send: f64,
}

/// How the daemons are configured beyond what `init`/`join` write.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `rescan_interval_secs` of every node.
    pub rescan_interval_secs: u64,
    /// `RUST_LOG` of every daemon.
    pub log_filter: String,
}

impl Default for Settings {
    /// A full scan every second, so a missed event costs at most that (the
    /// bandwidth lab measures transfers, not the watcher); info logs.
    fn default() -> Self {
        Self { rescan_interval_secs: 1, log_filter: "info".into() }
    }
}

/// The running daemons; stopped on drop.
pub struct Mesh {
    bin: PathBuf,
    log_filter: String,
    /// Node i runs on lab host i.
    pub nodes: Vec<Node>,
}

impl Mesh {
    /// Sets up and starts one node per host with the default [`Settings`]. `dir`
    /// holds homes and shares, `logs` the daemon logs (named `<tag>-h<i>.log`).
    pub fn start(bin: &Path, hosts: &[Host], dir: &Path, logs: &Path, tag: &str) -> anyhow::Result<Self> {
        Self::start_with(bin, hosts, dir, logs, tag, &Settings::default())
    }

    /// [`Mesh::start`] with these settings.
    pub fn start_with(
        bin: &Path,
        hosts: &[Host],
        dir: &Path,
        logs: &Path,
        tag: &str,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let mut mesh = Mesh { bin: bin.to_path_buf(), log_filter: settings.log_filter.clone(), nodes: Vec::new() };
        for (i, h) in hosts.iter().enumerate() {
            util::check_interrupt()?;
            let home = dir.join(format!("h{i}")).join("home");
            let share = dir.join(format!("h{i}")).join("share");
            let log = logs.join(format!("{tag}-h{i}.log"));
            let listen = format!("{}:{PORT}", h.addr);
            let name = format!("h{i}");
            if i == 0 {
                mesh.cli(&home, &["init", "--name", &name, "--listen", &listen])?;
            } else {
                mesh.join(&home, &hosts[i].ns, &name, &listen)?;
            }
            set_rescan(&home.join("config.toml"), settings.rescan_interval_secs)?;
            std::fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;
            mesh.cli(&home, &["share", "add", SHARE, &share.to_string_lossy()])?;
            mesh.nodes.push(Node { home, share, log, ns: h.ns.clone(), child: None });
            mesh.start_node(i)?;
            if i == 0 {
                // The inviter's daemon must answer before anyone can join through it.
                mesh.wait_until(Duration::from_secs(20), "host 0's daemon to answer `status`", |m| {
                    Ok(m.status(0).is_ok())
                })?;
            }
        }
        Ok(mesh)
    }

    /// Starts node `i`'s daemon in its namespace (it must not be running); its log
    /// is appended to, so a restart keeps what came before.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        if n.child.is_some() {
            bail!("the daemon on host {i} is already running");
        }
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .with_context(|| format!("opening {}", n.log.display()))?;
        let child = util::in_ns(&n.ns, &self.bin)
            .arg("run")
            .env("MESHSYNC_HOME", &n.home)
            .env("RUST_LOG", &self.log_filter)
            // Plain text logs: they are read in files, not on a terminal.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting the daemon on host {i}"))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Stops node `i`'s daemon (SIGTERM, then SIGKILL after 10 s).
    #[allow(dead_code)] // benches/pair's
    pub fn stop_node(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].child.take() {
            util::stop_children(&mut [c], Duration::from_secs(10));
        }
    }

    /// `meshsync` with the node's home, outside any namespace (the control socket
    /// is a path in the file system, reachable from everywhere).
    fn cli(&self, home: &Path, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(&self.bin).env("MESHSYNC_HOME", home).args(args))
    }

    fn join(&self, home: &Path, ns: &str, name: &str, listen: &str) -> anyhow::Result<()> {
        let inviter = &self.nodes[0].home;
        let mut last = None;
        // A refused join changes nothing on either side and tokens are single use,
        // so a retry (e.g. while the inviter is still starting) takes a fresh one.
        for _ in 0..3 {
            let token = self.cli(inviter, &["invite", "--ttl", "1h"])?;
            let r = run(util::in_ns(ns, &self.bin).env("MESHSYNC_HOME", home).args([
                "join",
                token.trim(),
                "--name",
                name,
                "--listen",
                listen,
            ]));
            match r {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            util::sleep(Duration::from_millis(500))?;
        }
        Err(last.context("join was never tried")?).with_context(|| format!("joining {name} to the mesh"))
    }

    /// `meshsync status --json` of node `i`, parsed.
    pub fn status(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        let raw = self.cli(&self.nodes[i].home, &["status", "--json"])?;
        serde_json::from_str(&raw).with_context(|| format!("host {i}: status --json is not JSON: {raw}"))
    }

    fn connected_peers(&self, i: usize) -> anyhow::Result<usize> {
        let st = self.status(i)?;
        let peers = st["peers"].as_array().with_context(|| format!("host {i}: status has no peers array: {st}"))?;
        Ok(peers.iter().filter(|p| p["connected"].as_bool() == Some(true)).count())
    }

    /// Waits until every node has reported all other nodes connected for a full
    /// second: sessions can flap right after joining (simultaneous dials), and a
    /// transfer started into a flapping mesh would measure the flap.
    pub fn wait_connected(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let want = self.nodes.len() - 1;
        let mut since: Option<Instant> = None;
        let r = self.wait_until(timeout, "the full mesh", |m| {
            let all = (0..m.nodes.len()).all(|i| m.connected_peers(i).unwrap_or(0) >= want);
            since = if all { since.or(Some(Instant::now())) } else { None };
            Ok(since.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)))
        });
        if let Err(e) = r {
            let counts: Vec<String> = (0..self.nodes.len())
                .map(|i| match self.connected_peers(i) {
                    Ok(c) => format!("h{i}: {c}/{want}"),
                    Err(e) => format!("h{i}: status failed ({e:#})"),
                })
                .collect();
            bail!("{e:#}; connected peers per host: {}", counts.join(", "));
        }
        Ok(start.elapsed())
    }

    fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            util::check_interrupt()?;
            self.check_alive()?;
            if cond(self)? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("timed out after {} s waiting for {what}", timeout.as_secs());
            }
            util::sleep(Duration::from_millis(200))?;
        }
    }

    /// Errors (with the log's tail) if a daemon has exited.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(c) = &n.child {
                let pid = c.id();
                // A zombie or vanished /proc entry means it exited; try_wait needs &mut.
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
                    .unwrap_or(false);
                if !alive {
                    bail!("the daemon on host {i} exited; its log ends:\n{}", util::tail(&n.log, 20));
                }
            }
        }
        Ok(())
    }

    /// Peak RSS (VmHWM) of every daemon, in bytes; `None` where it could not be read.
    pub fn peak_rss(&self) -> Vec<Option<u64>> {
        self.nodes.iter().map(|n| n.child.as_ref().and_then(|c| util::peak_rss(c.id()))).collect()
    }

    /// CPU-seconds all daemons have used so far; `None` if any is unreadable.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.nodes.iter().map(|n| n.child.as_ref().and_then(|c| util::procfs::cpu_seconds(c.id()))).sum()
    }

    /// One counter of every daemon (e.g. `chunk_bytes_sent`), from `meshsync
    /// status --json` over the control socket; `None` where unreadable.
    pub fn counter(&self, name: &str) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|n| {
                let out =
                    Command::new(&self.bin).arg("--home").arg(&n.home).args(["status", "--json"]).output().ok()?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                v["counters"][name].as_u64()
            })
            .collect()
    }

    /// What QUIC reported over every connection of every daemon, from the "path
    /// figures" line each daemon logs when a connection ends (read after `stop`).
    pub fn quic_figures(&self) -> Option<QuicFigures> {
        let mut f = QuicFigures::default();
        let mut weighted = 0.0;
        for n in &self.nodes {
            // A log that cannot be read costs its own figures only.
            let Ok(text) = std::fs::read_to_string(&n.log) else { continue };
            for line in text.lines().filter(|l| l.contains("path figures")) {
                let field = |k: &str| -> Option<f64> {
                    let at = line.find(&format!(" {k}="))? + k.len() + 2;
                    line[at..].split(' ').next()?.parse().ok()
                };
                let (Some(sent), Some(lost), Some(per_send)) =
                    (field("sent_packets"), field("lost_packets"), field("datagrams_per_send"))
                else {
                    continue;
                };
                f.connections += 1;
                f.sent_packets += sent as u64;
                f.lost_packets += lost as u64;
                // Logged since the ACK frequency change; older daemons count none.
                f.ack_frames += field("ack_frames").unwrap_or(0.0) as u64;
                weighted += per_send * sent;
            }
        }
        if f.sent_packets == 0 {
            return None;
        }
        f.datagrams_per_send = weighted / f.sent_packets as f64;
        Some(f)
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let mut children: Vec<Child> = self.nodes.iter_mut().filter_map(|n| n.child.take()).collect();
        util::stop_children(&mut children, Duration::from_secs(10));
    }

    /// The tail of every daemon's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- host {i}: {} ---\n{}", n.log.display(), util::tail(&n.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets `rescan_interval_secs = secs` in `[node]`.
fn set_rescan(cfg: &Path, secs: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(cfg).with_context(|| format!("reading {}", cfg.display()))?;
    let has_key = text.lines().any(|l| l.trim_start().starts_with("rescan_interval_secs"));
    let line_set = format!("rescan_interval_secs = {secs}\n");
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        if has_key && line.trim_start().starts_with("rescan_interval_secs") {
            out.push_str(&line_set);
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !has_key && line.trim() == "[node]" {
            out.push_str(&line_set);
            done = true;
        }
    }
    if !done {
        bail!("{}: no [node] table to set rescan_interval_secs in", cfg.display());
    }
    std::fs::write(cfg, out).with_context(|| format!("writing {}", cfg.display()))
}
