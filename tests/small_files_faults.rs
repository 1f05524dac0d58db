//! A receiver killed with SIGKILL while batches of small files are in flight (some
//! written, some being made durable, some renamed and not yet recorded) loses
//! nothing: no file at a final path is half written, and after the restart every
//! file arrives, none comes back as a local change or a conflict, and the source
//! still holds every file (an index that claimed a file the disk lost would have
//! announced it deleted). Real daemons on namespace hosts (root; skipped with the
//! reason printed otherwise).

mod blackbox;

use blackbox::tree::{self, is_conflict_copy};
use blackbox::{random_bytes, skip_reason, Mesh};
use std::path::Path;
use std::time::Duration;

const SHARE: &str = "s";
const FILES: usize = 6000;

/// Regular files below `root` (its `.meshsync/` left out) that are present now.
fn count_files(root: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() && e.file_name() != tree::PRIVATE => walk(&e.path()),
                Ok(t) if t.is_file() => 1,
                _ => 0,
            })
            .sum()
    }
    walk(root)
}

#[test]
fn a_receiver_killed_mid_batch_loses_nothing() {
    if let Some(why) = skip_reason(false) {
        println!("skipped: {why}");
        return;
    }
    let mut mesh = Mesh::new(2, &blackbox::fast_links(), &[]).expect("a mesh of namespace hosts");
    let roots = mesh.share_on(SHARE, &[0, 1]).unwrap();
    mesh.hosts[1].stop();
    for i in 0..FILES {
        let p = roots[0].join(format!("d{:02}/f{i:05}", i % 30));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, random_bytes(1 + i * 7 % 6000, i as u64)).unwrap();
    }
    mesh.wait("the source indexed every file", Duration::from_secs(120), |m| {
        m.hosts[0].status().and_then(|st| blackbox::Host::share_of(&st, SHARE).map(|s| s["files"] == FILES))
            == Some(true)
    });
    let source = tree::snapshot(&roots[0]).unwrap();
    mesh.hosts[1].start().unwrap();
    mesh.wait("a quarter of the files arrived", Duration::from_secs(120), |_| count_files(&roots[1]) >= FILES / 4);
    mesh.hosts[1].kill9();
    let arrived = tree::snapshot(&roots[1]).unwrap();
    let files = tree::files(&arrived).count();
    println!("receiver killed with {files} of {FILES} files in place");
    for (path, item) in &arrived {
        assert_eq!(Some(item), source.get(path), "{path} is in place whole, as on the source");
    }
    mesh.hosts[1].start().unwrap();
    let took = mesh
        .converge(SHARE, &[0, 1], &roots, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    println!("converged {took:.1?} after the restart");
    let after = tree::snapshot(&roots[0]).unwrap();
    assert_eq!(tree::diff(&source, &after), Vec::<String>::new(), "the source lost nothing and gained nothing");
    assert!(!after.keys().any(|p| is_conflict_copy(p)), "no conflict copy");
    // Files renamed into place but not yet recorded when the daemon died are
    // found by the restart's scan and announced with the same content: the peer
    // merges the versions, nothing moves.
    let found: Vec<String> = mesh.hosts[1]
        .log_tail(usize::MAX)
        .lines()
        .filter(|l| l.contains("local changes"))
        .map(|l| l.split("local changes").nth(1).unwrap_or("").trim().to_string())
        .collect();
    println!("the restarted receiver's scans found: {found:?}");
    let st = mesh.hosts[1].status().unwrap();
    let local = blackbox::Host::share_of(&st, SHARE).map(|s| s["local_changes"].clone());
    assert_eq!(local, Some(serde_json::json!(0)), "the receiver recorded no local change");
}
