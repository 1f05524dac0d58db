//! One pass over a set of paths: plan each against the peers' entries, then carry
//! the actions out (directories first, files in parallel, deletes last).

use super::Share;
use crate::index::{IndexError, LocalRecord, ShareIndex};
use crate::relpath::RelPath;
use crate::sync::batch::{self, Job};
use crate::sync::planner::plan_revert;
use crate::sync::{plan_path, Action};
use crate::transfer::ApplyError;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Files fetched at the same time within one share (each its own swarm download).
const PARALLEL_FILES: usize = 4;
/// Batches of small files fetched and placed at the same time within one share,
/// beside those: a batch spends most of its time in the file system's calls, one
/// after another, so several keep both the network and the disk busy.
const PARALLEL_BATCHES: usize = 8;
/// Actions that need no peer, carried out on one thread at a time.
const LOCAL_BATCH: usize = 256;

/// Which planner a pass over paths uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
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
    // Cached: the key clones the path, and a pass may hold 100,000 actions.
    actions.sort_by_cached_key(|a| a.order_key());
    actions
}

/// The paths a job is about.
fn job_paths(job: Job) -> Vec<RelPath> {
    match job {
        Job::One(a) => vec![a.path().clone()],
        Job::Batch(b) => b.iter().map(|a| a.path().clone()).collect(),
    }
}

/// Plans `paths` against the peers' indexes and applies the plan; returns the paths
/// whose action failed, to be tried again.
pub(super) async fn plan_and_apply(share: &Arc<Share>, paths: Vec<RelPath>) -> Vec<RelPath> {
    run_pass(share, paths, Pass::Sync).await
}

/// Plans `paths` with the planner of `pass` and applies the plan, a page of
/// [`PLAN_PAGE`] paths at a time; returns the paths whose action failed, to be
/// tried again.
///
/// A page at a time because a plan holds each path's entries: two nodes that
/// exchanged the index of a million files had 100,000s of paths to plan, and all
/// their actions at once made most of an 860-997 MiB peak (heaptrack), which the
/// allocator did not give back afterwards. Paths come in order, so a directory is
/// planned in the page of its first file or before it.
pub(super) async fn run_pass(share: &Arc<Share>, paths: Vec<RelPath>, pass: Pass) -> Vec<RelPath> {
    let mut out = PassOutcome::default();
    // Whether anything was tried: only then does the pass say if the disk is full.
    let mut acted = false;
    let mut round = paths;
    // Each round plans again the directories whose files the one before deleted:
    // a directory sorts before its files, so its delete may have come in an
    // earlier page or pass (its peer's index batch came first) and found them
    // still there. Parents are shallower than their files, so the rounds end.
    while !round.is_empty() {
        let mut paths = round.into_iter().peekable();
        while paths.peek().is_some() {
            // Nothing is written into a folder that is not known to be the share's
            // (an empty mount point would take the files and hide them under the
            // disk). Nor while a scan found more deletions than it may record:
            // whatever caused them (a half-mounted disk, a script gone astray) is
            // the user's to judge first.
            if !share.root_ready() || share.brake_paused() {
                out.failed.extend(paths);
                return out.failed;
            }
            // The transfer window closed: the rest waits for it.
            if !share.may_download() {
                out.failed.extend(paths);
                let parents = std::mem::take(&mut out.parents);
                out.failed.extend(parents);
                break;
            }
            let page: Vec<RelPath> = paths.by_ref().take(PLAN_PAGE).collect();
            acted |= run_page(share, page, pass, &mut out).await;
        }
        round = std::mem::take(&mut out.parents).into_iter().collect();
    }
    if !acted {
        return out.failed;
    }
    let mut pauses = share.pauses.lock().unwrap_or_else(|e| e.into_inner());
    match (&out.disk_full, pauses.disk_full.is_some()) {
        (Some(m), false) => warn!(reason = %m, "share paused until space is free"),
        (None, true) => info!("space is free again; share resumed"),
        _ => {}
    }
    pauses.disk_full = out.disk_full;
    out.failed
}

/// What the pages of one pass gather.
#[derive(Default)]
struct PassOutcome {
    /// Paths whose action failed, to be tried again.
    failed: Vec<RelPath>,
    /// Why the disk took no more, if it did not.
    disk_full: Option<String>,
    /// The directories of paths deleted, planned again in the next round.
    parents: BTreeSet<RelPath>,
}

/// Plans and applies one page of paths; false if there was nothing to do.
async fn run_page(share: &Arc<Share>, paths: Vec<RelPath>, pass: Pass, out: &mut PassOutcome) -> bool {
    let s2 = share.clone();
    let Ok(actions) = tokio::task::spawn_blocking(move || plan(&s2, &paths, pass)).await else { return false };
    if actions.is_empty() {
        return false;
    }
    debug!(count = actions.len(), "applying");
    let mut actions = actions.into_iter().peekable();
    while let Some(first) = actions.next() {
        let class = first.order_key().0;
        // Deletes sort into classes of their own.
        let deleting = matches!(first, Action::Delete { .. });
        let mut steps = vec![first];
        while let Some(a) = actions.next_if(|a| a.order_key().0 == class) {
            steps.push(a);
        }
        // Content actions run in parallel, small files in batches; directory and
        // delete steps in order.
        let (mut singles, mut batches) = (VecDeque::new(), VecDeque::new());
        if class == 1 {
            let (fetches, local): (Vec<Action>, Vec<Action>) =
                steps.into_iter().partition(|a| matches!(a, Action::Fetch { .. }));
            run_local(share, local, &mut out.failed, &mut out.disk_full).await;
            for job in batch::jobs(fetches) {
                match job {
                    Job::One(_) => singles.push_back(job),
                    Job::Batch(_) => batches.push_back(job),
                }
            }
        } else {
            singles.extend(steps.into_iter().map(Job::One));
        }
        let limits = if class == 1 { [PARALLEL_FILES, PARALLEL_BATCHES] } else { [1, 0] };
        let mut running = [0usize; 2];
        let mut kinds = HashMap::new();
        let mut set = tokio::task::JoinSet::new();
        loop {
            for (kind, queue) in [&mut singles, &mut batches].into_iter().enumerate() {
                while running[kind] < limits[kind] && !queue.is_empty() {
                    // The transfer window closed: what has started finishes, the rest waits.
                    if !share.may_download() {
                        out.failed.extend(queue.drain(..).flat_map(job_paths));
                        break;
                    }
                    let Some(job) = queue.pop_front() else { break };
                    let ctx = share.ctx.clone();
                    running[kind] += 1;
                    let task = set.spawn(async move {
                        match job {
                            Job::One(a) => {
                                let p = a.path().clone();
                                vec![(p, ctx.execute(a).await)]
                            }
                            Job::Batch(b) => ctx.execute_batch(b).await,
                        }
                    });
                    kinds.insert(task.id(), kind);
                }
            }
            let Some(res) = set.join_next_with_id().await else {
                break;
            };
            let id = match &res {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            if let Some(kind) = kinds.remove(&id) {
                running[kind] -= 1;
            }
            // A task that panicked: its paths are planned again at the next pass.
            let Ok((_, outcomes)) = res else { continue };
            if outcomes.iter().any(|(_, r)| r.is_ok()) {
                share.publish_seq();
            }
            for (path, res) in outcomes {
                if deleting && res.is_ok() {
                    out.parents.extend(path.parent());
                }
                note(share, path, res, &mut out.failed, &mut out.disk_full);
            }
        }
    }
    true
}

/// Carries out actions that need no peer (adopting or merging a version, a link)
/// in batches, on one thread each: one at a time, the hand-offs between threads
/// and a flush and an index batch for every few files cost more than the work
/// (two nodes that indexed the same files adopt each one).
async fn run_local(share: &Arc<Share>, local: Vec<Action>, failed: &mut Vec<RelPath>, disk_full: &mut Option<String>) {
    let mut local = local.into_iter().peekable();
    while local.peek().is_some() {
        if !share.may_download() {
            failed.extend(local.by_ref().map(|a| a.path().clone()));
            break;
        }
        let part: Vec<Action> = local.by_ref().take(LOCAL_BATCH).collect();
        let paths: Vec<RelPath> = part.iter().map(|a| a.path().clone()).collect();
        let ctx = share.ctx.clone();
        let done = tokio::task::spawn_blocking(move || {
            part.into_iter().map(|a| (a.path().clone(), ctx.execute_local(a))).collect::<Vec<_>>()
        })
        .await;
        match done {
            Ok(done) => {
                for (path, res) in done {
                    note(share, path, res, failed, disk_full);
                }
            }
            Err(_) => failed.extend(paths),
        }
        share.publish_seq();
    }
}

/// Notes a failed action's path to try again (and why, in the log); a full disk
/// pauses the share.
fn note(
    share: &Share,
    path: RelPath,
    res: Result<(), ApplyError>,
    failed: &mut Vec<RelPath>,
    disk_full: &mut Option<String>,
) {
    match res {
        Ok(()) => return,
        Err(e @ ApplyError::DiskFull { .. }) => {
            *disk_full = Some(e.to_string());
        }
        Err(e @ ApplyError::NoSource(_)) => {
            debug!(path = %path, error = %e, "not applied yet; retried shortly");
        }
        // The disk differs from the index: the path is scanned (its event may be
        // queued already, or there was none to see), so the next plan weighs what
        // is there now rather than failing the same way until the next full scan.
        Err(e @ ApplyError::LocalChanged(_)) => {
            debug!(path = %path, error = %e, "not applied; the path is scanned first");
            share.defer_to_watcher(path.clone());
        }
        Err(e) => {
            warn!(path = %path, error = %e, "not applied; retried shortly");
        }
    }
    failed.push(path);
}

/// Paths planned at once: see [`run_pass`].
pub(super) const PLAN_PAGE: usize = 4096;

/// Pages of [`PLAN_PAGE`] of the paths a peer holds an entry of, in order (a
/// million paths are not held at once).
#[derive(Default)]
pub(super) struct RemotePages {
    /// The last path of the page before.
    after: Option<RelPath>,
}

impl RemotePages {
    /// The next page; `None` after the last.
    pub(super) fn next(&mut self, index: &ShareIndex) -> Result<Option<Vec<RelPath>>, IndexError> {
        let page = index.remote_paths(self.after.as_ref(), PLAN_PAGE)?;
        self.after = page.last().cloned();
        Ok(self.after.is_some().then_some(page))
    }
}

/// Why stale temp files could not be cleaned.
#[derive(Debug, thiserror::Error)]
pub(super) enum TempCleanError {
    /// Listing or removing them failed.
    #[error("temp files: {0}")]
    Disk(#[from] std::io::Error),
    /// Planning which to keep failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Removes the temp files of downloads no longer planned; returns the count and
/// bytes removed. Run while no download of the share runs.
pub(super) fn remove_stale_temp(share: &Share) -> Result<(usize, u64), TempCleanError> {
    let present = share.ctx.temp_files()?;
    let planned = planned_temp_files(share, &present)?;
    Ok(share.ctx.remove_stale_temp(&present, &planned)?)
}

/// Of the temp files `present`, those of a download a full pass would start now.
/// The plan goes a page of paths at a time, and only when there is a temp file
/// to judge (usually there is none): planned all at once, a million paths' entries
/// were held at the same time.
fn planned_temp_files(share: &Share, present: &HashSet<PathBuf>) -> Result<HashSet<PathBuf>, IndexError> {
    let mut planned = HashSet::new();
    let mut pages = RemotePages::default();
    if present.is_empty() {
        return Ok(planned);
    }
    while let Some(page) = pages.next(&share.ctx.index)? {
        for a in plan(share, &page, Pass::Sync) {
            if let Action::Fetch { target, .. } = a {
                let temp = share.ctx.temp_path(&target);
                if present.contains(&temp) {
                    planned.insert(temp);
                }
            }
        }
    }
    Ok(planned)
}
