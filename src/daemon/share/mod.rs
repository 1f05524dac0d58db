//! One share: its state and the commands on it. `worker` runs it (scans, plans,
//! applies; never two at once), `pass` plans and applies a set of paths, `root`
//! keeps it from touching a folder that is not the share's.

use super::Node;
use crate::config::schedule::Window;
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

mod pass;
mod root;
mod worker;

use root::Pauses;
use worker::downloads_open;
pub use worker::run;

#[derive(Default)]
struct Dirty {
    paths: BTreeSet<RelPath>,
}

/// A share taken part in by this node.
pub struct Share {
    /// Its config.
    pub cfg: ShareConfig,
    /// What the executor needs (index, root, peers...).
    pub ctx: ShareCtx,
    /// The newest local sequence; index senders wait on it.
    pub seq: watch::Sender<u64>,
    /// Why the share is paused, if it is.
    pauses: Mutex<Pauses>,
    /// The mesh, as share markers name it.
    mesh: String,
    ignore: Ignore,
    dirty: Mutex<Dirty>,
    wake: Notify,
    rescan_now: Notify,
    revert_now: Notify,
    /// Scans asked for (`meshsync rescan`) and the last one a finished scan covered:
    /// `meshsync wait` right after `rescan` must not see the mesh caught up before
    /// the scan has even looked.
    scans_asked: AtomicU64,
    scans_covered: AtomicU64,
    scanning: AtomicBool,
    /// Local changes the file watcher saw that are not scanned yet.
    pub watched: Arc<crate::watch::Pending>,
    /// Whether each peer's last Hello (or a later `ShareAdded`) named this share: a
    /// peer with an empty copy never sends an index, and `meshsync wait` must wait
    /// for it too; one that left the share keeps its old entries in the index but
    /// is not waited for. In memory only: known again when the peer next connects.
    participants: Mutex<HashMap<NodeId, bool>>,
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
        let watched: Arc<crate::watch::Pending> = Default::default();
        Ok(Self {
            ctx: ShareCtx {
                name: cfg.name.clone(),
                root: cfg.path.clone(),
                index,
                mode: cfg.mode,
                min_free: node.config.node.min_free_bytes,
                peers: node.peers.clone(),
                counters: node.counters.clone(),
                progress: node.progress.clone(),
                partial: Default::default(),
                announced: Default::default(),
                announce: node.announce.clone(),
                watched: watched.clone(),
            },
            cfg,
            seq,
            pauses: Mutex::new(Pauses::default()),
            mesh: data_encoding::HEXLOWER.encode(&node.ident.ca_fingerprint()),
            ignore,
            dirty: Mutex::new(Dirty::default()),
            wake: Notify::new(),
            rescan_now: Notify::new(),
            revert_now: Notify::new(),
            scans_asked: AtomicU64::new(0),
            scans_covered: AtomicU64::new(0),
            scanning: AtomicBool::new(false),
            watched,
            participants: Mutex::new(HashMap::new()),
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
    pub fn rescan(&self) {
        self.scans_asked.fetch_add(1, Ordering::SeqCst);
        self.rescan_now.notify_one();
    }

    /// Puts the mesh's version back over every local change (`meshsync revert`);
    /// returns how many there are.
    pub fn revert(&self) -> anyhow::Result<usize> {
        if self.cfg.mode != crate::config::ShareMode::ReceiveOnly {
            anyhow::bail!(
                "share {} is {}: only a receive-only share keeps local changes",
                self.cfg.name,
                self.cfg.mode.as_str()
            );
        }
        let n = self.ctx.index.all()?.iter().filter(|r| r.local_change).count();
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
        self.cfg.schedule.as_ref().map(|s| s.at(&chrono::Local::now()))
    }

    /// True if downloads may start now (no schedule, or inside a window).
    pub fn may_download(&self) -> bool {
        downloads_open(&self.window())
    }

    /// Records whether `peer` said (in its Hello or later) that it takes part in this share.
    pub fn set_participant(&self, peer: NodeId, takes_part: bool) {
        self.participants.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, takes_part);
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

    fn take_dirty(&self) -> Vec<RelPath> {
        std::mem::take(&mut self.dirty.lock().unwrap_or_else(|e| e.into_inner()).paths).into_iter().collect()
    }

    fn scanner(&self, me: crate::ids::ShortId) -> Scanner<'_> {
        Scanner {
            name: &self.cfg.name,
            root: &self.ctx.root,
            index: &self.ctx.index,
            me,
            mode: self.cfg.mode,
            ignore: &self.ignore,
        }
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
