//! One share's worker: scans what the file watcher saw change and the whole share
//! on a timer, plans against the peers' indexes, and
//! applies the plan. Scanning and applying never overlap within a share.

use super::Node;
use crate::config::schedule::Window;
use crate::config::ShareConfig;
use crate::ids::NodeId;
use crate::index::{LocalRecord, RootRecord};
use crate::relpath::RelPath;
use crate::scan::marker::{self, Verdict};
use crate::scan::{Ignore, Scanner};
use crate::sync::planner::plan_revert;
use crate::sync::{plan_path, Action};
use crate::transfer::{ApplyError, ShareCtx};
use anyhow::Context;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

/// Files fetched at the same time within one share.
const PARALLEL_FILES: usize = 4;

#[derive(Default)]
struct Dirty {
    paths: BTreeSet<RelPath>,
}

/// Why a share does nothing now; each cause is set and cleared by its own check.
#[derive(Default)]
struct Pauses {
    /// The folder is not known to be the share's (missing, unmarked, moved).
    root: Option<String>,
    /// Not enough free space for the next download.
    disk_full: Option<String>,
}

impl Pauses {
    fn reason(&self) -> Option<String> {
        self.root.clone().or_else(|| self.disk_full.clone())
    }
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
            watched: Default::default(),
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

    /// Why the share is paused, if it is: the first cause that holds.
    pub fn paused(&self) -> Option<String> {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).reason()
    }

    /// True while the share's folder is not known to be the share's (see [`marker`]).
    fn root_paused(&self) -> bool {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).root.is_some()
    }

    /// Checks that the folder is this share's before anything is scanned or written
    /// there; pauses the share (saying why, once) while it is not. True if it is.
    fn root_ready(&self) -> bool {
        let res = self.check_root();
        let mut p = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        match res {
            Ok(()) => {
                if p.root.take().is_some() {
                    info!("the share folder is right again; resuming");
                }
                true
            }
            Err(e) => {
                let why = format!("{e:#}");
                if p.root.as_ref() != Some(&why) {
                    warn!(reason = %why, "share paused");
                }
                p.root = Some(why);
                false
            }
        }
    }

    fn check_root(&self) -> anyhow::Result<()> {
        let (root, name, index) = (&self.ctx.root, &self.cfg.name, &self.ctx.index);
        let found = marker::inspect(root, name)?;
        let recorded = index.root_record()?;
        // Reads the whole index: only when there is no marker and nothing recorded.
        let empty = found.marker.is_none() && recorded.is_none() && index.has_no_live_entries()?;
        match marker::judge(root, &self.mesh, name, &found, recorded.as_ref(), empty)? {
            Verdict::Ok => {}
            Verdict::Record(r) => index.set_root_record(&r)?,
            Verdict::WriteMarker => {
                let m = marker::new_marker(&self.mesh, name);
                marker::write_marker(root, &m)
                    .with_context(|| format!("writing the share marker in {}", root.display()))?;
                index.set_root_record(&RootRecord { marker_id: m.id, filesystem: found.fs })?;
                info!(path = %root.display(), "marked the folder as this share's");
            }
        }
        Ok(())
    }

    /// The user confirmed the share's folder as it is now (`meshsync share resume`):
    /// it is marked as this share's, on the filesystem it is on now, and scanned.
    pub fn resume(&self) -> anyhow::Result<()> {
        let (root, name) = (&self.ctx.root, &self.cfg.name);
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("{} is not a directory", root.display()),
            Err(e) => anyhow::bail!("{}: {e}; create or mount the folder first", root.display()),
        }
        let keep = match marker::read_marker(root, name) {
            Ok(Some(m)) if m.mesh == self.mesh && &m.share == name => Some(m),
            Ok(Some(m)) => anyhow::bail!(
                "{} is marked as share {:?} of {}; not taking it over (pick another folder)",
                root.display(),
                m.share,
                if m.mesh == self.mesh { "this mesh" } else { "another mesh" }
            ),
            // Damaged or missing: written anew.
            Ok(None) | Err(_) => None,
        };
        let m = keep.unwrap_or_else(|| marker::new_marker(&self.mesh, name));
        marker::write_marker(root, &m).with_context(|| format!("writing the share marker in {}", root.display()))?;
        let filesystem = marker::filesystem_of(root).with_context(|| format!("reading {}", root.display()))?;
        self.ctx.index.set_root_record(&RootRecord { marker_id: m.id, filesystem })?;
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).root = None;
        info!(path = %root.display(), "share folder confirmed by the user; resuming");
        self.rescan();
        Ok(())
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

/// The worker loop of one share.
pub async fn run(node: Arc<Node>, share: Arc<Share>) {
    let me = node.ident.id.short();
    let mut watch = None;
    let mut watch_started = false;
    loop {
        // Nothing is scanned or written until the folder is known to be the share's.
        if !share.root_ready() {
            (watch, watch_started) = (None, false);
            // A `meshsync rescan` asked meanwhile was answered with the pause.
            share.scans_covered.store(share.scans_asked.load(Ordering::SeqCst), Ordering::SeqCst);
            tokio::select! {
                _ = node.cancel.cancelled() => return,
                _ = tokio::time::sleep(ROOT_RECHECK) => {}
                _ = share.rescan_now.notified() => {}
            }
            continue;
        }
        if !watch_started {
            watch = start_watch(&share).await;
            watch_started = true;
        }
        // A root deleted and made again, or mounted over, took its watches with it.
        if watch.as_ref().is_some_and(|(_, id)| root_id(&share.ctx.root) != Some(*id)) {
            info!("the share folder was replaced; watching it again");
            watch = start_watch(&share).await;
        }
        // Without a working watch, changes are found by full scans only: often, as
        // before watching existed, rather than hourly.
        let interval = if watch.is_some() && !share.watched.degraded() {
            node.config.node.rescan_interval
        } else {
            node.config.node.rescan_interval.min(UNWATCHED_RESCAN)
        };
        // Scan.
        let asked = share.scans_asked.load(Ordering::SeqCst);
        share.scanning.store(true, Ordering::SeqCst);
        // Everything the watcher saw so far is covered by this walk.
        share.watched.with(|s, _| {
            s.clear();
            s.take_overflow();
        });
        let s2 = share.clone();
        let scan_start = std::time::Instant::now();
        let scanned = tokio::task::spawn_blocking(move || s2.scanner(me).scan()).await;
        // A failed walk (root unmounted, index error) is tried again soon, not at the
        // next full scan an hour away.
        let interval = if report_scan(scanned, scan_start) { interval } else { interval.min(UNWATCHED_RESCAN) };
        share.publish_seq();
        share.scans_covered.store(asked, Ordering::SeqCst);
        share.scanning.store(false, Ordering::SeqCst);
        // A full plan after every scan retries what failed before (no source, disk full).
        let mut retry = Retry::default();
        let mut was_open = share.may_download();
        if was_open {
            retry.failed(plan_and_apply(&share, all_remote_paths(&share)).await);
        }
        // Then follow peers' announcements and local events until the next scan is due.
        let next_scan = tokio::time::Instant::now() + interval;
        loop {
            let due = share.watched.next_due();
            // Whichever branch noticed it, a window that opened since the last pass
            // plans everything held back while it was closed.
            // One reading of the clock for both: read twice, a window opening in
            // between would leave it closed with nothing to look at it again.
            let window = share.window();
            let open = downloads_open(&window);
            if open && !was_open {
                info!("transfer window open");
                share.take_dirty();
                retry = Retry::default();
                retry.failed(plan_and_apply(&share, all_remote_paths(&share)).await);
            }
            was_open = open;
            let recheck = window.and_then(window_recheck);
            tokio::select! {
                _ = node.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next_scan) => break,
                _ = share.rescan_now.notified() => break,
                // Outside the transfer window peers' changes wait (still marked
                // dirty); the window's opening plans everything.
                _ = share.wake.notified(), if open => {
                    let paths = share.take_dirty();
                    retry.failed(plan_and_apply(&share, paths).await);
                }
                _ = share.revert_now.notified() => {
                    let paths = local_change_paths(&share);
                    info!(count = paths.len(), "reverting local changes to the mesh's versions");
                    retry.failed(run_pass(&share, paths, Pass::Revert).await);
                }
                _ = sleep_until_some(retry.at), if open => {
                    let paths = retry.take();
                    retry.failed(plan_and_apply(&share, paths).await);
                }
                // The next pass sees whether the window opened.
                _ = sleep_until_some(recheck) => {}
                // A new event: the loop recomputes when the next path is due.
                _ = share.watched.wake.notified() => {
                    if share.watched.with(|s, _| s.take_overflow()) {
                        info!("file events were lost; scanning the whole share");
                        break;
                    }
                }
                _ = sleep_until_some(due) => {
                    let paths = share.watched.with(|s, now| s.take_due(now, crate::watch::SETTLE));
                    if paths.is_empty() {
                        continue;
                    }
                    let s2 = share.clone();
                    let scan_start = std::time::Instant::now();
                    share.scanning.store(true, Ordering::SeqCst);
                    let scanned = tokio::task::spawn_blocking(move || s2.scanner(me).scan_paths(&paths)).await;
                    let ok = report_scan(scanned, scan_start);
                    share.publish_seq();
                    share.scanning.store(false, Ordering::SeqCst);
                    if !ok {
                        // What these paths hold is unknown now: the whole share is.
                        break;
                    }
                }
            }
            // The folder went (unmounted, removed) while following changes.
            if share.root_paused() {
                break;
            }
        }
    }
}

/// Watches the share's folder, with the (device, inode) it had when the watch
/// started; `None` if it cannot be watched (the share is then scanned often).
async fn start_watch(share: &Arc<Share>) -> Option<(crate::watch::ShareWatch, (u64, u64))> {
    // Putting a watch on every directory of a large share takes a while: not on a
    // runtime thread.
    let (root, ignore, pending) = (share.ctx.root.clone(), share.ignore.clone(), share.watched.clone());
    let started = tokio::task::spawn_blocking(move || {
        let id = root_id(&root);
        crate::watch::ShareWatch::start(&root, ignore, pending).map(|w| (w, id))
    })
    .await;
    match started {
        Ok(Ok((w, Some(id)))) => Some((w, id)),
        Ok(Ok((_, None))) => {
            warn!(
                "the share folder vanished while its watch started; rescanning every {} s",
                UNWATCHED_RESCAN.as_secs()
            );
            None
        }
        Ok(Err(e)) => {
            warn!(error = %e, "local changes are found by rescanning every {} s", UNWATCHED_RESCAN.as_secs());
            None
        }
        Err(e) => {
            warn!(error = %e, "starting the file watch failed; rescanning every {} s", UNWATCHED_RESCAN.as_secs());
            None
        }
    }
}

/// The (device, inode) of a folder, if it is there.
fn root_id(root: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(root).ok().map(|m| (m.dev(), m.ino()))
}

/// True unless a schedule's window is closed.
fn downloads_open(window: &Option<Window<chrono::Local>>) -> bool {
    !matches!(window, Some(Window::Closed { .. }))
}

/// While the transfer window is closed, when to look at it again: at its opening,
/// but at least every [`WINDOW_RECHECK`] (the deadline is wall-clock time, slept on
/// a monotonic timer that a suspend or a clock step leaves behind) and not sooner
/// than a second (an opening already past must not spin).
fn window_recheck(window: Window<chrono::Local>) -> Option<tokio::time::Instant> {
    let wait = match window {
        Window::Open { .. } => return None,
        Window::Closed { opens: Some(at) } => (at - chrono::Local::now()).to_std().unwrap_or_default(),
        Window::Closed { opens: None } => WINDOW_RECHECK,
    };
    Some(tokio::time::Instant::now() + wait.clamp(Duration::from_secs(1), WINDOW_RECHECK))
}

/// How often a closed transfer window is looked at, at most.
const WINDOW_RECHECK: Duration = Duration::from_secs(60);

/// How long after a failed action (no source reachable, disk full) it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Paths whose action failed, and when to try them again: the full rescan that
/// used to retry them is hourly now that the watcher finds local changes.
#[derive(Default)]
struct Retry {
    paths: BTreeSet<RelPath>,
    at: Option<tokio::time::Instant>,
}

impl Retry {
    fn failed(&mut self, paths: Vec<RelPath>) {
        if !paths.is_empty() {
            self.paths.extend(paths);
            self.at.get_or_insert_with(|| tokio::time::Instant::now() + RETRY_AFTER);
        }
    }

    fn take(&mut self) -> Vec<RelPath> {
        self.at = None;
        std::mem::take(&mut self.paths).into_iter().collect()
    }
}

/// How often a paused share's folder is looked at again.
const ROOT_RECHECK: Duration = Duration::from_secs(5);

/// How often a share without a file watch is scanned, at most.
const UNWATCHED_RESCAN: Duration = Duration::from_secs(10);

/// Sleeps until `at`, or forever if there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs what a scan found or why it failed; returns whether it succeeded.
fn report_scan(
    scanned: Result<Result<crate::scan::ScanStats, crate::scan::ScanError>, tokio::task::JoinError>,
    start: std::time::Instant,
) -> bool {
    match scanned {
        Ok(Ok(st)) => {
            if st.changed + st.deleted > 0 {
                let secs = format!("{:.2}", start.elapsed().as_secs_f64());
                info!(changed = st.changed, deleted = st.deleted, hashed = st.hashed_bytes, secs, "local changes");
            }
            true
        }
        // The worker's root check says why, once.
        Ok(Err(e @ crate::scan::ScanError::Root(_))) => {
            debug!(error = %e, "scan refused");
            false
        }
        Ok(Err(e)) => {
            warn!(error = %e, "scan failed");
            false
        }
        Err(e) => {
            warn!(error = %e, "scan task failed");
            false
        }
    }
}

fn local_change_paths(share: &Share) -> Vec<RelPath> {
    match share.ctx.index.all() {
        Ok(all) => all.into_iter().filter(|r| r.local_change).map(|r| r.entry.path).collect(),
        Err(e) => {
            warn!(error = %e, "index read failed");
            Vec::new()
        }
    }
}

fn all_remote_paths(share: &Share) -> Vec<RelPath> {
    let mut set: BTreeSet<RelPath> = BTreeSet::new();
    match share.ctx.index.all_remote() {
        Ok(all) => set.extend(all.into_iter().map(|(_, e)| e.path)),
        Err(e) => warn!(error = %e, "index read failed"),
    }
    set.into_iter().collect()
}

/// Which planner a pass over paths uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Follow the mesh, keeping local changes.
    Sync,
    /// `meshsync revert`: the mesh's version replaces each local change.
    Revert,
}

fn plan(share: &Share, paths: &[RelPath], pass: Pass) -> Vec<Action> {
    let mut actions = Vec::new();
    for p in paths {
        let local: Option<LocalRecord> = share.ctx.index.get(p).ok().flatten();
        let remotes = share.ctx.index.remote_for(p).unwrap_or_default();
        let action = match pass {
            Pass::Sync => plan_path(local.as_ref(), &remotes, share.cfg.mode),
            Pass::Revert => local.as_ref().and_then(|l| plan_revert(l, &remotes)),
        };
        actions.extend(action);
    }
    actions.sort_by_key(|a| a.order_key());
    actions
}

/// Plans `paths` against the peers' indexes and applies the plan; returns the paths
/// whose action failed, to be tried again.
async fn plan_and_apply(share: &Arc<Share>, paths: Vec<RelPath>) -> Vec<RelPath> {
    run_pass(share, paths, Pass::Sync).await
}

/// Plans `paths` with the planner of `pass` and applies the plan; returns the
/// paths whose action failed, to be tried again.
async fn run_pass(share: &Arc<Share>, paths: Vec<RelPath>, pass: Pass) -> Vec<RelPath> {
    let mut failed = Vec::new();
    if paths.is_empty() {
        return failed;
    }
    // Nothing is written into a folder that is not known to be the share's (an
    // empty mount point would take the files and hide them under the disk).
    if !share.root_ready() {
        return paths;
    }
    let s2 = share.clone();
    let actions = match tokio::task::spawn_blocking(move || plan(&s2, &paths, pass)).await {
        Ok(a) => a,
        Err(_) => return failed,
    };
    if actions.is_empty() {
        return failed;
    }
    debug!(count = actions.len(), "applying");
    let mut disk_full = None;
    let mut i = 0;
    while i < actions.len() {
        let class = actions[i].order_key().0;
        let mut j = i;
        while j < actions.len() && actions[j].order_key().0 == class {
            j += 1;
        }
        // Content actions run in parallel; directory and delete steps in order.
        let batch: Vec<Action> = actions[i..j].to_vec();
        let parallel = if class == 1 { PARALLEL_FILES } else { 1 };
        let mut set = tokio::task::JoinSet::new();
        let mut queue = batch.into_iter();
        loop {
            while set.len() < parallel {
                // The transfer window closed: what has started finishes, the rest waits.
                if !share.may_download() {
                    failed.extend(queue.by_ref().map(|a| a.path().clone()));
                    break;
                }
                let Some(a) = queue.next() else { break };
                let ctx = share.ctx.clone();
                set.spawn(async move {
                    let p = a.path().clone();
                    (p, ctx.execute(a).await)
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let Ok((path, res)) = res else { continue };
            match res {
                Ok(()) => {
                    share.publish_seq();
                    continue;
                }
                Err(e @ ApplyError::DiskFull { .. }) => {
                    disk_full = Some(e.to_string());
                }
                Err(e @ (ApplyError::NoSource(_) | ApplyError::LocalChanged(_))) => {
                    debug!(path = %path, error = %e, "not applied yet; retried shortly");
                }
                Err(e) => {
                    warn!(path = %path, error = %e, "not applied; retried shortly");
                }
            }
            failed.push(path);
        }
        i = j;
    }
    let mut pauses = share.pauses.lock().unwrap_or_else(|e| e.into_inner());
    match (&disk_full, pauses.disk_full.is_some()) {
        (Some(m), false) => warn!(reason = %m, "share paused until space is free"),
        (None, true) => info!("space is free again; share resumed"),
        _ => {}
    }
    pauses.disk_full = disk_full;
    failed
}
