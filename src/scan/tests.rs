//! The scanner on a real folder: what it records, what it leaves, what it refuses.

use super::*;
use crate::index::Index;

/// A share root and its index in temporary directories.
struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    index: ShareIndex,
    ignore: Ignore,
}

impl Fixture {
    fn new() -> Self {
        Self::ignoring(&[])
    }

    fn ignoring(patterns: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir(&root).unwrap();
        marker::write_marker(&root, &marker::new_marker("m", "s")).unwrap();
        let index = Index::open(&dir.path().join("index")).unwrap().share("s").unwrap();
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Self { _dir: dir, root, index, ignore: Ignore::new(&patterns).unwrap() }
    }

    fn scanner(&self) -> Scanner<'_> {
        Scanner {
            name: "s",
            root: &self.root,
            index: &self.index,
            me: ShortId(1),
            mode: ShareMode::SendReceive,
            ignore: &self.ignore,
            brake: Some(crate::config::DeleteBrake::default()),
            recent_deletes: 0,
            defer: None,
            taken_at: None,
        }
    }

    fn write(&self, rel: &str, body: &[u8]) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// Live paths in the index.
    fn live(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .index
            .all()
            .unwrap()
            .into_iter()
            .filter(|r| !r.entry.deleted)
            .map(|r| r.entry.path.as_str().to_string())
            .collect();
        v.sort();
        v
    }

    fn paths(&self, rels: &[&str]) -> ScanStats {
        let rels: Vec<RelPath> = rels.iter().map(|r| RelPath::parse(r).unwrap()).collect();
        self.scanner().scan_paths(&rels).unwrap()
    }
}

#[test]
fn a_root_that_lost_its_marker_is_not_scanned_and_nothing_is_deleted() {
    let f = Fixture::new();
    f.write("a", b"one");
    f.scanner().scan().unwrap();
    // What an unmounted disk looks like: the mount point, empty.
    std::fs::remove_dir_all(&f.root).unwrap();
    std::fs::create_dir(&f.root).unwrap();
    assert!(matches!(f.scanner().scan(), Err(ScanError::Root(marker::RootProblem::NoMarker(..)))));
    let a = RelPath::parse("a").unwrap();
    assert!(matches!(f.scanner().scan_paths(&[a]), Err(ScanError::Root(_))));
    std::fs::remove_dir(&f.root).unwrap();
    assert!(matches!(f.scanner().scan(), Err(ScanError::Root(marker::RootProblem::Missing(..)))));
    assert_eq!(f.live(), vec!["a"]);
}

#[test]
fn a_scan_that_finds_most_files_gone_records_nothing_until_confirmed() {
    let f = Fixture::new();
    for i in 0..150 {
        f.write(&format!("d/{i}"), b"x");
    }
    f.scanner().scan().unwrap();
    std::fs::remove_dir_all(f.root.join("d")).unwrap();
    let e = f.scanner().scan().unwrap_err();
    assert!(matches!(e, ScanError::MassDelete { would: 151, live: 151, .. }), "{e}");
    assert!(e.to_string().contains("meshsync share confirm-deletes s"), "{e}");
    assert_eq!(f.live().len(), 151, "nothing recorded deleted");
    // The watcher's path scan is held back the same way.
    let d = RelPath::parse("d").unwrap();
    assert!(matches!(f.scanner().scan_paths(&[d]), Err(ScanError::MassDelete { .. })));
    assert_eq!(f.live().len(), 151);
    // Deletions a moment ago count too: under `max_delete = 50`, one more after 50.
    let at_most = Some(crate::config::DeleteBrake::AtMost(50));
    let after_some = Scanner { brake: at_most, recent_deletes: 50, ..f.scanner() };
    let few = RelPath::parse("d/1").unwrap();
    assert!(matches!(after_some.scan_paths(std::slice::from_ref(&few)), Err(ScanError::MassDelete { would: 51, .. })));
    let after_fewer = Scanner { brake: at_most, recent_deletes: 49, ..f.scanner() };
    assert_eq!(after_fewer.scan_paths(&[few]).unwrap().deleted, 1);
    // Confirmed: recorded.
    let confirmed = Scanner { brake: None, ..f.scanner() };
    assert_eq!(confirmed.scan().unwrap().deleted, 150);
    assert!(f.live().is_empty());
}

#[test]
fn named_paths_are_scanned_and_nothing_else() {
    let f = Fixture::new();
    f.write("a", b"one");
    f.write("b", b"two");
    let st = f.paths(&["a"]);
    assert_eq!((st.changed, st.deleted, st.hashed_bytes), (1, 0, 3));
    assert_eq!(f.live(), vec!["a"], "b raised no event: the full scan finds it");
    assert_eq!(f.paths(&["a"]).changed, 0, "unchanged: not recorded again");
    assert_eq!(f.scanner().scan().unwrap().changed, 1);
    assert_eq!(f.live(), vec!["a", "b"]);
}

#[test]
fn a_new_directory_is_scanned_with_everything_in_it() {
    let f = Fixture::new();
    // Created before any watch could be put on "d": only "d" raises an event.
    f.write("d/e/f", b"deep");
    f.write("d/g", b"flat");
    let st = f.paths(&["d"]);
    assert_eq!(st.changed, 4);
    assert_eq!(f.live(), vec!["d", "d/e", "d/e/f", "d/g"]);
}

#[test]
fn a_vanished_path_is_recorded_deleted_with_everything_under_it() {
    let f = Fixture::new();
    f.write("d/e/f", b"deep");
    f.write("d2/x", b"kept");
    f.write("top", b"file");
    f.scanner().scan().unwrap();
    std::fs::remove_dir_all(f.root.join("d")).unwrap();
    std::fs::remove_file(f.root.join("top")).unwrap();
    let st = f.paths(&["d", "top", "never-existed"]);
    assert_eq!((st.changed, st.deleted), (0, 4));
    assert_eq!(f.live(), vec!["d2", "d2/x"], "d2 only shares a prefix with d");
    assert_eq!(f.paths(&["top"]).deleted, 0, "already a tombstone");
}

#[test]
fn a_rename_moves_the_entry() {
    let f = Fixture::new();
    f.write("old", b"body");
    f.scanner().scan().unwrap();
    std::fs::rename(f.root.join("old"), f.root.join("new")).unwrap();
    let st = f.paths(&["new", "old"]);
    assert_eq!((st.changed, st.deleted), (1, 1));
    assert_eq!(f.live(), vec!["new"]);
}

#[test]
fn ignored_and_partial_paths_are_left_alone() {
    let f = Fixture::new();
    f.write("up.pdf.filepart", b"half");
    f.write("notes.tmp", b"scratch");
    let st = f.paths(&["up.pdf.filepart", "notes.tmp"]);
    assert_eq!(st, ScanStats::default());
    assert!(f.live().is_empty());
}

#[test]
fn nothing_is_picked_up_inside_an_ignored_directory_or_through_a_symlink() {
    let f = Fixture::ignoring(&["node_modules"]);
    f.write("app/node_modules/x.js", b"dep");
    f.write("real/f", b"body");
    std::os::unix::fs::symlink("real", f.root.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc", f.root.join("etc")).unwrap();
    f.paths(&["app/node_modules/x.js", "link/f", "etc/hostname"]);
    assert!(f.live().is_empty(), "{:?}", f.live());
    f.paths(&["link", "etc"]);
    assert_eq!(f.live(), vec!["link"], "a link inside the share is kept as a link, one leaving it is not");
}

#[test]
fn a_path_that_changed_kind_leaves_nothing_stale() {
    let f = Fixture::new();
    f.write("d/x", b"in a dir");
    f.write("plain", b"file");
    f.scanner().scan().unwrap();
    // The directory becomes a file, the file a link out of the share.
    std::fs::remove_dir_all(f.root.join("d")).unwrap();
    f.write("d", b"now a file");
    std::fs::remove_file(f.root.join("plain")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.root.join("plain")).unwrap();
    let st = f.paths(&["d", "d/x", "plain"]);
    assert_eq!((st.changed, st.deleted), (1, 2));
    assert_eq!(f.live(), vec!["d"]);
    let d = f.index.get(&RelPath::parse("d").unwrap()).unwrap().unwrap();
    assert_eq!(d.entry.kind, EntryKind::File);
}

#[test]
fn a_full_scan_finds_what_is_gone_directory_by_directory() {
    let f = Fixture::new();
    // "a-1" and "a.txt" sort between "a" and what is below it.
    for p in ["a/x", "a/y/z", "a-1", "a.txt", "b/c/d", "e/f", "keep/g"] {
        f.write(p, p.as_bytes());
    }
    f.scanner().scan().unwrap();
    let all = ["a", "a-1", "a.txt", "a/x", "a/y", "a/y/z", "b", "b/c", "b/c/d", "e", "e/f", "keep", "keep/g"];
    assert_eq!(f.live(), all);
    // A directory becomes a file, a deep one goes, a file goes, a name becomes a directory.
    std::fs::remove_dir_all(f.root.join("a")).unwrap();
    f.write("a", b"now a file");
    std::fs::remove_dir_all(f.root.join("b/c")).unwrap();
    std::fs::remove_file(f.root.join("a-1")).unwrap();
    std::fs::remove_file(f.root.join("a.txt")).unwrap();
    f.write("a.txt/inside", b"now a directory");
    let st = f.scanner().scan().unwrap();
    assert_eq!(f.live(), ["a", "a.txt", "a.txt/inside", "b", "e", "e/f", "keep", "keep/g"]);
    assert_eq!(
        (st.changed, st.deleted),
        (3, 6),
        "a and a.txt changed, a.txt/inside new; a/x, a/y, a/y/z, a-1, b/c, b/c/d gone"
    );
    // Nothing changed: nothing recorded.
    assert_eq!(f.scanner().scan().unwrap(), ScanStats::default());
}

#[test]
fn records_below_a_name_without_a_record_of_its_own_are_found_gone() {
    let f = Fixture::new();
    // As a peer's file can be applied before its directories are recorded here.
    let e = Entry {
        path: RelPath::parse("d/e/f").unwrap(),
        kind: EntryKind::File,
        size: 0,
        mode: 0o644,
        mtime: Default::default(),
        version: VersionVector::new().bump(ShortId(2)).unwrap(),
        modified_by: ShortId(2),
        deleted: false,
        blocks: vec![],
    };
    f.index.put(e, 1, false).unwrap();
    assert_eq!(f.scanner().scan().unwrap().deleted, 1);
    assert!(f.live().is_empty());
}

#[test]
fn a_walk_leaves_a_file_changed_a_moment_ago_to_the_watcher() {
    let f = Fixture::new();
    f.write("d/old", b"old");
    f.write("d/new", b"new");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let file = std::fs::File::options().write(true).open(f.root.join("d/old")).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(old)).unwrap();
    let deferred = std::cell::RefCell::new(Vec::new());
    let defer = |p: RelPath| deferred.borrow_mut().push(p.as_str().to_string());
    let scanner = Scanner { defer: Some(&defer), ..f.scanner() };
    scanner.scan().unwrap();
    assert_eq!(f.live(), vec!["d", "d/old"], "the file written just now is not recorded");
    assert_eq!(*deferred.borrow(), vec!["d/new"]);
    // The walk of a directory named by the watcher defers the same way; the
    // watcher's own paths are recorded as they are (it knows they are finished).
    deferred.borrow_mut().clear();
    scanner.scan_paths(&[RelPath::parse("d").unwrap()]).unwrap();
    assert_eq!(*deferred.borrow(), vec!["d/new"]);
    scanner.scan_paths(&[RelPath::parse("d/new").unwrap()]).unwrap();
    assert_eq!(f.live(), vec!["d", "d/new", "d/old"]);
    // A path the watcher handed over before the file was written again (a
    // rewrite begun after it was taken) goes back to the watcher too.
    deferred.borrow_mut().clear();
    let taken = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    f.write("d/new", b"rewritten");
    let handed = Scanner { defer: Some(&defer), taken_at: Some(taken), ..f.scanner() };
    handed.scan_paths(&[RelPath::parse("d/new").unwrap()]).unwrap();
    assert_eq!(*deferred.borrow(), vec!["d/new"]);
    // Handed over after the write was done (a finished file is taken 20 ms
    // after its last event): recorded.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let taken_now = Scanner { defer: Some(&defer), taken_at: Some(std::time::SystemTime::now()), ..f.scanner() };
    taken_now.scan_paths(&[RelPath::parse("d/new").unwrap()]).unwrap();
    assert_eq!(
        f.index.get(&RelPath::parse("d/new").unwrap()).unwrap().unwrap().entry.size,
        9,
        "finished before it was taken"
    );
    // An mtime set ahead of now by hand is recorded, not deferred for ever.
    deferred.borrow_mut().clear();
    f.write("d/ahead", b"from the future");
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    let file = std::fs::File::options().write(true).open(f.root.join("d/ahead")).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(ahead)).unwrap();
    handed.scan_paths(&[RelPath::parse("d/ahead").unwrap()]).unwrap();
    assert!(deferred.borrow().is_empty());
    scanner.scan().unwrap();
    assert!(deferred.borrow().is_empty(), "nor by a walk");
    assert!(f.live().contains(&"d/ahead".to_string()));
    // Recorded now: unchanged since, it is not deferred again.
    deferred.borrow_mut().clear();
    scanner.scan().unwrap();
    assert!(deferred.borrow().is_empty());
}
