//! The planner: pure decisions from the local record and the peers' entries of one
//! path. No disk, no network, no clock: everything it needs is passed in.

use crate::config::ShareMode;
use crate::ids::NodeId;
use crate::index::{conflict_name, pick_winner, Entry, EntryKind, LocalRecord, VvOrder};
use crate::relpath::RelPath;

/// What to do about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this version of a file, fetching the chunks not found locally.
    Fetch {
        /// The version to write.
        target: Entry,
        /// Peers that hold exactly this content.
        sources: Vec<NodeId>,
        /// Keep the current local file under this name first (we lost a conflict).
        conflict: Option<RelPath>,
    },
    /// Create the directory (or fix its mode).
    MakeDir {
        /// The directory entry.
        target: Entry,
    },
    /// Create the symlink.
    MakeSymlink {
        /// The symlink entry.
        target: Entry,
        /// Keep what is at the path under this name first.
        conflict: Option<RelPath>,
    },
    /// Remove the path (a tombstone won).
    Delete {
        /// The tombstone.
        target: Entry,
    },
    /// The content is already right: take the version, and mode/mtime, without moving data.
    Adopt {
        /// The version to record.
        target: Entry,
    },
    /// We won a conflict: record a version that includes the loser's, so it stops being concurrent.
    Merge {
        /// Our entry with the merged version.
        target: Entry,
    },
    /// A receive-only local change that the mesh deleted: it stays as it is (and
    /// stays a local change) until the user asks for the mesh's version.
    KeepLocal {
        /// The mesh's tombstone that is not applied.
        target: Entry,
    },
}

impl Action {
    /// The path the action is about.
    pub fn path(&self) -> &RelPath {
        match self {
            Action::Fetch { target, .. }
            | Action::MakeDir { target }
            | Action::MakeSymlink { target, .. }
            | Action::Delete { target }
            | Action::Adopt { target }
            | Action::Merge { target }
            | Action::KeepLocal { target } => &target.path,
        }
    }

    /// Execution order: directories top-down, then content, then deletes bottom-up
    /// (so a rename finds the old file's chunks before the old file goes).
    pub fn order_key(&self) -> (u8, i64, RelPath) {
        let depth = self.path().depth() as i64;
        let class = match self {
            Action::MakeDir { .. } => (0, depth),
            Action::Delete { target } if target.kind == EntryKind::Dir => (3, -depth),
            Action::Delete { .. } => (2, -depth),
            _ => (1, 0),
        };
        (class.0, class.1, self.path().clone())
    }
}

/// The best version among the peers' entries for one path.
pub fn global_winner(remotes: &[(NodeId, Entry)]) -> Option<&Entry> {
    remotes.iter().map(|(_, e)| e).fold(None, |best, e| Some(best.map_or(e, |b| pick_winner(b, e))))
}

/// Decides what to do for one path. `None`: nothing to do.
pub fn plan_path(local: Option<&LocalRecord>, remotes: &[(NodeId, Entry)], mode: ShareMode) -> Option<Action> {
    let w = global_winner(remotes)?;
    let sources = || -> Vec<NodeId> {
        remotes.iter().filter(|(_, e)| !e.deleted && e.same_content(w)).map(|(id, _)| *id).collect()
    };
    let Some(l) = local else {
        if mode == ShareMode::SendOnly {
            return None;
        }
        return Some(apply(w.clone(), None, None, sources()));
    };
    let le = &l.entry;
    match le.version.compare(&w.version) {
        // Kept to itself as forgotten by the mesh (`sync::tombstones`), but a peer
        // holds this very version after all: it is the mesh's again. (A receive-only
        // change has a version of its own, which no peer holds.)
        VvOrder::Equal if l.local_change && le.deleted == w.deleted && le.same_content(w) => {
            Some(Action::Adopt { target: w.clone() })
        }
        VvOrder::Equal | VvOrder::Greater => None,
        VvOrder::Less => {
            if mode == ShareMode::SendOnly {
                return None;
            }
            // A receive-only local change never goes because the mesh deleted the path:
            // deleting it would lose the only copy of that edit.
            if l.local_change && !le.deleted && w.deleted {
                return Some(Action::KeepLocal { target: w.clone() });
            }
            // A receive-only local change that a newer remote version replaces is kept aside.
            let conflict = if l.local_change && !le.deleted && !le.same_content(w) && le.kind != EntryKind::Dir {
                conflict_name(le).ok()
            } else {
                None
            };
            Some(apply(w.clone(), Some(le), conflict, sources()))
        }
        VvOrder::Concurrent => {
            let merged = le.version.merge(&w.version);
            let winner = pick_winner(le, w);
            let local_wins = std::ptr::eq(winner, le);
            if le.same_content(w) {
                let mut t = winner.clone();
                t.version = merged;
                return Some(if local_wins { Action::Merge { target: t } } else { Action::Adopt { target: t } });
            }
            if local_wins {
                // The losing node resolves: it keeps its content as a conflict copy and
                // adopts ours with the merged version. Merging here would make the loser
                // see a plain newer version and drop its content without a copy.
                return None;
            }
            if mode == ShareMode::SendOnly {
                return None;
            }
            let mut t = w.clone();
            t.version = merged;
            let conflict = if !le.deleted && le.kind != EntryKind::Dir { conflict_name(le).ok() } else { None };
            Some(apply(t, Some(le), conflict, sources()))
        }
    }
}

/// What `meshsync revert` does with one path of a receive-only share: the mesh's
/// version replaces a local change, and a local addition the mesh never had goes.
/// `None` for a path without a local change.
pub fn plan_revert(local: &LocalRecord, remotes: &[(NodeId, Entry)]) -> Option<Action> {
    if !local.local_change {
        return None;
    }
    let le = &local.entry;
    let Some(w) = global_winner(remotes) else {
        let mut gone = le.clone();
        if le.deleted {
            // Deleted here, unknown to the mesh: only the record stops being a change.
            return Some(Action::Adopt { target: gone });
        }
        gone.deleted = true;
        gone.blocks.clear();
        gone.size = 0;
        return Some(Action::Delete { target: gone });
    };
    let sources = remotes.iter().filter(|(_, e)| !e.deleted && e.same_content(w)).map(|(id, _)| *id).collect();
    Some(apply(w.clone(), Some(le), None, sources))
}

fn apply(target: Entry, local: Option<&Entry>, conflict: Option<RelPath>, sources: Vec<NodeId>) -> Action {
    if target.deleted {
        return match local {
            Some(l) if !l.deleted => Action::Delete { target },
            _ => Action::Adopt { target },
        };
    }
    let same = local.is_some_and(|l| !l.deleted && l.same_content(&target));
    match &target.kind {
        EntryKind::Dir => Action::MakeDir { target },
        EntryKind::Symlink { .. } if same => Action::Adopt { target },
        EntryKind::Symlink { .. } => Action::MakeSymlink { target, conflict },
        EntryKind::File if same => Action::Adopt { target },
        EntryKind::File => Action::Fetch { target, sources, conflict },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChunkHash, ShortId};
    use crate::index::{Block, Mtime, VersionVector};

    fn file(content: &[u8], vv: &[(u64, u64)], by: u64, secs: i64) -> Entry {
        Entry {
            path: RelPath::parse("f.txt").unwrap(),
            kind: EntryKind::File,
            size: content.len() as u64,
            mode: 0o644,
            mtime: Mtime { secs, nanos: 0 },
            version: VersionVector::from_pairs(vv.iter().map(|(a, b)| (ShortId(*a), *b))),
            modified_by: ShortId(by),
            deleted: false,
            blocks: if content.is_empty() {
                vec![]
            } else {
                vec![Block { hash: ChunkHash::of(content), len: content.len() as u32 }]
            },
        }
    }
    fn rec(e: Entry) -> LocalRecord {
        LocalRecord { entry: e, seq: 1, ino: 1, local_change: false }
    }
    const A: NodeId = NodeId([1; 32]);
    const B: NodeId = NodeId([2; 32]);

    #[test]
    fn new_remote_file_is_fetched_from_all_holders() {
        let e = file(b"x", &[(1, 1)], 1, 10);
        let act = plan_path(None, &[(A, e.clone()), (B, e.clone())], ShareMode::SendReceive).unwrap();
        assert_eq!(act, Action::Fetch { target: e, sources: vec![A, B], conflict: None });
    }

    #[test]
    fn older_or_equal_remote_is_ignored() {
        let mine = file(b"new", &[(1, 2)], 1, 10);
        let theirs = file(b"old", &[(1, 1)], 1, 5);
        assert_eq!(plan_path(Some(&rec(mine.clone())), &[(A, theirs)], ShareMode::SendReceive), None);
        assert_eq!(plan_path(Some(&rec(mine.clone())), &[(A, mine)], ShareMode::SendReceive), None);
    }

    #[test]
    fn a_file_kept_as_forgotten_by_the_mesh_is_announced_again_once_a_peer_holds_it() {
        let kept = file(b"x", &[(1, 1)], 1, 10);
        let local = LocalRecord { local_change: true, ..rec(kept.clone()) };
        let act = plan_path(Some(&local), &[(A, kept.clone())], ShareMode::SendReceive);
        assert_eq!(act, Some(Action::Adopt { target: kept.clone() }));
        let other = file(b"y", &[(1, 1)], 1, 10);
        assert_eq!(plan_path(Some(&local), &[(A, other)], ShareMode::SendReceive), None, "not the same content");
        assert_eq!(plan_path(Some(&rec(kept.clone())), &[(A, kept)], ShareMode::SendReceive), None);
    }

    #[test]
    fn send_only_never_applies() {
        let theirs = file(b"x", &[(1, 1)], 1, 10);
        assert_eq!(plan_path(None, &[(A, theirs.clone())], ShareMode::SendOnly), None);
        let mine = file(b"y", &[(1, 1), (2, 1)], 2, 10);
        let newer = file(b"z", &[(1, 2), (2, 1)], 1, 10);
        assert_eq!(plan_path(Some(&rec(mine)), &[(A, newer)], ShareMode::SendOnly), None);
    }

    #[test]
    fn conflict_remote_wins_keeps_local_copy_and_merges_versions() {
        let mine = file(b"mine", &[(5, 1), (7, 1)], 7, 100);
        let theirs = file(b"theirs", &[(5, 1), (9, 1)], 9, 200);
        match plan_path(Some(&rec(mine.clone())), &[(A, theirs.clone())], ShareMode::SendReceive).unwrap() {
            Action::Fetch { target, sources, conflict } => {
                assert_eq!(target.blocks, theirs.blocks);
                assert_eq!(target.version, mine.version.merge(&theirs.version));
                assert_eq!(sources, vec![A]);
                assert!(conflict.unwrap().as_str().starts_with("f.sync-conflict-"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conflict_local_wins_waits_for_the_loser_to_resolve() {
        let mine = file(b"mine", &[(5, 1), (7, 1)], 7, 300);
        let theirs = file(b"theirs", &[(5, 1), (9, 1)], 9, 200);
        assert_eq!(plan_path(Some(&rec(mine.clone())), &[(A, theirs.clone())], ShareMode::SendReceive), None);
        // The loser's resolution (winner content, merged version) is then adopted.
        let mut resolved = mine.clone();
        resolved.version = mine.version.merge(&theirs.version);
        assert!(matches!(
            plan_path(Some(&rec(mine)), &[(A, resolved)], ShareMode::SendReceive),
            Some(Action::Adopt { .. })
        ));
    }

    #[test]
    fn both_sides_agree_on_the_winner() {
        let x = file(b"x", &[(1, 1), (2, 1)], 2, 50);
        let y = file(b"y", &[(1, 1), (3, 1)], 3, 50);
        let on_x = plan_path(Some(&rec(x.clone())), &[(B, y.clone())], ShareMode::SendReceive).unwrap();
        let on_y = plan_path(Some(&rec(y.clone())), &[(A, x.clone())], ShareMode::SendReceive);
        // Equal mtimes: the larger node id (3) wins on both nodes.
        assert!(matches!(on_x, Action::Fetch { ref target, .. } if target.blocks == y.blocks));
        assert!(on_y.is_none(), "the winner waits for the loser: {on_y:?}");
    }

    #[test]
    fn concurrent_identical_content_is_not_a_conflict() {
        let x = file(b"same", &[(1, 1)], 1, 50);
        let y = file(b"same", &[(2, 1)], 2, 60);
        match plan_path(Some(&rec(x.clone())), &[(B, y.clone())], ShareMode::SendReceive).unwrap() {
            Action::Adopt { target } => assert_eq!(target.version, x.version.merge(&y.version)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_and_modify_concurrently_modify_wins() {
        let mine = file(b"edited", &[(1, 1), (2, 1)], 2, 10);
        let mut gone = file(b"", &[(1, 1), (3, 1)], 3, 999);
        gone.deleted = true;
        assert_eq!(plan_path(Some(&rec(mine.clone())), &[(B, gone.clone())], ShareMode::SendReceive), None);
        // On the deleting node, the edit wins and comes back, with no conflict copy.
        let mut their_rec = rec(gone);
        their_rec.entry.blocks.clear();
        match plan_path(Some(&their_rec), &[(A, mine)], ShareMode::SendReceive).unwrap() {
            Action::Fetch { conflict, .. } => assert!(conflict.is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tombstone_deletes_and_unknown_tombstone_is_only_recorded() {
        let mine = file(b"x", &[(1, 1)], 1, 10);
        let mut gone = file(b"", &[(1, 2)], 1, 10);
        gone.deleted = true;
        assert!(matches!(
            plan_path(Some(&rec(mine)), &[(A, gone.clone())], ShareMode::SendReceive),
            Some(Action::Delete { .. })
        ));
        assert!(matches!(plan_path(None, &[(A, gone)], ShareMode::SendReceive), Some(Action::Adopt { .. })));
    }

    #[test]
    fn receive_only_local_change_is_kept_as_conflict_copy() {
        let mut r = rec(file(b"local edit", &[(1, 1)], 1, 10));
        r.local_change = true;
        let newer = file(b"upstream", &[(1, 2)], 1, 20);
        match plan_path(Some(&r), &[(A, newer)], ShareMode::ReceiveOnly).unwrap() {
            Action::Fetch { conflict, .. } => assert!(conflict.is_some()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn receive_only_local_change_survives_a_remote_delete() {
        let mut r = rec(file(b"local edit", &[(1, 1)], 1, 10));
        r.local_change = true;
        let mut gone = file(b"", &[(1, 2)], 1, 20);
        gone.deleted = true;
        assert_eq!(
            plan_path(Some(&r), &[(A, gone.clone())], ShareMode::ReceiveOnly),
            Some(Action::KeepLocal { target: gone.clone() })
        );
        // Without a local change, the delete is applied as usual.
        r.local_change = false;
        assert_eq!(
            plan_path(Some(&r), &[(A, gone.clone())], ShareMode::ReceiveOnly),
            Some(Action::Delete { target: gone })
        );
    }

    #[test]
    fn revert_takes_the_mesh_version_and_drops_local_additions() {
        let mut edited = rec(file(b"local edit", &[(1, 1)], 1, 10));
        edited.local_change = true;
        let theirs = file(b"upstream", &[(1, 1)], 1, 5);
        match plan_revert(&edited, &[(A, theirs.clone())]).unwrap() {
            Action::Fetch { target, conflict, sources } => {
                assert_eq!((target, conflict, sources), (theirs.clone(), None, vec![A]));
            }
            other => panic!("{other:?}"),
        }
        let mut gone = theirs.clone();
        gone.deleted = true;
        assert_eq!(plan_revert(&edited, &[(A, gone.clone())]), Some(Action::Delete { target: gone }));
        // Added here only: removed, and the record becomes a plain tombstone.
        match plan_revert(&edited, &[]).unwrap() {
            Action::Delete { target } => assert!(target.deleted && target.path == edited.entry.path),
            other => panic!("{other:?}"),
        }
        edited.local_change = false;
        assert_eq!(plan_revert(&edited, &[(A, theirs)]), None, "no local change, nothing to revert");
    }

    #[test]
    fn order_puts_dirs_first_and_deletes_last() {
        let mut d = file(b"", &[(1, 1)], 1, 0);
        d.kind = EntryKind::Dir;
        d.path = RelPath::parse("a/b").unwrap();
        let mut del = d.clone();
        del.deleted = true;
        let f = file(b"x", &[(1, 1)], 1, 0);
        let mut acts = [
            Action::Delete { target: del.clone() },
            Action::Fetch { target: f, sources: vec![], conflict: None },
            Action::MakeDir { target: d },
        ];
        acts.sort_by_key(|a| a.order_key());
        assert!(matches!(acts[0], Action::MakeDir { .. }));
        assert!(matches!(acts[2], Action::Delete { .. }));
    }
}
