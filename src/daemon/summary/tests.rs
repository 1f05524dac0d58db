use super::*;
use crate::ids::ShortId;
use crate::index::{Index, Mtime, VersionVector};
use crate::relpath::RelPath;

fn summary(files: u64) -> ShareSummary {
    ShareSummary { files, ..Default::default() }
}

fn key(local_seq: u64, remote_generation: u64, said: &[(u8, bool)]) -> SummaryKey {
    SummaryKey {
        local_seq,
        remote_generation,
        participation: said.iter().map(|(p, b)| (NodeId([*p; 32]), *b)).collect(),
    }
}

#[test]
fn a_share_summary_is_reused_until_what_it_was_computed_from_changes() {
    let cache = SummaryCache::default();
    let mut computed = 0;
    // Counts that take no time: every change is counted at once.
    let mut get_read = |k, read| {
        cache.get_or(k, Instant::now() + Duration::from_secs(1), || {
            computed += 1;
            (summary(computed), read)
        })
    };
    assert_eq!(get_read(key(1, 0, &[]), Read::Partial).summary.files, 1);
    assert_eq!(get_read(key(1, 0, &[]), Read::Complete).summary.files, 2, "a failed read is not kept");
    let mut get = |k| get_read(k, Read::Complete).summary.files - 2;
    assert_eq!(get(key(1, 1, &[(2, true)])), 1);
    assert_eq!(get(key(1, 1, &[(2, true)])), 1, "nothing changed: reused");
    assert_eq!(get(key(2, 1, &[(2, true)])), 2, "a local change");
    assert_eq!(get(key(2, 2, &[(2, true)])), 3, "a peer's index changed");
    assert_eq!(get(key(2, 2, &[(2, false)])), 4, "a peer left the share");
    assert_eq!(get(key(2, 2, &[(2, false)])), 4);
}

#[test]
fn while_the_index_keeps_changing_the_last_count_is_given_as_not_current() {
    let cache = SummaryCache::default();
    let slow = || {
        std::thread::sleep(Duration::from_millis(20));
        (summary(7), Read::Complete)
    };
    let first = cache.get_or(key(1, 0, &[]), Instant::now(), slow);
    assert!(first.current);
    // Right after a count of 20 ms, a change is not counted yet.
    let soon = cache.get_or(key(2, 0, &[]), Instant::now(), || unreachable!("counted too soon"));
    assert!(!soon.current);
    assert_eq!(soon.summary.files, 7);
    // Once four times its duration has passed, it is.
    let later = Instant::now() + Duration::from_millis(100);
    let again = cache.get_or(key(2, 0, &[]), later, || (summary(8), Read::Complete));
    assert!(again.current);
    assert_eq!(again.summary.files, 8);
    assert!(cache.get_or(key(2, 0, &[]), Instant::now(), || unreachable!()).current, "then reused");
}

fn entry(path: &str, kind: EntryKind, version: &[(u64, u64)], deleted: bool, size: u64) -> Entry {
    Entry {
        path: RelPath::parse(path).unwrap(),
        kind,
        size,
        mode: 0o644,
        mtime: Mtime::default(),
        version: VersionVector::from_pairs(version.iter().map(|(n, c)| (ShortId(*n), *c))),
        modified_by: ShortId(1),
        deleted,
        blocks: vec![],
    }
}

#[test]
fn the_counts_compare_every_path_of_both_sides_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path()).unwrap().share("s").unwrap();
    let f = EntryKind::File;
    // Ours: a, b (newer than the peer's), c (deleted), d, dir; "a-1" a local change.
    idx.put(entry("a", f.clone(), &[(1, 1)], false, 10), 1, false).unwrap();
    idx.put(entry("a-1", f.clone(), &[(1, 1)], false, 5), 1, true).unwrap();
    idx.put(entry("b", f.clone(), &[(1, 2)], false, 3), 1, false).unwrap();
    idx.put(entry("c", f.clone(), &[(1, 1)], true, 0), 1, false).unwrap();
    idx.put(entry("d", f.clone(), &[(1, 1)], false, 1), 1, false).unwrap();
    idx.put(entry("dir", EntryKind::Dir, &[(1, 1)], false, 0), 1, false).unwrap();
    let (p, q, gone) = (NodeId([5; 32]), NodeId([6; 32]), NodeId([7; 32]));
    // p: a (same), b (older), c (live: we deleted it later? no: concurrent), e (only theirs), f (their tombstone).
    let theirs = [
        entry("a", f.clone(), &[(1, 1)], false, 10),
        entry("b", f.clone(), &[(1, 1)], false, 3),
        entry("c", f.clone(), &[(2, 1)], false, 4),
        entry("e", f.clone(), &[(2, 1)], false, 4),
        entry("f", f.clone(), &[(2, 1)], true, 0),
    ];
    idx.apply_remote(&p, 1, &theirs, 5).unwrap();
    idx.apply_remote(&gone, 1, &theirs, 5).unwrap();
    let said = |peer: &NodeId| (*peer == gone).then_some(false);
    let (sum, read) = summarize(idx.local_records(), idx.remote_entries(), said, [q].into_iter());
    assert_eq!(read, Read::Complete);
    assert_eq!((sum.files, sum.dirs, sum.bytes, sum.local_changes), (4, 1, 19, 1));
    assert_eq!(sum.local_change_paths, ["a-1"]);
    assert_eq!(sum.needed_paths, ["c", "e"], "what status names when this node stays behind");
    let mut want = vec![
        // we need c (concurrent, not dominated) and e; they need b, and a-1, d, dir they lack.
        (p, 2, 4),
        // q takes part and sent nothing: it needs every live path of ours.
        (q, 0, 5),
    ];
    want.sort_by_key(|w| w.0.to_string());
    assert_eq!(sum.peers, want, "a peer that left is not counted");
}
