//! The worker loop of one share: a full scan on a timer, the watcher's paths once
//! quiet, peers' changes as they come, failed actions again after a while, and the
//! transfer window's opening.

use super::pass::{plan_and_apply, remove_stale_temp, run_pass, Pass, RemotePages, PLAN_PAGE};
use super::root::ROOT_RECHECK;
use super::{Node, Share};
use crate::config::schedule::Window;
use crate::relpath::RelPath;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Runs the share until it is removed or the node stops.
pub async fn run(node: Arc<Node>, share: Arc<Share>) {
    let _done = share.worker_done.clone().drop_guard();
    tokio::select! {
        _ = share.stop.cancelled() => {}
        _ = work(node, share.clone()) => {}
        _ = flush_loop(&share) => {}
    }
}

/// Writes the index to disk whenever the share's sequence has moved past what is
/// on disk, and says so (`Share::durable`): one flush for every peer's index
/// sender, and while one runs the changes made meanwhile wait for the next, so
/// a burst of changes leaves in large batches (a sender that flushed for each
/// batch sent 10 entries a batch, 13 000 batches, while two nodes adopted each
/// other's versions of 100 000 files).
async fn flush_loop(share: &Arc<Share>) {
    let mut seq = share.seq.subscribe();
    loop {
        let target = *seq.borrow_and_update();
        if target > *share.durable.borrow() {
            let idx = share.ctx.index.clone();
            match tokio::task::spawn_blocking(move || idx.flush()).await {
                Ok(Ok(())) => {
                    share.durable.send_if_modified(|d| {
                        let moved = target > *d;
                        *d = (*d).max(target);
                        moved
                    });
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "index flush failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            }
            continue;
        }
        if seq.changed().await.is_err() {
            return;
        }
    }
}

/// The worker loop of one share.
async fn work(node: Arc<Node>, share: Arc<Share>) {
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
        // A scan that found too many deletions waits for the user (or for the files
        // to come back) before walking again.
        // (Unless the user just confirmed, or asked for a scan: that asking may have
        // been the wake-up that brought the worker here.)
        let asked = share.scans_asked.load(Ordering::SeqCst) > share.scans_covered.load(Ordering::SeqCst);
        if share.brake_paused() && !asked && !share.deletes_confirmed.load(Ordering::SeqCst) {
            tokio::select! {
                _ = node.cancel.cancelled() => return,
                _ = tokio::time::sleep(BRAKE_RECHECK) => {}
                _ = share.rescan_now.notified() => {}
            }
        }
        if !watch_started || share.ignore_changed.swap(false, Ordering::SeqCst) {
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
        let every = node.live.rescan_interval();
        let interval = if watch.is_some() && !share.watched.degraded() { every } else { every.min(UNWATCHED_RESCAN) };
        // Scan.
        let asked = share.scans_asked.load(Ordering::SeqCst);
        share.scanning.store(true, Ordering::SeqCst);
        // Lost events are covered by this walk. The events seen are kept and
        // scanned after it: a directory made as the walk starts may be read before
        // the files put in it before its own watch existed, and only its event
        // (which scans it whole) finds those.
        share.watched.with(|s, _| s.take_overflow());
        let s2 = share.clone();
        let scan_start = std::time::Instant::now();
        let scanned = tokio::task::spawn_blocking(move || {
            let defer = |p| s2.defer_to_watcher(p);
            s2.scanner(me, &s2.ignore(), &defer).scan()
        })
        .await;
        // A failed walk (root unmounted, index error) is tried again soon, not at the
        // next full scan an hour away.
        let interval = if report_scan(&share, scanned, scan_start) { interval } else { interval.min(UNWATCHED_RESCAN) };
        share.publish_seq();
        share.scans_covered.store(asked, Ordering::SeqCst);
        share.scanning.store(false, Ordering::SeqCst);
        clean_versions(&share).await;
        clean_temp(&share).await;
        purge_tombstones(&node, &share).await;
        // A full plan after every scan retries what failed before (no source, disk full).
        let mut retry = Retry::default();
        let mut was_open = share.may_download();
        if was_open {
            retry.failed(plan_everything(&share).await);
        }
        // What the scan and the plan freed, before the share rests.
        let _ = tokio::task::spawn_blocking(crate::daemon::memory::give_back).await;
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
                share.clear_dirty();
                retry = Retry::default();
                retry.failed(plan_everything(&share).await);
            }
            was_open = open;
            let recheck = window.and_then(window_recheck);
            tokio::select! {
                _ = node.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next_scan) => break,
                _ = share.rescan_now.notified() => break,
                // New settings (a reload): a scan with them, then the new window.
                _ = share.reconfigured.notified() => break,
                // Outside the transfer window peers' changes wait (still marked
                // dirty); the window's opening plans everything.
                _ = share.wake.notified(), if open => {
                    let paths = share.take_dirty(PLAN_PAGE);
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
                    let taken_at = std::time::SystemTime::now();
                    let paths = share.watched.with(|s, now| s.take_due(now));
                    if paths.is_empty() {
                        continue;
                    }
                    debug!(count = paths.len(), "scanning watched paths");
                    let s2 = share.clone();
                    let scan_start = std::time::Instant::now();
                    share.scanning.store(true, Ordering::SeqCst);
                    let scanned_paths = paths.clone();
                    let scanned = tokio::task::spawn_blocking(move || {
                        let defer = |p| s2.defer_to_watcher(p);
                        let ignore = s2.ignore();
                        let scanner = crate::scan::Scanner { taken_at: Some(taken_at), ..s2.scanner(me, &ignore, &defer) };
                        scanner.scan_paths(&scanned_paths)
                    })
                    .await;
                    let ok = report_scan(&share, scanned, scan_start);
                    share.publish_seq();
                    share.scanning.store(false, Ordering::SeqCst);
                    if !ok {
                        // What these paths hold is unknown now: the whole share is.
                        break;
                    }
                    // A local change can turn a conflict this node won (and left to the
                    // loser to resolve) into one it lost, e.g. its winning version
                    // deleted: nothing from the peers changes, so look again here
                    // (found by the convergence suite, seed 45).
                    if open {
                        retry.failed(plan_and_apply(&share, paths).await);
                    }
                }
            }
            // The folder went (unmounted, removed), or a scan found too many deletions.
            if share.root_paused() || share.brake_paused() {
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
    let (root, ignore, pending) = (share.ctx.root.clone(), (*share.ignore()).clone(), share.watched.clone());
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
pub(super) fn downloads_open(window: &Option<Window<chrono::Local>>) -> bool {
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

/// How often a share paused by the delete brake is scanned again (the files may be back).
const BRAKE_RECHECK: Duration = Duration::from_secs(60);

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
    share: &Share,
    scanned: Result<Result<crate::scan::ScanStats, crate::scan::ScanError>, tokio::task::JoinError>,
    start: std::time::Instant,
) -> bool {
    match scanned {
        Ok(Ok(st)) => {
            if st.changed + st.deleted > 0 {
                let secs = format!("{:.2}", start.elapsed().as_secs_f64());
                info!(changed = st.changed, deleted = st.deleted, hashed = st.hashed_bytes, secs, "local changes");
            }
            share.deleted(st.deleted);
            share.brake(None);
            true
        }
        Ok(Err(e @ crate::scan::ScanError::MassDelete { .. })) => {
            share.brake(Some(e.to_string()));
            false
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

/// Removes kept versions past the share's `keep_days`, at each full scan.
async fn clean_versions(share: &Share) {
    let crate::config::Versioning::Trash { keep_days } = share.cfg.versioning else { return };
    let root = share.ctx.root.clone();
    let keep = Duration::from_secs(u64::from(keep_days) * 86_400);
    let cleaned = tokio::task::spawn_blocking(move || {
        crate::transfer::versions::clean(&root, keep, std::time::SystemTime::now())
    })
    .await;
    match cleaned {
        Ok(Ok(0)) | Err(_) => {}
        Ok(Ok(n)) => info!(removed = n, keep_days, "old versions removed"),
        Ok(Err(e)) => warn!(error = %e, "cannot clean old versions"),
    }
}

/// Removes temp files of downloads no longer planned, at start (left by a crash
/// or by a version replaced while the daemon was down) and after each full scan.
/// Those of downloads still planned stay: the next attempt resumes from them.
async fn clean_temp(share: &Arc<Share>) {
    // A folder that is not known to be the share's is not touched.
    if !share.root_ready() || share.brake_paused() {
        return;
    }
    let s2 = share.clone();
    let cleaned = tokio::task::spawn_blocking(move || remove_stale_temp(&s2)).await;
    match cleaned {
        Ok(Ok((0, _))) | Err(_) => {}
        Ok(Ok((n, bytes))) => info!(removed = n, bytes, "temp files of downloads no longer planned removed"),
        Ok(Err(e)) => warn!(error = %e, "cannot clean temp files"),
    }
}

/// Forgets deletes every member has seen, `tombstone_days` after them, at each full scan.
async fn purge_tombstones(node: &Arc<Node>, share: &Arc<Share>) {
    let days = node.config.node.tombstone_days;
    let connected: Vec<crate::ids::NodeId> = share
        .participation()
        .into_iter()
        .filter(|(id, takes_part)| *takes_part && node.peers.is_connected(id))
        .map(|(id, _)| id)
        .collect();
    let s2 = share.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s2.purge_tombstones(days, &connected)).await {
        warn!(error = %e, "cannot purge deleted entries");
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

/// Plans and applies every path a peer holds an entry of, a page at a time;
/// returns the paths whose action failed.
async fn plan_everything(share: &Arc<Share>) -> Vec<RelPath> {
    let mut failed = Vec::new();
    let mut pages = RemotePages::default();
    loop {
        let idx = share.ctx.index.clone();
        let page = match tokio::task::spawn_blocking(move || pages.next(&idx).map(|p| (pages, p))).await {
            Ok(Ok((rest, Some(page)))) => {
                pages = rest;
                page
            }
            Ok(Ok((_, None))) | Err(_) => return failed,
            Ok(Err(e)) => {
                warn!(error = %e, "index read failed");
                return failed;
            }
        };
        failed.extend(plan_and_apply(share, page).await);
    }
}
