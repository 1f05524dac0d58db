//! Tombstones of one share (rules in `sync::tombstones`): purged after each full
//! scan, and the re-check of this node when it comes back after longer than
//! `tombstone_days`, so that it does not offer the mesh files it deleted and forgot.

use super::Share;
use crate::ids::NodeId;
use crate::index::{unix_now, IndexError};
use crate::sync::tombstones::{forgotten_by_mesh, goes_with, may_purge, must_recheck, DAY};
use tracing::{info, warn};

impl Share {
    /// Forgets the tombstones the rule allows; `connected` are the share's peers
    /// connected now (heard from now). Returns how many went. Not while this node
    /// re-checks its files: what it holds of its peers' indexes is being rebuilt.
    pub fn purge_tombstones(&self, days: u32, connected: &[NodeId]) -> Result<usize, IndexError> {
        let idx = &self.ctx.index;
        if idx.recheck_pending()? {
            return Ok(0);
        }
        let now = unix_now();
        for p in connected {
            idx.note_contact(p, now)?;
        }
        let members = idx.members(now)?;
        let mut purged = 0;
        for (rec, at) in idx.tombstones(now)? {
            // A receive-only local delete was never announced: the mesh never saw it.
            if rec.local_change {
                continue;
            }
            let tomb = &rec.entry;
            let remotes = idx.remote_for(&tomb.path)?;
            if may_purge(tomb, at, &remotes, &members, now, days) && idx.purge(tomb, |e| goes_with(tomb, e))? {
                purged += 1;
            }
        }
        if purged > 0 {
            info!(purged, tombstone_days = days, "deletes every member has seen forgotten");
        }
        Ok(purged)
    }

    /// Whether to ask `peer` for its whole index of this share (instead of what
    /// changed since the last time): while this node re-checks its files after a
    /// long absence, once per peer. Starts that re-check if no member of the share
    /// was heard from for longer than `days`: they may have forgotten deletes this
    /// node never saw. Called as the Hello to `peer` is made; a peer asked for its
    /// whole index has what this node held of it dropped first.
    pub fn asks_whole_index(&self, peer: &NodeId, days: u32) -> Result<bool, IndexError> {
        let idx = &self.ctx.index;
        let mut asked = self.recheck_asked.lock().unwrap_or_else(|e| e.into_inner());
        if !idx.recheck_pending()? {
            let now = unix_now();
            let last = idx.last_contact()?;
            if !must_recheck(last, now, days) {
                return Ok(false);
            }
            let away = last.map_or(0, |at| now.saturating_sub(at) / DAY);
            warn!(
                days_away = away,
                tombstone_days = days,
                "no member of the share heard from for longer than tombstone_days: they may have forgotten deletes \
                 made meanwhile; reading every peer's whole index again, and files the mesh no longer knows stay \
                 here as local changes instead of coming back everywhere"
            );
            idx.begin_recheck()?;
            asked.clear();
        }
        if !asked.insert(*peer) {
            return Ok(false);
        }
        idx.forget_peer(peer)?;
        Ok(true)
    }

    /// A peer asked for its whole index has sent all of it, and it had received
    /// this node's index up to `ack`: every file this node announced before and
    /// that no peer knows now was deleted on the mesh and forgotten there. Such a
    /// file stays on disk as a local change (never announced, listed by `status`,
    /// `meshsync revert` removes it) instead of being offered to the mesh as new.
    /// Ends the re-check; returns how many files were kept so.
    pub fn settle_recheck(&self, ack: u64) -> Result<usize, IndexError> {
        let idx = &self.ctx.index;
        if !idx.recheck_pending()? {
            return Ok(0);
        }
        let mut kept = 0;
        for rec in idx.all()? {
            let remotes = idx.remote_for(&rec.entry.path)?;
            if forgotten_by_mesh(&rec, ack, &remotes) {
                warn!(path = %rec.entry.path,
                    "unknown to the mesh: deleted there longer than tombstone_days ago, while this node was away; \
                     kept here as a local change, not announced (`meshsync revert` removes it)");
                idx.put(rec.entry, rec.ino, true)?;
                kept += 1;
            }
        }
        idx.end_recheck()?;
        self.recheck_asked.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Deletes this node held back meanwhile go at the next full scan, when the
        // other peers asked for their whole index have sent it too.
        info!(kept, "re-check after a long absence done");
        Ok(kept)
    }
}
