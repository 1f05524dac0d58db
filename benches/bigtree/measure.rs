//! Waiting for a daemon to reach a state (scanned, in sync, idle) and reading what
//! it cost: the control socket's status, its log, /proc.

use crate::daemon::Daemon;
use anyhow::bail;
use meshsync::ops::status::{ShareStatus, Status};
use std::time::{Duration, Instant};

/// How long a daemon must stay nearly without CPU to count as idle.
pub const QUIET: Duration = Duration::from_secs(2);
/// CPU a quiet window may hold (timers, dial attempts), as a share of one core.
const QUIET_CPU: f64 = 0.03;
/// Longest wait for any state.
const PATIENCE: Duration = Duration::from_secs(3 * 3600);

/// Poll intervals from 50 ms growing by half up to `max_ms`: short waits are timed
/// to the tens of ms, long ones do not ask the daemon for status all the time.
struct Poll {
    next: Duration,
    max: Duration,
}

impl Poll {
    fn new(max_ms: u64) -> Self {
        Self { next: Duration::from_millis(50.min(max_ms)), max: Duration::from_millis(max_ms) }
    }

    async fn sleep(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 3 / 2).min(self.max);
    }
}

/// `12.34 s`.
pub fn fmt_secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The load averages, as `load 1.23 1.10 0.98`.
pub fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load {}", three.join(" "))
}

/// CPU seconds a process has used (user + system).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    crate::procfs::cpu_seconds(pid).ok_or_else(|| anyhow::anyhow!("no CPU figures in /proc/{pid}/stat"))
}

/// Waits until the daemon has been nearly without CPU for [`QUIET`]; returns when
/// that quiet window began (when its work ended) and the CPU seconds it used
/// since this was called.
pub async fn wait_idle(d: &Daemon) -> anyhow::Result<(Instant, f64)> {
    let pid = d.child.id();
    let first = cpu_secs(pid)?;
    let start = Instant::now();
    let mut samples: std::collections::VecDeque<(Instant, f64)> = Default::default();
    loop {
        let now = (Instant::now(), cpu_secs(pid)?);
        samples.push_back(now);
        while samples.len() > 1 && now.0 - samples[1].0 >= QUIET {
            samples.pop_front();
        }
        let (t0, c0) = samples[0];
        if now.0 - t0 >= QUIET && now.1 - c0 <= QUIET_CPU * (now.0 - t0).as_secs_f64() {
            return Ok((t0, c0 - first));
        }
        if start.elapsed() > PATIENCE {
            bail!("the daemon did not go idle within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The slowest `status` answer since [`slowest_status`] was last read, in ms.
static SLOWEST_STATUS_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Asks `d` for its status, noting how long the answer took.
pub async fn status(d: &Daemon) -> anyhow::Result<Status> {
    let t = Instant::now();
    let st = meshsync::ops::control::status(&d.home()).await?;
    SLOWEST_STATUS_MS.fetch_max(t.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(st)
}

/// The slowest `status` answer since the last call (each answer may read the whole
/// index while it changes).
pub fn slowest_status() -> Duration {
    Duration::from_millis(SLOWEST_STATUS_MS.swap(0, std::sync::atomic::Ordering::Relaxed))
}

fn share<'a>(st: &'a Status, name: &str) -> anyhow::Result<&'a ShareStatus> {
    st.shares.iter().find(|s| s.name == name).ok_or_else(|| anyhow::anyhow!("no share {name} in status"))
}

/// What a first scan took.
pub struct Scanned {
    /// Files the status counts.
    pub files: u64,
    /// From `meshsync run` until status said the scan was done.
    pub wall: Duration,
    /// What the daemon logged for the scan (its `local changes` line).
    pub logged: Option<Duration>,
    /// CPU seconds the daemon used until then (steadier than wall time on a
    /// shared machine).
    pub cpu: f64,
}

/// Waits until share `name` of `d` holds `files` files and no scan runs.
pub async fn wait_scanned(d: &Daemon, name: &str, t0: Instant, files: u64, poll_ms: u64) -> anyhow::Result<Scanned> {
    let mut poll = Poll::new(poll_ms);
    loop {
        let st = status(d).await?;
        let sh = share(&st, name)?;
        if sh.files >= files && !sh.scanning {
            let logged = scan_secs_logged(&d.log);
            let cpu = cpu_secs(d.child.id())?;
            return Ok(Scanned { files: sh.files, wall: t0.elapsed(), logged, cpu });
        }
        if let Some(p) = &sh.paused {
            bail!("share {name} paused: {p}");
        }
        if t0.elapsed() > PATIENCE {
            bail!("not scanned within {PATIENCE:?}: {} files", sh.files);
        }
        poll.sleep().await;
    }
}

/// The `secs` of the first `local changes` line of a daemon's log.
fn scan_secs_logged(log: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("local changes"))?;
    let v = line.split("secs=").nth(1)?.split_whitespace().next()?.trim_matches('"');
    v.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// Waits until a scan asked for (`rescan`) is done; returns how long that took.
pub async fn wait_rescanned(d: &Daemon, name: &str, poll_ms: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut poll = Poll::new(poll_ms);
    loop {
        let st = status(d).await?;
        if !share(&st, name)?.scanning {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > PATIENCE {
            bail!("rescan not done within {PATIENCE:?}");
        }
        poll.sleep().await;
    }
}

/// Waits until every node's share `name` is scanned, and every peer is connected
/// and has the same versions; returns the time since `t0`.
pub async fn wait_in_sync(nodes: &[&Daemon], name: &str, t0: Instant, poll_ms: u64) -> anyhow::Result<Duration> {
    let mut last = String::new();
    let mut poll = Poll::new(poll_ms);
    loop {
        let mut all = true;
        let mut why = Vec::new();
        for d in nodes {
            let st = status(d).await?;
            let sh = share(&st, name)?;
            let synced = !sh.scanning && !sh.peers.is_empty() && sh.peers.iter().all(|p| p.connected && p.in_sync);
            all &= synced;
            why.push(format!(
                "{}: {} files, scanning {}, {}",
                st.node.name,
                sh.files,
                sh.scanning,
                sh.peers
                    .iter()
                    .map(|p| format!("needs {} / they need {}", p.we_need, p.they_need))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if all {
            return Ok(t0.elapsed());
        }
        let now = why.join("; ");
        if now != last {
            eprintln!("  [{:>7.1} s] {now}", t0.elapsed().as_secs_f64());
            last = now;
        }
        if t0.elapsed() > PATIENCE {
            bail!("not in sync within {PATIENCE:?}: {last}");
        }
        poll.sleep().await;
    }
}
