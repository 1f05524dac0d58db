//! One pass over a set of paths: plan each against the peers' entries, then carry
//! the actions out (directories first, files in parallel, deletes last).

use super::Share;
use crate::index::LocalRecord;
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

/// Plans `paths` with the planner of `pass` and applies the plan; returns the
/// paths whose action failed, to be tried again.
pub(super) async fn run_pass(share: &Arc<Share>, paths: Vec<RelPath>, pass: Pass) -> Vec<RelPath> {
    let mut failed = Vec::new();
    if paths.is_empty() {
        return failed;
    }
    // Nothing is written into a folder that is not known to be the share's (an
    // empty mount point would take the files and hide them under the disk).
    // Nor while a scan found more deletions than it may record: whatever caused
    // them (a half-mounted disk, a script gone astray) is the user's to judge first.
    if !share.root_ready() || share.brake_paused() {
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
    let mut actions = actions.into_iter().peekable();
    while let Some(first) = actions.next() {
        let class = first.order_key().0;
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
            run_local(share, local, &mut failed, &mut disk_full).await;
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
                        failed.extend(queue.drain(..).flat_map(job_paths));
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
                note(share, path, res, &mut failed, &mut disk_full);
            }
        }
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

/// Every path a peer has an entry for, once each, in order.
pub(super) fn all_remote_paths(share: &Share) -> Vec<RelPath> {
    let mut set: BTreeSet<RelPath> = BTreeSet::new();
    match share.ctx.index.all_remote() {
        Ok(all) => set.extend(all.into_iter().map(|(_, e)| e.path)),
        Err(e) => warn!(error = %e, "index read failed"),
    }
    set.into_iter().collect()
}

/// The temp files of every download a full pass would start now.
pub(super) fn planned_temp_files(share: &Share) -> HashSet<PathBuf> {
    plan(share, &all_remote_paths(share), Pass::Sync)
        .into_iter()
        .filter_map(|a| match a {
            Action::Fetch { target, .. } => Some(share.ctx.temp_path(&target)),
            _ => None,
        })
        .collect()
}
