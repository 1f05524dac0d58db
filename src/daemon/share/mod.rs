//! One share: its state and the commands on it. `worker` runs it (scans, plans,
//! applies; never two at once), `pass` plans and applies a set of paths, `root`
//! keeps it from touching a folder that is not the share's.

use super::Node;
use crate::config::schedule::{Schedule, Window};
use crate::config::ShareConfig;
use crate::ids::NodeId;
use crate::relpath::RelPath;
use crate::scan::{Ignore, Scanner};
use crate::transfer::ShareCtx;
use anyhow::Context;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::info;

mod pass;
mod root;
mod tombstones;
mod worker;

use root::Pauses;
use worker::downloads_open;
pub use worker::run;

/// How long deletions count against the delete brake: a large delete the watcher
/// reports in several batches is judged as one.
const RECENT_DELETES: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct Dirty {
    paths: BTreeSet<RelPath>,
}

/// What a reload changes in a running share.
struct Settings {
    /// The configured ignore patterns.
    patterns: Vec<String>,
    /// Them compiled, with the built-in ones.
    ignore: Arc<Ignore>,
    /// When downloads may start.
    schedule: Option<Schedule>,
    /// Least time between two scans of one changed path.
    min_interval: std::time::Duration,
}

/// A share taken part in by this node.
pub struct Share {
    /// Its config as started. Name, path and mode never change while it runs;
    /// ignore rules, schedule and `min_interval` do (a reload): read
    /// [`Share::ignore`], [`Share::schedule`] and [`Share::live_config`].
    pub cfg: ShareConfig,
    /// What the executor needs (index, root, peers...).
    pub ctx: ShareCtx,
    /// The newest local sequence.
    pub seq: watch::Sender<u64>,
    /// The newest local sequence on disk; index senders wait on it (see `worker::flush_loop`).
    pub durable: watch::Sender<u64>,
    /// Why the share is paused, if it is.
    pauses: Mutex<Pauses>,
    /// The mesh, as share markers name it.
    mesh: String,
    settings: Mutex<Settings>,
    /// The ignore rules changed: the file watch must start again with them.
    ignore_changed: AtomicBool,
    /// Settings changed (or the node's rescan interval): the worker scans again.
    pub(super) reconfigured: Notify,
    /// Stops the worker: the share was removed (or the node stops).
    pub(super) stop: CancellationToken,
    /// Cancelled when the worker has stopped.
    pub(super) worker_done: CancellationToken,
    dirty: Mutex<Dirty>,
    wake: Notify,
    rescan_now: Notify,
    revert_now: Notify,
    /// Scans asked for (`meshsync rescan`) and the last one a finished scan covered:
    /// `meshsync wait` right after `rescan` must not see the mesh caught up before
    /// the scan has even looked.
    scans_asked: AtomicU64,
    scans_covered: AtomicU64,
    /// The user confirmed the deletions a scan found (`share confirm-deletes`): the
    /// next scan records them whatever their number.
    deletes_confirmed: AtomicBool,
    /// Deletions recorded by recent scans, with when (see `Scanner::recent_deletes`).
    recent_deletes: Mutex<std::collections::VecDeque<(std::time::Instant, usize)>>,
    scanning: AtomicBool,
    /// Local changes the file watcher saw that are not scanned yet.
    pub watched: Arc<crate::watch::Pending>,
    /// Whether each peer's last Hello (or a later `ShareAdded`) named this share: a
    /// peer with an empty copy never sends an index, and `meshsync wait` must wait
    /// for it too; one that left the share keeps its old entries in the index but
    /// is not waited for. In memory only: known again when the peer next connects.
    participants: Mutex<HashMap<NodeId, bool>>,
    /// Peers asked for their whole index during this node's re-check after a long
    /// absence (see `tombstones`).
    recheck_asked: Mutex<std::collections::HashSet<NodeId>>,
    /// The last status summary of this share.
    pub status_cache: super::summary::SummaryCache,
}

impl Share {
    /// Opens the share's index trees. The folder is not created: a missing one is an
    /// unmounted disk until the user says otherwise, and pauses the share.
    pub fn open(node: &Node, cfg: ShareConfig) -> anyhow::Result<Self> {
        let index = node.index.share(&cfg.name)?;
        let ignore = Ignore::new(&cfg.ignore).with_context(|| format!("ignore patterns of share {}", cfg.name))?;
        let seq = watch::channel(index.max_seq()?).0;
        // What the index holds when opened is on disk.
        let durable = watch::channel(index.max_seq()?).0;
        let watched: Arc<crate::watch::Pending> = Default::default();
        watched.set_min_interval(cfg.min_interval);
        let settings = Mutex::new(Settings {
            patterns: cfg.ignore.clone(),
            ignore: Arc::new(ignore),
            schedule: cfg.schedule.clone(),
            min_interval: cfg.min_interval,
        });
        Ok(Self {
            ctx: ShareCtx {
                name: cfg.name.clone(),
                root: cfg.path.clone(),
                index,
                mode: cfg.mode,
                min_free: node.live.min_free.clone(),
                download_limit: node.live.download.clone(),
                peers: node.peers.clone(),
                counters: node.counters.clone(),
                progress: node.progress.clone(),
                partial: Default::default(),
                announced: Default::default(),
                announce: node.announce.clone(),
                watched: watched.clone(),
                versioning: cfg.versioning,
                compression: cfg.compression,
            },
            cfg,
            seq,
            durable,
            pauses: Mutex::new(Pauses::default()),
            mesh: data_encoding::HEXLOWER.encode(&node.ident.ca_fingerprint()),
            settings,
            ignore_changed: AtomicBool::new(false),
            reconfigured: Notify::new(),
            stop: node.cancel.child_token(),
            worker_done: CancellationToken::new(),
            dirty: Mutex::new(Dirty::default()),
            wake: Notify::new(),
            rescan_now: Notify::new(),
            revert_now: Notify::new(),
            scans_asked: AtomicU64::new(0),
            scans_covered: AtomicU64::new(0),
            deletes_confirmed: AtomicBool::new(false),
            recent_deletes: Mutex::default(),
            scanning: AtomicBool::new(false),
            watched,
            participants: Mutex::new(HashMap::new()),
            recheck_asked: Default::default(),
            status_cache: Default::default(),
        })
    }

    /// Asks the worker to re-plan these paths (a peer announced changes).
    pub fn mark_dirty(&self, paths: Vec<RelPath>) {
        if paths.is_empty() {
            return;
        }
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).paths.extend(paths);
        self.wake.notify_one();
    }

    /// Starts a scan now instead of at the next interval (`meshsync rescan`).
    /// The user confirms the deletions that paused the share: the next scan records
    /// them, and the share resumes. An error if it was not paused for that.
    pub fn confirm_deletes(&self) -> anyhow::Result<()> {
        if self.pauses.lock().unwrap_or_else(|e| e.into_inner()).mass_delete.is_none() {
            anyhow::bail!("share {} is not paused for deletions; nothing to confirm", self.cfg.name);
        }
        self.deletes_confirmed.store(true, Ordering::SeqCst);
        info!("deletions confirmed by the user; scanning");
        self.rescan();
        Ok(())
    }

    /// Deletions recorded within the last [`RECENT_DELETES`].
    fn recent_deletes(&self) -> usize {
        let mut r = self.recent_deletes.lock().unwrap_or_else(|e| e.into_inner());
        while r.front().is_some_and(|(t, _)| t.elapsed() > RECENT_DELETES) {
            r.pop_front();
        }
        r.iter().map(|(_, n)| n).sum()
    }

    /// Notes deletions a scan recorded.
    fn deleted(&self, n: usize) {
        if n > 0 {
            self.recent_deletes.lock().unwrap_or_else(|e| e.into_inner()).push_back((std::time::Instant::now(), n));
        }
    }

    /// Starts a scan now instead of at the next interval (`meshsync rescan`).
    pub fn rescan(&self) {
        self.scans_asked.fetch_add(1, Ordering::SeqCst);
        self.rescan_now.notify_one();
    }

    /// Puts the mesh's version back over every local change (`meshsync revert`);
    /// returns how many there are.
    pub fn revert(&self) -> anyhow::Result<usize> {
        let n = self.ctx.index.all()?.iter().filter(|r| r.local_change).count();
        // Other shares have local changes only from a return after a long absence
        // (files the mesh deleted and forgot meanwhile, see `tombstones`).
        if self.cfg.mode != crate::config::ShareMode::ReceiveOnly && n == 0 {
            anyhow::bail!(
                "share {} is {}: it keeps no local changes (a receive-only share does)",
                self.cfg.name,
                self.cfg.mode.as_str()
            );
        }
        self.revert_now.notify_one();
        Ok(n)
    }

    /// True while a scan runs, one asked for has not finished, or the watcher saw
    /// changes not scanned yet.
    pub fn scanning(&self) -> bool {
        self.scanning.load(Ordering::SeqCst)
            || self.scans_asked.load(Ordering::SeqCst) > self.scans_covered.load(Ordering::SeqCst)
            || !self.watched.with(|s, _| s.is_empty())
    }

    /// The share's transfer window now; `None` without a schedule.
    pub fn window(&self) -> Option<Window<chrono::Local>> {
        self.schedule().map(|s| s.at(&chrono::Local::now()))
    }

    /// Its transfer schedule now.
    pub fn schedule(&self) -> Option<Schedule> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).schedule.clone()
    }

    /// Its ignore rules now.
    pub fn ignore(&self) -> Arc<Ignore> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).ignore.clone()
    }

    /// Its config as it runs now.
    pub fn live_config(&self) -> ShareConfig {
        let st = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        ShareConfig {
            ignore: st.patterns.clone(),
            schedule: st.schedule.clone(),
            min_interval: st.min_interval,
            ..self.cfg.clone()
        }
    }

    /// Takes new ignore rules, schedule and `min_interval` (a reload); the worker
    /// then watches the folder with them and scans it again.
    pub fn reconfigure(&self, cfg: &ShareConfig) -> anyhow::Result<()> {
        let mut st = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if st.patterns != cfg.ignore {
            let ignore = Ignore::new(&cfg.ignore).with_context(|| format!("ignore patterns of share {}", cfg.name))?;
            (st.patterns, st.ignore) = (cfg.ignore.clone(), Arc::new(ignore));
            self.ignore_changed.store(true, Ordering::SeqCst);
        }
        st.schedule = cfg.schedule.clone();
        st.min_interval = cfg.min_interval;
        self.watched.set_min_interval(cfg.min_interval);
        self.reconfigured.notify_one();
        Ok(())
    }

    /// True if downloads may start now (no schedule, or inside a window).
    pub fn may_download(&self) -> bool {
        downloads_open(&self.window())
    }

    /// Records whether `peer` said (in its Hello or later) that it takes part in this share.
    pub fn set_participant(&self, peer: NodeId, takes_part: bool) {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, takes_part);
    }

    /// Forgets what `peer` said of this share (it left the mesh).
    pub fn forget_participant(&self, peer: &NodeId) {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
    }

    /// Drops everything this share knows of `peer` (removed from the mesh, or no
    /// longer admitted to the share): its index, its download progress, what it said.
    pub async fn forget_peer(&self, peer: NodeId) {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
        self.ctx.announced.forget_peer(&peer);
        let idx = self.ctx.index.clone();
        match tokio::task::spawn_blocking(move || idx.forget_peer(&peer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(share = %self.cfg.name, error = %e, "cannot forget a peer's index"),
            Err(e) => tracing::warn!(share = %self.cfg.name, error = %e, "cannot forget a peer's index"),
        }
    }

    /// What each peer said, when it last connected since this daemon started, of
    /// taking part in this share.
    pub fn participation(&self) -> HashMap<NodeId, bool> {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Up to `limit` of the paths to re-plan, in order; if more are left, the
    /// worker is woken again for them. A page at a time: while two nodes exchange
    /// the index of a million files, paths come in faster than they are planned,
    /// and each page's plan holds its paths' entries (see `pass::run_pass`).
    fn take_dirty(&self, limit: usize) -> Vec<RelPath> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let page: Vec<RelPath> = std::iter::from_fn(|| dirty.paths.pop_first()).take(limit).collect();
        if !dirty.paths.is_empty() {
            self.wake.notify_one();
        }
        page
    }

    /// Forgets the paths to re-plan (a full plan follows).
    fn clear_dirty(&self) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).paths.clear();
    }

    fn scanner<'a>(&'a self, me: crate::ids::ShortId, ignore: &'a Ignore, defer: &'a dyn Fn(RelPath)) -> Scanner<'a> {
        Scanner {
            name: &self.cfg.name,
            root: &self.ctx.root,
            index: &self.ctx.index,
            me,
            mode: self.cfg.mode,
            ignore,
            brake: (!self.deletes_confirmed.load(Ordering::SeqCst)).then_some(self.cfg.max_delete),
            recent_deletes: self.recent_deletes(),
            defer: Some(defer),
            taken_at: None,
        }
    }

    /// Hands a path a walk found changed a moment ago to the watcher, as a change
    /// still under way (see `scan::RECENT`).
    fn defer_to_watcher(&self, path: RelPath) {
        self.watched.with(|s, now| s.record(path, crate::watch::Change::Busy, now));
    }

    fn publish_seq(&self) {
        if let Ok(s) = self.ctx.index.max_seq() {
            self.seq.send_if_modified(|v| {
                let changed = *v != s;
                *v = s;
                changed
            });
        }
    }
}
