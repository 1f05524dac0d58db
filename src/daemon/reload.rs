//! Config edits applied to a running node, without dropping a connection: when the
//! file changes on disk, at SIGHUP, and at `meshsync reload` (which gets a report).
//! Shares added and removed, a share's ignore rules, schedule and min_interval, and
//! the node's upload and download caps, free-space floor and rescan interval take
//! effect at once;
//! the rest (listen, advertise, name, log, metrics_listen, a share's path or mode)
//! at the next start, and the log and the report say so.

use super::{Node, NodeEvent};
use crate::config::{Config, ConfigError, NodeConfig, ShareConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// A reload asked for by a caller that waits for its report.
pub(super) type Ask = oneshot::Sender<Result<ReloadReport, ReloadError>>;

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Shares started.
    pub added: Vec<String>,
    /// Shares stopped (their files stay).
    pub removed: Vec<String>,
    /// Settings now in effect, e.g. `[node] upload_limit_mbit`, `share "www" ignore`.
    pub applied: Vec<String>,
    /// Settings that changed but take effect at the next start.
    pub needs_restart: Vec<String>,
    /// Shares that could not start, and why.
    pub failed: Vec<String>,
    /// The shares running after the reload.
    pub shares: Vec<String>,
}

/// Why a reload did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config does not load; the node keeps running as it was.
    #[error("the config does not load, nothing changed: {0}")]
    Config(#[from] ConfigError),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
}

/// The node settings a reload changes while the node runs.
pub(super) struct LiveSettings {
    rescan_secs: AtomicU64,
    /// Shared with every share's transfer context.
    pub(super) min_free: Arc<AtomicU64>,
    /// 0: no cap.
    upload_mbit: AtomicU64,
    /// 0: no cap.
    download_mbit: AtomicU64,
    /// Paces every download of the node; shared with every share's transfer context.
    pub(super) download: Arc<crate::net::limit::RateLimit>,
}

impl LiveSettings {
    /// As configured.
    pub(super) fn of(cfg: &NodeConfig) -> Self {
        Self {
            rescan_secs: AtomicU64::new(cfg.rescan_interval.as_secs()),
            min_free: Arc::new(AtomicU64::new(cfg.min_free_bytes)),
            upload_mbit: AtomicU64::new(cfg.upload_limit_mbit.unwrap_or(0)),
            download_mbit: AtomicU64::new(cfg.download_limit_mbit.unwrap_or(0)),
            download: Arc::new(crate::net::limit::RateLimit::new(cfg.download_limit_mbit)),
        }
    }

    /// The full rescan period now.
    pub(super) fn rescan_interval(&self) -> Duration {
        Duration::from_secs(self.rescan_secs.load(Ordering::Relaxed))
    }

    /// `cfg` with the live values in place of the configured ones.
    fn overlay(&self, cfg: &NodeConfig) -> NodeConfig {
        NodeConfig {
            rescan_interval: self.rescan_interval(),
            min_free_bytes: self.min_free.load(Ordering::Relaxed),
            upload_limit_mbit: Some(self.upload_mbit.load(Ordering::Relaxed)).filter(|m| *m > 0),
            download_limit_mbit: Some(self.download_mbit.load(Ordering::Relaxed)).filter(|m| *m > 0),
            ..cfg.clone()
        }
    }
}

/// How a new config differs from the one running, sorted by what to do about it.
#[derive(Debug, Default)]
struct Changes {
    /// Running shares the new config lacks.
    removed: Vec<String>,
    /// Shares of the new config not running.
    added: Vec<ShareConfig>,
    /// Running shares whose ignore rules, schedule or `min_interval` changed, as configured now.
    reconfigured: Vec<ShareConfig>,
    /// Settings applied live.
    applied: Vec<String>,
    /// Settings that take effect at the next start.
    needs_restart: Vec<String>,
}

/// What differs between the running config and a new one.
fn diff(running: &Config, new: &Config) -> Changes {
    let (a, b) = (&running.node, &new.node);
    let mut ch = Changes::default();
    let node_keys = [
        ("name", a.name != b.name, false),
        ("log", a.log != b.log, false),
        ("listen", a.listen != b.listen, false),
        ("advertise", a.advertise != b.advertise, false),
        ("metrics_listen", a.metrics_listen != b.metrics_listen, false),
        ("rescan_interval_secs", a.rescan_interval != b.rescan_interval, true),
        ("min_free_mib", a.min_free_bytes != b.min_free_bytes, true),
        ("upload_limit_mbit", a.upload_limit_mbit != b.upload_limit_mbit, true),
        ("max_join_connections", a.max_join_connections != b.max_join_connections, false),
        ("max_join_per_address", a.max_join_per_address != b.max_join_per_address, false),
        ("join_deadline_secs", a.join_deadline != b.join_deadline, false),
        ("index_cache_mib", a.index_cache_mib != b.index_cache_mib, false),
        ("download_limit_mbit", a.download_limit_mbit != b.download_limit_mbit, true),
        ("bench_max_mib", a.bench_max_bytes != b.bench_max_bytes, false),
        ("tombstone_days", a.tombstone_days != b.tombstone_days, false),
    ];
    for (key, changed, live) in node_keys {
        if changed {
            let into = if live { &mut ch.applied } else { &mut ch.needs_restart };
            into.push(format!("[node] {key}"));
        }
    }
    ch.removed = running
        .shares
        .iter()
        .filter(|s| !new.shares.iter().any(|n| n.name == s.name))
        .map(|s| s.name.clone())
        .collect();
    for s in &new.shares {
        let Some(old) = running.shares.iter().find(|o| o.name == s.name) else {
            ch.added.push(s.clone());
            continue;
        };
        let describe = |c: &ShareConfig| c.schedule.as_ref().map(|x| x.describe());
        let named = |key: &str| format!("share {:?} {key}", s.name);
        ch.needs_restart.extend(
            [
                ("path", old.path != s.path),
                ("mode", old.mode != s.mode),
                ("compression", old.compression != s.compression),
            ]
            .iter()
            .filter(|k| k.1)
            .map(|k| named(k.0)),
        );
        let live = [
            ("ignore", old.ignore != s.ignore),
            ("schedule", describe(old) != describe(s)),
            ("min_interval", old.min_interval != s.min_interval),
        ];
        if live.iter().any(|k| k.1) {
            ch.applied.extend(live.iter().filter(|k| k.1).map(|k| named(k.0)));
            ch.reconfigured.push(s.clone());
        }
    }
    ch
}

impl Node {
    /// The config this node runs now: as started, with what reloads changed.
    fn running_config(&self) -> Config {
        let shares = self
            .share_list()
            .iter()
            .filter(|s| !s.cfg.name.starts_with(crate::proto::BENCH_SHARE_PREFIX))
            .map(|s| s.live_config())
            .collect();
        Config { node: self.live.overlay(&self.config.node), shares }
    }

    /// Stops taking part in a share at once: its worker stops, sessions stop
    /// sending its index and tell peers, and its index trees are dropped (see
    /// `Index::forget_share`). Its files, and its marker, stay; so do partial
    /// downloads' temp files, which a later download of the same content resumes.
    pub(super) async fn remove_share(&self, name: &str) -> bool {
        let Some(share) = self.shares.write().unwrap_or_else(|e| e.into_inner()).remove(name) else {
            return false;
        };
        share.stop.cancel();
        let _ = self.events.send(NodeEvent::ShareRemoved(name.to_string()));
        if tokio::time::timeout(Duration::from_secs(10), share.worker_done.cancelled()).await.is_err() {
            warn!(share = name, "the share's worker did not stop within 10 s; dropping its index anyway");
        }
        self.progress.finish_share(name);
        drop(share);
        let (index, owned) = (self.index.clone(), name.to_string());
        match tokio::task::spawn_blocking(move || index.forget_share(&owned)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(share = name, error = %e, "cannot drop the removed share's index"),
            Err(e) => warn!(share = name, error = %e, "dropping the removed share's index failed"),
        }
        true
    }
}

/// Applies config edits: when the file's mtime changes, and at once when asked
/// (SIGHUP, or a caller that waits for the report), whatever the mtime says (an
/// edit within the file system's mtime granularity, or a file put back with its
/// old mtime, is still read).
pub(super) async fn config_reload_loop(node: Arc<Node>, mut asks: mpsc::Receiver<Ask>) {
    let path = node.home.config();
    let mut last = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut workers = tokio::task::JoinSet::new();
    // Named once per edit, not again at every later save.
    let mut told: Vec<String> = Vec::new();
    loop {
        let (asked, reply) = tokio::select! {
            _ = node.cancel.cancelled() => break,
            _ = node.reload_now.notified() => (true, None),
            Some(ask) = asks.recv() => (true, Some(ask)),
            _ = tokio::time::sleep(Duration::from_secs(1)) => (false, None),
        };
        let now = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if now == last && !asked {
            continue;
        }
        last = now;
        let done = match Config::load(&path) {
            Ok(cfg) => Ok(apply(&node, cfg, &mut workers, asked, &mut told).await),
            Err(e) => {
                warn!(error = %e, "config changed but does not load; keeping the running config");
                Err(ReloadError::Config(e))
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(done);
        }
    }
    while workers.join_next().await.is_some() {}
}

/// Applies a loaded config to the running node.
async fn apply(
    node: &Arc<Node>,
    cfg: Config,
    workers: &mut tokio::task::JoinSet<()>,
    asked: bool,
    told: &mut Vec<String>,
) -> ReloadReport {
    let ch = diff(&node.running_config(), &cfg);
    // Asked for a reload, the operator hears again what it did not apply.
    for what in ch.needs_restart.iter().filter(|w| asked || !told.contains(w)) {
        warn!("{what} changed in the config; it takes effect when the daemon restarts");
    }
    *told = ch.needs_restart.clone();
    let mut report = ReloadReport { needs_restart: ch.needs_restart, applied: ch.applied, ..Default::default() };
    for name in ch.removed {
        if node.remove_share(&name).await {
            info!(share = %name, "share removed; its files stay where they are");
            report.removed.push(name);
        }
    }
    for s in ch.added {
        let name = s.name.clone();
        info!(share = %name, path = %s.path.display(), "share added");
        match node.add_share(s, workers) {
            Ok(()) => report.added.push(name),
            Err(e) => {
                warn!(share = %name, error = %format!("{e:#}"), "cannot start share");
                report.failed.push(format!("{name}: {e:#}"));
            }
        }
    }
    for s in &ch.reconfigured {
        if let Some(share) = node.share(&s.name) {
            if let Err(e) = share.reconfigure(s) {
                warn!(share = %s.name, error = %format!("{e:#}"), "cannot apply the share's new settings");
                report.failed.push(format!("{}: {e:#}", s.name));
            }
        }
    }
    let (live, n) = (&node.live, &cfg.node);
    let rescan_changed =
        live.rescan_secs.swap(n.rescan_interval.as_secs(), Ordering::Relaxed) != n.rescan_interval.as_secs();
    live.min_free.store(n.min_free_bytes, Ordering::Relaxed);
    live.upload_mbit.store(n.upload_limit_mbit.unwrap_or(0), Ordering::Relaxed);
    node.server.set_upload_limit(n.upload_limit_mbit);
    live.download_mbit.store(n.download_limit_mbit.unwrap_or(0), Ordering::Relaxed);
    live.download.set(n.download_limit_mbit);
    if rescan_changed {
        // Workers wait out the old interval otherwise.
        node.share_list().iter().for_each(|s| s.reconfigured.notify_one());
    }
    if !report.applied.is_empty() {
        info!(applied = ?report.applied, "settings applied");
    }
    report.shares = node.running_config().shares.into_iter().map(|s| s.name).collect();
    if asked {
        info!(added = report.added.len(), removed = report.removed.len(), "config reloaded");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Config {
        Config::parse(t, std::path::Path::new("c")).unwrap()
    }

    const BASE: &str = "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"s\"\npath = \"/s\"\n";

    #[test]
    fn what_can_change_live_is_applied_and_the_rest_is_named() {
        let running = parse(BASE);
        let same = diff(&running, &parse(BASE));
        assert!(same.applied.is_empty() && same.needs_restart.is_empty() && same.added.is_empty());
        let more = diff(&running, &parse(&format!("{BASE}[[share]]\nname = \"t\"\npath = \"/t\"\n")));
        assert_eq!(more.added.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["t"]);
        assert!(more.removed.is_empty() && more.needs_restart.is_empty());
        let none = diff(&running, &parse("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n"));
        assert_eq!(none.removed, vec!["s"]);
        let edited = BASE
            .replace("listen = \"127.0.0.1:1\"", "listen = \"127.0.0.1:1\"\nmetrics_listen = \"127.0.0.1:2\"")
            .replace(
                "name = \"a\"",
                "name = \"a\"\nupload_limit_mbit = 50\ndownload_limit_mbit = 80\nrescan_interval_secs = 60",
            )
            + "ignore = [\"*.log\"]\nschedule = \"0 1 * * *\"\nmin_interval = \"5s\"\n";
        let ch = diff(&running, &parse(&edited));
        assert_eq!(ch.needs_restart, vec!["[node] metrics_listen"]);
        assert_eq!(
            ch.applied,
            vec![
                "[node] rescan_interval_secs",
                "[node] upload_limit_mbit",
                "[node] download_limit_mbit",
                "share \"s\" ignore",
                "share \"s\" schedule",
                "share \"s\" min_interval"
            ]
        );
        assert_eq!(ch.reconfigured.len(), 1);
        let moved =
            diff(&running, &parse(&BASE.replace("/s\"", "/elsewhere\"\nmode = \"send-only\"\ncompression = \"off\"")));
        assert_eq!(moved.needs_restart, vec!["share \"s\" path", "share \"s\" mode", "share \"s\" compression"]);
        assert!(moved.reconfigured.is_empty() && moved.added.is_empty() && moved.removed.is_empty());
    }

    #[test]
    fn live_values_overlay_the_started_config() {
        let started = parse(BASE).node;
        let live = LiveSettings::of(&started);
        assert_eq!(live.overlay(&started).upload_limit_mbit, None);
        live.upload_mbit.store(40, Ordering::Relaxed);
        live.download_mbit.store(30, Ordering::Relaxed);
        live.rescan_secs.store(60, Ordering::Relaxed);
        let now = live.overlay(&started);
        assert_eq!((now.upload_limit_mbit, now.rescan_interval), (Some(40), Duration::from_secs(60)));
        assert_eq!(now.download_limit_mbit, Some(30));
        assert_eq!(now.name, "a");
    }
}
