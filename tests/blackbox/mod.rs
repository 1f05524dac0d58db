//! Real `meshsync` daemons on network-namespace hosts, driven only through the built
//! binary and its CLI (`init`, `invite`, `join`, `share add`, `run`, `status --json`),
//! so the library's insides can move without breaking the fault tests: hosts whose
//! daemons are started, killed and restarted, status read as JSON, links cut,
//! hosts partitioned, file trees compared. Needs root, `ip` and (for loss and
//! partitions) `nft`: [`skip_reason`] says what is missing.
#![allow(dead_code)]

#[allow(dead_code)]
#[path = "../../benches/lab/netns.rs"]
pub mod netns;
#[allow(dead_code)]
#[path = "../../benches/lab/util.rs"]
pub mod util;

pub mod ledger;
pub mod tree;

use anyhow::{bail, Context, Result};
use netns::{Shaping, Topology};
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshsync");

/// Every daemon's QUIC port (each host has its own address).
pub const PORT: u16 = 7700;

/// Why this machine cannot run the black-box tests, if it cannot.
pub fn skip_reason(needs_nft: bool) -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2")] {
        if util::which(tool).is_none() {
            return Some(format!("needs `{tool}` ({package})"));
        }
    }
    if needs_nft && util::which("nft").is_none() {
        return Some("needs `nft` for packet loss and partitions (apt-get install nftables)".into());
    }
    None
}

/// libfaketime (Debian: `apt-get install libfaketime`), for [`Host::clock_ahead`].
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Why [`Host::clock_ahead`] cannot work here, if it cannot.
pub fn faketime_missing() -> Option<String> {
    (!Path::new(FAKETIME_LIB).exists())
        .then(|| format!("needs {FAKETIME_LIB} to move a daemon's clock ahead (apt-get install libfaketime)"))
}

/// Links fast enough not to matter: what tests of behaviour (not of rate) use.
pub fn fast_links() -> Shaping {
    Shaping { rate_mbit: 1000.0, loss_pct: 0, delay_ms: 0 }
}

/// One namespace host: its home, its daemon (when running) and that daemon's log.
pub struct Host {
    /// Node name.
    pub name: String,
    /// Everything of this host lives below this folder.
    pub dir: PathBuf,
    /// `--home` of its node.
    pub home: PathBuf,
    /// Network namespace.
    pub ns: String,
    /// Address on the lab bridge.
    pub addr: Ipv4Addr,
    /// Node id (base32), known once the daemon has started.
    pub id: String,
    daemon: Option<Child>,
    log: PathBuf,
    starts: u32,
    /// Environment the daemon starts with, besides the harness's own.
    env: Vec<(String, String)>,
}

impl Host {
    /// A CLI command on this host's home, run in the root namespace (only
    /// commands that use the network need the host's namespace).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--home").arg(&self.home);
        c
    }

    /// Runs a CLI command to completion; an error carries its stderr.
    pub fn run_cli(&self, args: &[&str]) -> Result<String> {
        util::run(self.cli().args(args))
    }

    fn cli_in_ns(&self) -> Command {
        let mut c = util::in_ns(&self.ns, BIN);
        c.arg("--home").arg(&self.home);
        c
    }

    /// The listen address as `init`/`join` take it.
    pub fn listen(&self) -> String {
        format!("{}:{PORT}", self.addr)
    }

    /// Starts the daemon in the host's namespace (its log appended to `log`) and
    /// waits until its control socket answers.
    pub fn start(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("{}: daemon already running", self.name);
        }
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        writeln!(log, "===== test harness: start #{} =====", self.starts)?;
        let child = self
            .cli_in_ns()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            // MESHSYNC_TEST_LOG (a RUST_LOG filter) makes the daemons' logs more verbose.
            .env("RUST_LOG", std::env::var("MESHSYNC_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning the daemon")?;
        self.daemon = Some(child);
        let start = Instant::now();
        loop {
            if let Some(st) = self.status() {
                self.id = st["node"]["id"].as_str().unwrap_or_default().to_string();
                break;
            }
            if let Some(Ok(Some(st))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                self.daemon = None;
                bail!("{}: daemon exited at start ({st}):\n{}", self.name, self.log_tail(30));
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("{}: daemon does not answer `status` after 30 s:\n{}", self.name, self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the daemon from now on with its wall clock `days` ahead (libfaketime;
    /// the monotonic clock is left alone), as if that long had passed.
    pub fn clock_ahead(&mut self, days: u32) {
        self.env = vec![
            ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
            ("FAKETIME".into(), format!("+{days}d")),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }

    /// kill -9: no flush, no goodbye to peers; what a crash or an OOM kill does.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.note("killed with SIGKILL");
        }
    }

    /// SIGSTOP: the daemon stops in its tracks, sockets open, answering nothing
    /// (what a host frozen by a hung disk or a debugger looks like to its peers).
    pub fn freeze(&self) {
        if let Some(c) = &self.daemon {
            util::signal(c, libc::SIGSTOP);
            self.note("frozen with SIGSTOP");
        }
    }

    /// SIGCONT: a frozen daemon goes on.
    pub fn thaw(&self) {
        if let Some(c) = &self.daemon {
            util::signal(c, libc::SIGCONT);
            self.note("thawed with SIGCONT");
        }
    }

    /// SIGTERM and up to 15 s for a clean exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(c) = self.daemon.take() {
            // A frozen daemon would not see the SIGTERM.
            util::signal(&c, libc::SIGCONT);
            util::stop_children(&mut [c], Duration::from_secs(15));
            self.note("stopped with SIGTERM");
        }
    }

    fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "===== test harness: {what} =====");
        }
    }

    /// True while the daemon this harness started is alive.
    pub fn running(&mut self) -> bool {
        match self.daemon.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.daemon = None;
                false
            }
            None => false,
        }
    }

    /// `status --json`, or None when the daemon does not answer.
    pub fn status(&self) -> Option<Value> {
        let out = self.cli().args(["status", "--json"]).stdin(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// One share's part of a status.
    pub fn share_of<'a>(st: &'a Value, share: &str) -> Option<&'a Value> {
        st["shares"].as_array()?.iter().find(|s| s["name"] == share)
    }

    /// One counter of a status.
    pub fn counter(st: &Value, name: &str) -> u64 {
        st["counters"][name].as_u64().unwrap_or(0)
    }

    /// (done, total) of a running download, if there is one.
    pub fn transfer(st: &Value, share: &str, path: &str) -> Option<(u64, u64)> {
        let t = st["transfers"].as_array()?.iter().find(|t| t["share"] == share && t["path"] == path)?;
        Some((t["done"].as_u64()?, t["total"].as_u64()?))
    }

    /// Peers connected now.
    pub fn connected(st: &Value) -> usize {
        st["peers"].as_array().map(|p| p.iter().filter(|p| p["connected"] == true).count()).unwrap_or(0)
    }

    /// Sets `key = value` in the config's `[node]` table (the daemon reads node
    /// settings at start).
    pub fn set_node_option(&self, key: &str, value: &str) -> Result<()> {
        let path = self.home.join("config.toml");
        let text = std::fs::read_to_string(&path)?;
        let line = format!("{key} = {value}");
        let mut replaced = false;
        let mut out: Vec<String> = Vec::new();
        for l in text.lines() {
            if !replaced && l.split('=').next().is_some_and(|k| k.trim() == key) {
                out.push(line.clone());
                replaced = true;
            } else {
                out.push(l.to_string());
            }
        }
        if !replaced {
            let at = out.iter().position(|l| l.trim() == "[node]").context("config has no [node] table")?;
            out.insert(at + 1, line);
        }
        std::fs::write(&path, out.join("\n") + "\n")?;
        Ok(())
    }

    /// `share add NAME PATH`; returns the folder as the daemon sees it.
    pub fn share_add(&self, name: &str, path: &Path) -> Result<PathBuf> {
        self.run_cli(&["share", "add", name, &path.to_string_lossy()])?;
        Ok(path.canonicalize()?)
    }

    /// This host's daemon log (every start appends to it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The end of this host's daemon log.
    pub fn log_tail(&self, lines: usize) -> String {
        format!("--- {} log ({}) ---\n{}", self.name, self.log.display(), util::tail(&self.log, lines))
    }
}

/// Hosts on one shaped bridge, each with a node of one mesh.
pub struct Mesh {
    /// The hosts, node 0 first (it made the mesh).
    pub hosts: Vec<Host>,
    /// The namespaces (removed on drop).
    pub topo: Topology,
    /// Scratch space of the whole mesh.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mesh {
    /// `n` hosts: host 0 runs `init`, every other host joins with a token from
    /// host 0. `options` are `[node]` settings every node gets before its first
    /// start. All daemons run and are connected to each other on return.
    pub fn new(n: usize, shaping: &Shaping, options: &[(&str, &str)]) -> Result<Mesh> {
        // MESHSYNC_TEST_KEEP keeps the homes and logs of every run, to read a rare failure.
        let keep = std::env::var_os("MESHSYNC_TEST_KEEP").is_some();
        let tmp = tempfile::Builder::new().prefix("meshsync-bb").disable_cleanup(keep).tempdir()?;
        let dir = tmp.path().to_path_buf();
        if keep {
            println!("MESHSYNC_TEST_KEEP: the mesh's files stay in {}", dir.display());
        }
        let topo = Topology::create(n, shaping, &dir)?;
        let hosts = (0..n)
            .map(|i| {
                let hdir = dir.join(format!("h{i}"));
                std::fs::create_dir_all(&hdir)?;
                Ok(Host {
                    name: format!("n{i}"),
                    home: hdir.join("home"),
                    log: hdir.join("daemon.log"),
                    dir: hdir,
                    ns: topo.hosts[i].ns.clone(),
                    addr: topo.hosts[i].addr,
                    id: String::new(),
                    daemon: None,
                    starts: 0,
                    env: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut mesh = Mesh { hosts, topo, dir, _tmp: tmp };
        for i in 0..n {
            let h = &mesh.hosts[i];
            if i == 0 {
                h.run_cli(&["init", "--name", &h.name, "--listen", &h.listen()])?;
            } else {
                let token = mesh.hosts[0].run_cli(&["invite", "--ttl", "1h"])?;
                util::run(h.cli_in_ns().args(["join", token.trim(), "--name", &h.name, "--listen", &h.listen()]))
                    .with_context(|| format!("{} joins", h.name))?;
            }
            for (k, v) in options {
                h.set_node_option(k, v)?;
            }
            mesh.hosts[i].start()?;
        }
        let all: Vec<usize> = (0..n).collect();
        mesh.try_wait("every host connected to every other", Duration::from_secs(60), |m| m.fully_connected(&all))?;
        Ok(mesh)
    }

    /// True when every host of `set` runs and is connected to every other host of `set`.
    pub fn fully_connected(&self, set: &[usize]) -> bool {
        set.iter().all(|&h| {
            let Some(st) = self.hosts[h].status() else { return false };
            let others: Vec<String> = set.iter().filter(|&&o| o != h).map(|&o| self.hosts[o].name.clone()).collect();
            others.iter().all(|name| {
                st["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name.as_str() && p["connected"] == true)
            })
        })
    }

    /// Every host's log tail, for failure messages.
    pub fn logs(&self) -> String {
        self.hosts.iter().map(|h| h.log_tail(40)).collect::<Vec<_>>().join("\n")
    }

    /// Polls `cond` every 100 ms for up to `limit`; the time it took, or an error
    /// naming what did not happen.
    pub fn try_wait(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> Result<Duration> {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for: {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(start.elapsed())
    }

    /// Like [`Mesh::try_wait`], panicking with every host's log on timeout.
    pub fn wait(&self, what: &str, limit: Duration, cond: impl FnMut(&Self) -> bool) -> Duration {
        match self.try_wait(what, limit, cond) {
            Ok(d) => d,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    /// Adds share `name` on each host of `set`, at `<host dir>/<name>`; the folders.
    pub fn share_on(&self, name: &str, set: &[usize]) -> Result<Vec<PathBuf>> {
        set.iter()
            .map(|&h| {
                let host = &self.hosts[h];
                let path = host.dir.join(name);
                std::fs::create_dir_all(&path)?;
                host.share_add(name, &path)
            })
            .collect()
    }

    /// Cuts the mesh into groups: `group[h]` is host h's side. Each host drops
    /// every packet from a host of another group (nftables, input hook), so both
    /// directions are cut and the links stay up, as a real partition looks.
    pub fn partition(&self, group: &[usize]) -> Result<()> {
        for (h, host) in self.hosts.iter().enumerate() {
            let others: Vec<String> = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(o, _)| group[*o] != group[h])
                .map(|(_, o)| o.addr.to_string())
                .collect();
            let drop = if others.is_empty() {
                String::new()
            } else {
                format!("    ip saddr {{ {} }} drop\n", others.join(", "))
            };
            // Declaring then deleting the table makes the load a replace, in one transaction.
            let rules = format!(
                "table inet meshsync_part\ndelete table inet meshsync_part\ntable inet meshsync_part {{\n  \
                 chain input {{\n    type filter hook input priority -10; policy accept;\n{drop}  }}\n}}\n"
            );
            let file = self.dir.join(format!("part-{h}.nft"));
            std::fs::write(&file, rules)?;
            util::run(util::in_ns(&host.ns, "nft").arg("-f").arg(&file))?;
        }
        Ok(())
    }

    /// Ends any partition.
    pub fn heal(&self) -> Result<()> {
        self.partition(&vec![0; self.hosts.len()])
    }

    /// `ip link set eth0 up|down` on a host: its cable pulled or plugged back.
    pub fn link(&self, h: usize, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        util::run(Command::new("ip").args(["-n", &self.hosts[h].ns, "link", "set", "eth0", state]))?;
        Ok(())
    }

    /// Why share `share` on hosts `set` (folders `roots`, same order) has not
    /// converged: trees differ, or a node still has work (not in sync with a
    /// peer, scanning, downloading, paused). None when it has.
    pub fn not_converged(&self, share: &str, set: &[usize], roots: &[PathBuf]) -> Option<String> {
        for (&h, _) in set.iter().zip(roots) {
            let Some(st) = self.hosts[h].status() else {
                return Some(format!("{} does not answer", self.hosts[h].name));
            };
            let Some(s) = Host::share_of(&st, share) else {
                return Some(format!("{} lacks the share", self.hosts[h].name));
            };
            let name = &self.hosts[h].name;
            if !s["paused"].is_null() {
                return Some(format!("{name}: paused: {}", s["paused"]));
            }
            if s["scanning"] == true {
                return Some(format!("{name}: scanning"));
            }
            // Only the peers of `set`: a host cut off may still count as connected
            // until QUIC's idle timeout.
            let peers: Vec<&Value> = s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| set.iter().any(|&o| o != h && p["id"] == self.hosts[o].id.as_str()))
                .collect();
            if peers.len() + 1 != set.len() || peers.iter().any(|p| p["connected"] != true || p["in_sync"] != true) {
                return Some(format!("{name}: share peers {peers:?}"));
            }
            if st["transfers"].as_array().is_some_and(|t| t.iter().any(|t| t["share"] == share)) {
                return Some(format!("{name}: downloading"));
            }
        }
        let trees: Vec<tree::Tree> = match roots.iter().map(|r| tree::snapshot(r)).collect::<std::io::Result<_>>() {
            Ok(t) => t,
            Err(e) => return Some(format!("reading a tree: {e}")),
        };
        for (i, t) in trees.iter().enumerate().skip(1) {
            let d = tree::diff(&trees[0], t);
            if !d.is_empty() {
                return Some(format!(
                    "{} and {} differ:\n  {}",
                    self.hosts[set[0]].name,
                    self.hosts[set[i]].name,
                    d.join("\n  ")
                ));
            }
        }
        None
    }

    /// Waits until share `share` has converged on `set` (see [`Mesh::not_converged`]),
    /// seen twice in a row 300 ms apart; the time it took, or the last reason it had not.
    pub fn converge(&self, share: &str, set: &[usize], roots: &[PathBuf], limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut streak = 0;
        // MESHSYNC_TRACE: print every reason it has not converged yet, as it goes.
        let trace = std::env::var_os("MESHSYNC_TRACE").is_some();
        loop {
            match self.not_converged(share, set, roots) {
                None => {
                    streak += 1;
                    if streak == 2 {
                        return Ok(start.elapsed());
                    }
                }
                Some(why) => {
                    if trace {
                        println!("    {:>6.2?} not converged: {}", start.elapsed(), why.lines().next().unwrap_or(""));
                    }
                    streak = 0;
                    if start.elapsed() > limit {
                        return Err(format!("not converged after {limit:?}: {why}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // SIGTERM to all at once, so no daemon waits its turn behind a slow one.
        for h in &self.hosts {
            if let Some(c) = &h.daemon {
                util::signal(c, libc::SIGCONT);
                util::signal(c, libc::SIGTERM);
            }
        }
        for h in &mut self.hosts {
            h.stop();
        }
    }
}

/// Writes `body` beside the share and renames it in, as an upload job does: the
/// daemon never sees a partial file.
pub fn place(scratch: &Path, root: &Path, rel: &str, body: &[u8]) -> Result<()> {
    std::fs::create_dir_all(scratch)?;
    let tmp = scratch.join(format!("place-{}", rel.replace('/', "_")));
    std::fs::write(&tmp, body)?;
    let to = root.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, &to)?;
    Ok(())
}

/// `n` pseudo-random bytes from `seed` (incompressible, no chunk repeats).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The piece size the README names for a file: about 1/2048 of it, 64 KiB to 1 MiB.
pub fn piece_size(file: u64) -> u64 {
    (file / 2048).clamp(64 << 10, 1 << 20)
}

/// Bytes as MiB with two decimals, for printed figures.
pub fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}
