//! The lab network: one namespace per host, each joined by a veth to a bridge that
//! lives in its own "switch" namespace (so nothing is added to the root namespace),
//! every link shaped with tbf in both directions, optional loss (nftables) and
//! delay (netem, where the kernel has it).

use super::util::{self, run};
use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Socket buffer ceiling set for the run: meshsync asks for 8 MiB UDP buffers and the
/// kernel silently caps a request at `rmem_max`/`wmem_max`.
pub const SOCKET_BUFFER_MAX: u64 = 16 << 20;

/// tbf queue latency: how long a packet may wait before tbf drops it. 50 ms is a
/// typical router buffer; much larger hides congestion, much smaller drops bursts.
pub const TBF_LATENCY_MS: u32 = 50;

/// How each link is shaped.
#[derive(Clone, Debug)]
pub struct Shaping {
    /// Rate per direction per host link, Mbit/s.
    pub rate_mbit: f64,
    /// Percentage of packets dropped on each host's input.
    pub loss_pct: u32,
    /// One-way delay to add on each host's upload, ms (0 = none).
    pub delay_ms: u32,
}

impl Shaping {
    /// tbf burst in bytes: at least one timer tick of traffic (rate/HZ; HZ can be as
    /// low as 100) so tbf can reach its rate, and at least 64 KiB so a GSO/TSO
    /// super-packet fits without being split.
    pub fn burst_bytes(&self) -> u64 {
        let bytes_per_sec = self.rate_mbit * 1e6 / 8.0;
        ((bytes_per_sec / 100.0) as u64).max(64 << 10)
    }

    fn tbf_args(&self) -> Vec<String> {
        let kbit = (self.rate_mbit * 1000.0).round().max(1.0) as u64;
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{kbit}kbit"),
            "burst".into(),
            self.burst_bytes().to_string(),
            "latency".into(),
            format!("{TBF_LATENCY_MS}ms"),
        ]
    }
}

/// One host of the lab.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// Its address on the lab bridge.
    pub addr: Ipv4Addr,
}

/// Raises a root-namespace sysctl for the run and puts the old value back on drop.
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn raise(path: &str, min: u64) -> anyhow::Result<Option<Self>> {
        let path = PathBuf::from(path);
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let cur: u64 = old.trim().parse().with_context(|| format!("{}: not a number: {old:?}", path.display()))?;
        if cur >= min {
            return Ok(None);
        }
        std::fs::write(&path, min.to_string()).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(Self { path, old }))
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, self.old.trim()) {
            eprintln!("warning: could not restore {} to {}: {e}", self.path.display(), self.old.trim());
        }
    }
}

/// The namespaces, bridge and veths of one lab; all removed on drop.
pub struct Topology {
    /// Hosts; host 0 is the source.
    pub hosts: Vec<Host>,
    /// Whether the requested delay is in effect, or why not.
    pub delay: DelayOutcome,
    switch_ns: Option<String>,
    // Namespaces in creation order; deleted in reverse (hosts before the switch).
    created: Vec<String>,
    _sysctls: Vec<Sysctl>,
}

/// What happened to the requested delay.
#[derive(Clone, Debug)]
pub enum DelayOutcome {
    /// No delay was asked for.
    None,
    /// netem delays each host's upload by this many ms.
    Applied(u32),
    /// The kernel has no netem; the reason names what was tried.
    Skipped(String),
}

static LABS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

fn tc(ns: &str, args: &[String]) -> anyhow::Result<String> {
    run(Command::new("tc").args(["-n", ns]).args(args))
}

/// Why network namespaces cannot be built here, if they cannot: not root, `ip`
/// or `tc` (or a tool of `extra`, as (program, package)) missing, or no right to
/// create namespaces. `what` names the benchmark in the message.
pub fn unavailable(extra: &[(&str, &str)], what: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(format!("{what} needs root (it creates network namespaces); skipped"));
    }
    for (tool, pkg) in [("ip", "iproute2"), ("tc", "iproute2")].iter().chain(extra) {
        if util::which(tool).is_none() {
            return Some(format!("`{tool}` is not installed (apt-get install {pkg}); {what} is skipped"));
        }
    }
    // Root in a container may still lack CAP_SYS_ADMIN for namespaces.
    let probe = format!("msl{}-probe", std::process::id());
    match run(Command::new("ip").args(["netns", "add", &probe])) {
        Ok(_) => {
            let _ = run(Command::new("ip").args(["netns", "del", &probe]));
            None
        }
        Err(e) => Some(format!("cannot create network namespaces here ({e:#}); {what} is skipped")),
    }
}

/// The lab address of host `i`: 198.18.0.0/15 is reserved for benchmarking (RFC 2544).
pub fn host_addr(i: usize) -> Ipv4Addr {
    let n = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1 + i as u32;
    Ipv4Addr::from(n)
}

impl Topology {
    /// Creates `hosts` namespaces on one bridge, shaped as asked. `scratch` holds
    /// the nftables rule file.
    pub fn create(hosts: usize, shaping: &Shaping, scratch: &Path) -> anyhow::Result<Self> {
        if hosts > 60_000 {
            bail!("{hosts} hosts do not fit the lab's 198.18.0.0/16 addresses");
        }
        // pid + counter: two labs (or a leftover from a killed run) never share names.
        let prefix = format!("msl{}x{}", std::process::id(), LABS.fetch_add(1, Ordering::SeqCst));
        let mut topo = Topology {
            hosts: Vec::new(),
            delay: DelayOutcome::None,
            switch_ns: None,
            created: Vec::new(),
            _sysctls: Vec::new(),
        };
        for key in ["/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max"] {
            if let Some(s) = Sysctl::raise(key, SOCKET_BUFFER_MAX)? {
                topo._sysctls.push(s);
            }
        }
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw])?;
        topo.created.push(sw.clone());
        topo.switch_ns = Some(sw.clone());
        // With br_netfilter loaded, every bridged frame also runs the iptables hooks
        // (2-3 % of the CPU at N = 16 in perf). A switch does not; the setting is per
        // namespace, so only this lab's switch changes.
        run(util::in_ns(&sw, "sh").args([
            "-c",
            "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e \"$f\" ] && echo 0 > \"$f\"; done; true",
        ]))?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            util::check_interrupt()?;
            let ns = format!("{prefix}-h{i}");
            ip(&["netns", "add", &ns])?;
            topo.created.push(ns.clone());
            let port = format!("h{i}");
            // Both ends are created directly in their namespaces: no name is ever
            // taken in the root namespace, even briefly.
            ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let addr = host_addr(i);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            topo.hosts.push(Host { ns, addr });
        }
        topo.delay = topo.shape(shaping)?;
        if shaping.loss_pct > 0 {
            topo.add_loss(shaping.loss_pct, scratch)?;
        }
        Ok(topo)
    }

    /// Packets each host's shaped links have dropped so far, as (upload, download)
    /// per host: tbf drops what does not fit its 50 ms queue, so this counts what
    /// the senders' congestion control overshot (or nftables' loss, which is not
    /// counted here). `None` if tc's statistics could not be read.
    pub fn queue_drops(&self) -> Option<Vec<(u64, u64)>> {
        // Summed over the device's qdiscs (netem and tbf when delay is applied).
        self.per_link("(dropped ", |counts| counts.iter().sum())
    }

    /// Bytes each host's shaped links have passed so far, as (upload, download) per
    /// host, IP packets with their Ethernet headers. `None` if unreadable.
    #[allow(dead_code)] // benches/pair's
    pub fn link_bytes(&self) -> Option<Vec<(u64, u64)>> {
        // netem and tbf on one device both see every packet: the larger is the root's.
        self.per_link("Sent ", |counts| counts.iter().copied().max().unwrap_or(0))
    }

    /// One figure of `tc -s qdisc` (the number after `key`, as in "Sent 123 bytes 4
    /// pkt (dropped 5, overlimits 6 requeues 0)") per host link, combined over the
    /// device's qdiscs by `combine`, as (upload, download) per host.
    fn per_link(&self, key: &str, combine: impl Fn(&[u64]) -> u64) -> Option<Vec<(u64, u64)>> {
        let sw = self.switch_ns.as_deref()?;
        let figure = |ns: &str, dev: &str| -> Option<u64> {
            let out = tc(ns, &["-s", "qdisc", "show", "dev", dev].map(String::from)).ok()?;
            let counts: Vec<u64> = out
                .split(key)
                .skip(1)
                .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()))
                .collect::<Option<_>>()?;
            (!counts.is_empty()).then(|| combine(&counts))
        };
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Some((figure(&h.ns, "eth0")?, figure(sw, &format!("h{i}"))?)))
            .collect()
    }

    /// Upload = the host's own eth0 egress; download = the bridge port's egress
    /// towards the host. Delay, when the kernel has netem, goes on the upload only,
    /// so the one-way delay between any two hosts is `delay_ms`.
    fn shape(&self, s: &Shaping) -> anyhow::Result<DelayOutcome> {
        let sw = self.switch_ns.as_deref().context("no switch namespace")?;
        let mut delay = DelayOutcome::None;
        if s.delay_ms > 0 {
            delay = match self.probe_netem(&self.hosts[0].ns, s.delay_ms) {
                Ok(()) => DelayOutcome::Applied(s.delay_ms),
                Err(why) => DelayOutcome::Skipped(why),
            };
        }
        let tbf = s.tbf_args();
        for (i, h) in self.hosts.iter().enumerate() {
            let mut up: Vec<String> = ["qdisc", "replace", "dev", "eth0"].map(String::from).to_vec();
            if matches!(delay, DelayOutcome::Applied(_)) {
                // netem at the root delays, tbf below it sets the rate.
                tc(&h.ns, &[&up[..], &netem_args(s.delay_ms)[..]].concat())?;
                up.extend(["parent", "1:1", "handle", "10:"].map(String::from));
            } else {
                up.push("root".into());
            }
            tc(&h.ns, &[up, tbf.clone()].concat())?;
            let down = ["qdisc", "replace", "dev", &format!("h{i}"), "root"].map(String::from);
            tc(sw, &[&down[..], &tbf[..]].concat())?;
        }
        Ok(delay)
    }

    /// Tries to put netem on host 0's upload (loading sch_netem if modprobe exists).
    /// On success it stays as the root qdisc there; the error says what was tried.
    fn probe_netem(&self, ns: &str, delay_ms: u32) -> Result<(), String> {
        let args =
            [&["qdisc".to_string(), "replace".into(), "dev".into(), "eth0".into()], &netem_args(delay_ms)[..]].concat();
        let first = match tc(ns, &args) {
            Ok(_) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        let modprobe = match util::which("modprobe") {
            None => "modprobe is not installed".to_string(),
            Some(m) => match run(Command::new(m).arg("sch_netem")) {
                Ok(_) => match tc(ns, &args) {
                    Ok(_) => return Ok(()),
                    Err(e) => format!("modprobe sch_netem succeeded but netem still fails: {e:#}"),
                },
                Err(e) => format!("{e:#}"),
            },
        };
        Err(format!("this kernel has no netem (CONFIG_NET_SCH_NETEM): {first}; {modprobe}"))
    }

    /// Drops `pct`% of the packets each host receives, once per link crossing
    /// (input hook only; loopback exempt so a host's local traffic is untouched).
    fn add_loss(&self, pct: u32, scratch: &Path) -> anyhow::Result<()> {
        let rules = format!(
            "table inet meshsync_lab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             iif \"lo\" accept\n    numgen random mod 100 < {pct} drop\n  }}\n}}\n"
        );
        let file = scratch.join("loss.nft");
        std::fs::write(&file, rules).with_context(|| format!("writing {}", file.display()))?;
        for h in &self.hosts {
            run(util::in_ns(&h.ns, "nft").arg("-f").arg(&file))?;
        }
        Ok(())
    }
}

fn netem_args(delay_ms: u32) -> Vec<String> {
    // A large limit: netem's default (1000 packets) would itself drop at high rate × delay.
    ["root", "handle", "1:", "netem", "delay", &format!("{delay_ms}ms"), "limit", "100000"].map(String::from).to_vec()
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Anything still running inside would keep the namespace alive unnamed;
            // every process there was started by this lab.
            if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", ns])) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
                    // SAFETY: plain kill(2) on a process inside our own namespace.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}
