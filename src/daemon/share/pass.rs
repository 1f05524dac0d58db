//! One pass over a set of paths: plan each against the peers' entries, then carry
//! the actions out (directories first, files in parallel, deletes last).

use super::Share;
use crate::index::LocalRecord;
use crate::relpath::RelPath;
use crate::sync::planner::plan_revert;
use crate::sync::{plan_path, Action};
use crate::transfer::ApplyError;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Files fetched at the same time within one share.
const PARALLEL_FILES: usize = 4;

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
    actions.sort_by_key(|a| a.order_key());
    actions
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
    let mut i = 0;
    while i < actions.len() {
        let class = actions[i].order_key().0;
        let mut j = i;
        while j < actions.len() && actions[j].order_key().0 == class {
            j += 1;
        }
        // Content actions run in parallel; directory and delete steps in order.
        let mut batch: Vec<Action> = actions[i..j].to_vec();
        if class == 1 {
            // What needs no peer (adopting or merging a version, a link) runs in
            // batches on one thread each: one at a time, the hand-offs between
            // threads and a flush and an index batch for every few files cost more
            // than the work (two nodes that indexed the same files adopt each one).
            let (fetches, local): (Vec<Action>, Vec<Action>) =
                batch.into_iter().partition(|a| matches!(a, Action::Fetch { .. }));
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
                            note(path, res, &mut failed, &mut disk_full);
                        }
                    }
                    Err(_) => failed.extend(paths),
                }
                share.publish_seq();
            }
            batch = fetches;
        }
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
            if res.is_ok() {
                share.publish_seq();
            }
            note(path, res, &mut failed, &mut disk_full);
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

/// Notes a failed action's path to try again (and why, in the log); a full disk
/// pauses the share.
fn note(path: RelPath, res: Result<(), ApplyError>, failed: &mut Vec<RelPath>, disk_full: &mut Option<String>) {
    match res {
        Ok(()) => return,
        Err(e @ ApplyError::DiskFull { .. }) => {
            *disk_full = Some(e.to_string());
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
