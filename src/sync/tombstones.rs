//! Forgetting deletes: when a tombstone (a deleted entry kept in the index) may be
//! purged, and what a member back from a longer absence than that keeps to itself
//! so that it does not bring deleted files back. Pure: times are Unix seconds.
//!
//! The rule: a tombstone goes once it is `tombstone_days` old and every member
//! heard from within `tombstone_days` has seen it (announced a version of the path
//! at least as new: applying a delete records it, and the index exchange tells).
//! Members not heard from for longer are not waited for, or one member gone for
//! good would keep every delete forever. Such a member, when it comes back, reads
//! every peer's whole index again, and each of its files that it had announced
//! before and that no peer knows any more was deleted on the mesh and forgotten:
//! it keeps the file as a local change (listed by `status`, never announced)
//! instead of offering it to the mesh as new.

use crate::ids::NodeId;
use crate::index::{Entry, LocalRecord, Member, VvOrder};

/// Seconds in a day.
pub const DAY: u64 = 86_400;

/// True if something last heard of at `at` is older than `days` at `now`.
pub fn beyond(at: u64, now: u64, days: u32) -> bool {
    now.saturating_sub(at) > u64::from(days) * DAY
}

/// Whether this node may forget its tombstone `tomb`, recorded at `deleted_at`,
/// given the peers' entries for its path and the share's `members`. A member has
/// seen the delete when its index holds a version at least as new, or nothing of
/// the path: it never had it, or it forgot the delete already (which it does only
/// once everyone it heard from had seen it), and either way has nothing to bring
/// back. One whose index this node does not hold has not.
pub fn may_purge(
    tomb: &Entry,
    deleted_at: u64,
    remotes: &[(NodeId, Entry)],
    members: &[Member],
    now: u64,
    days: u32,
) -> bool {
    if !tomb.deleted || now.saturating_sub(deleted_at) < u64::from(days) * DAY {
        return false;
    }
    let seen = |m: &Member| {
        m.index_held
            && remotes
                .iter()
                .filter(|(p, _)| *p == m.id)
                .all(|(_, e)| matches!(e.version.compare(&tomb.version), VvOrder::Equal | VvOrder::Greater))
    };
    let all_seen = members.iter().filter(|m| !beyond(m.last_heard, now, days)).all(seen);
    // A version concurrent with the delete is a conflict the planner has yet to settle.
    let settled = remotes.iter().all(|(_, e)| e.version.compare(&tomb.version) != VvOrder::Concurrent);
    all_seen && settled
}

/// Whether a peer's entry goes with a purged tombstone: a version the delete
/// replaced (or the delete itself), which would otherwise bring the path back.
pub fn goes_with(tomb: &Entry, remote: &Entry) -> bool {
    matches!(remote.version.compare(&tomb.version), VvOrder::Less | VvOrder::Equal)
}

/// True when a node last heard from its peers at `last_contact` has been away
/// long enough that they may have forgotten deletes it never saw.
pub fn must_recheck(last_contact: Option<u64>, now: u64, days: u32) -> bool {
    last_contact.is_some_and(|at| beyond(at, now, days))
}

/// For a member back after a long absence, with a peer's whole index read again:
/// whether its record `rec` is something the mesh deleted and forgot. It is live
/// here, announced (not a local change), the peer had received it (`ack`, the
/// peer's last sequence of this node's index, covers it), and no peer has any entry
/// for the path now (`remotes`).
pub fn forgotten_by_mesh(rec: &LocalRecord, ack: u64, remotes: &[(NodeId, Entry)]) -> bool {
    !rec.local_change && !rec.entry.deleted && rec.seq <= ack && remotes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShortId;
    use crate::index::{EntryKind, Mtime, VersionVector};
    use crate::relpath::RelPath;

    const NOW: u64 = 1_800_000_000;

    fn entry(vv: &[(u64, u64)], deleted: bool) -> Entry {
        Entry {
            path: RelPath::parse("gone.txt").unwrap(),
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            mtime: Mtime::default(),
            version: VersionVector::from_pairs(vv.iter().map(|(a, b)| (ShortId(*a), *b))),
            modified_by: ShortId(1),
            deleted,
            blocks: vec![],
        }
    }

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn member(n: u8, last_heard: u64) -> Member {
        Member { id: id(n), last_heard, index_held: true }
    }

    #[test]
    fn a_tombstone_goes_once_old_enough_and_seen_by_every_member_heard_from() {
        let tomb = entry(&[(1, 3)], true);
        let old = NOW - 31 * DAY;
        let members = [member(2, NOW - 60), member(3, NOW - DAY)];
        let seen_by_both = [(id(2), tomb.clone()), (id(3), entry(&[(1, 3), (3, 1)], true))];
        assert!(may_purge(&tomb, old, &seen_by_both, &members, NOW, 30));
        assert!(may_purge(&tomb, NOW - 30 * DAY, &seen_by_both, &members, NOW, 30), "exactly 30 days");
        assert!(!may_purge(&tomb, NOW - 29 * DAY, &seen_by_both, &members, NOW, 30), "too young");
        // A member that still announces the version the delete replaced has not seen it.
        let one_behind = [(id(2), tomb.clone()), (id(3), entry(&[(1, 2)], false))];
        assert!(!may_purge(&tomb, old, &one_behind, &members, NOW, 30));
        // One whose index holds nothing of the path never had it, or forgot the
        // delete already: nothing to bring back.
        assert!(may_purge(&tomb, old, &seen_by_both[..1], &members, NOW, 30));
        // One whose index is being read again whole has not been seen to know.
        let rereading = [member(2, NOW - 60), Member { index_held: false, ..member(3, NOW - DAY) }];
        assert!(!may_purge(&tomb, old, &seen_by_both, &rereading, NOW, 30));
        // A member not heard from for longer than the horizon is not waited for.
        let away = [member(2, NOW - 60), member(3, NOW - 45 * DAY)];
        assert!(may_purge(&tomb, old, &one_behind, &away, NOW, 30));
        // A version concurrent with the delete is an open conflict: kept.
        let conflict = [(id(2), tomb.clone()), (id(3), entry(&[(3, 1)], false))];
        assert!(!may_purge(&tomb, old, &conflict, &away, NOW, 30));
        assert!(!may_purge(&entry(&[(1, 3)], false), old, &seen_by_both, &members, NOW, 30), "not a tombstone");
        assert!(may_purge(&tomb, old, &[], &[], NOW, 30), "alone in the share");
    }

    #[test]
    fn what_goes_with_a_purged_tombstone_is_what_it_replaced() {
        let tomb = entry(&[(1, 3)], true);
        assert!(goes_with(&tomb, &entry(&[(1, 2)], false)), "the old version a stale member announced");
        assert!(goes_with(&tomb, &tomb), "the delete as peers announced it");
        assert!(!goes_with(&tomb, &entry(&[(1, 4)], false)), "made again since");
        assert!(!goes_with(&tomb, &entry(&[(2, 1)], false)), "concurrent");
    }

    #[test]
    fn a_member_back_after_the_horizon_keeps_what_the_mesh_forgot() {
        assert!(!must_recheck(None, NOW, 30), "never in touch: nothing to re-check");
        assert!(!must_recheck(Some(NOW - 29 * DAY), NOW, 30));
        assert!(must_recheck(Some(NOW - 31 * DAY), NOW, 30));
        let rec = |seq: u64, local_change: bool, deleted: bool| LocalRecord {
            entry: entry(&[(1, 1)], deleted),
            seq,
            ino: 1,
            local_change,
        };
        assert!(forgotten_by_mesh(&rec(5, false, false), 9, &[]), "announced before, unknown now");
        assert!(!forgotten_by_mesh(&rec(10, false, false), 9, &[]), "new since: announced as any change");
        assert!(!forgotten_by_mesh(&rec(5, false, false), 9, &[(id(2), entry(&[(1, 1)], false))]), "still known");
        assert!(!forgotten_by_mesh(&rec(5, true, false), 9, &[]), "already kept to itself");
        assert!(!forgotten_by_mesh(&rec(5, false, true), 9, &[]), "a tombstone of its own");
    }
}
