//! Many small files travel in batches (a few requests for hundreds of files, one
//! fsync pass, one index write): they must arrive exactly as the single-file path
//! delivered them, with their modes and mtimes, and be replaced in place later.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

/// The small tree: (path, content, mode, mtime seconds).
fn tree(round: u64) -> Vec<(String, Vec<u8>, u32, i64)> {
    let mut out = Vec::new();
    for i in 0..700u64 {
        let body = match i % 7 {
            // Empty, all zeros (a hole on disk), and the same bytes as another file.
            0 => Vec::new(),
            1 => vec![0; 5000],
            2 => b"the same small file".to_vec(),
            _ => random_bytes(1 + (i as usize * 37) % 9000, i * 1000 + round),
        };
        let mode = if i % 5 == 0 { 0o600 } else { 0o644 };
        out.push((format!("d{}/f{i:04}", i % 7), body, mode, 1_600_000_000 + (i + round) as i64));
    }
    out
}

fn write_tree(node: &TestNode, files: &[(String, Vec<u8>, u32, i64)]) {
    for (rel, body, mode, secs) in files {
        let p = node.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(*secs as u64);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(t))
            .unwrap();
    }
}

/// Waits until `node` holds every file of `files` as written, then checks modes and mtimes.
async fn wait_tree(node: &TestNode, files: &[(String, Vec<u8>, u32, i64)]) {
    wait(&format!("{} files on {}", files.len(), node.name), || {
        files.iter().all(|(rel, body, _, secs)| {
            read(&node.path(rel)).as_deref() == Some(body.as_slice())
                && std::fs::metadata(node.path(rel)).is_ok_and(|m| m.mtime() == *secs)
        })
    })
    .await;
    for (rel, _, mode, _) in files {
        let m = std::fs::metadata(node.path(rel)).unwrap();
        assert_eq!(m.mode() & 0o777, *mode, "mode of {rel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_small_files_arrive_whole_and_are_replaced_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    // Beta joins an indexed share with an empty folder: every file is a download.
    nodes[1].stop().await;
    let first = tree(0);
    write_tree(&nodes[0], &first);
    wait("alpha indexed the tree", || nodes[0].status().shares[0].files == first.len() as u64).await;
    nodes[1].start().await;
    wait_tree(&nodes[1], &first).await;
    wait_in_sync(&nodes).await;

    // A new version of a third of them, on the other node: replaced where they are.
    let second: Vec<_> = tree(1).into_iter().enumerate().filter(|(i, _)| i % 3 == 0).map(|(_, f)| f).collect();
    write_tree(&nodes[1], &second);
    wait_tree(&nodes[0], &second).await;
    wait_in_sync(&nodes).await;
    // Those with new content replaced a version, which is kept; the others only
    // took the new mtime.
    // (At least: a file caught by beta's scanner between its truncation and its
    // write can go out empty first, and that version is kept too. See
    // scan::RECENT for how the scanner narrows that window.)
    let replaced = second.iter().filter(|(rel, body, ..)| first.iter().any(|(r, b, ..)| r == rel && b != body)).count();
    let kept = walkdir_count(&nodes[0].path(".meshsync/versions"));
    assert!(kept >= replaced, "every replaced version is kept: {kept} of {replaced}");
    for (rel, body, ..) in &first {
        if second.iter().any(|(r, b, ..)| r == rel && b != body) {
            let (dir, name) = rel.rsplit_once('/').unwrap();
            let found = std::fs::read_dir(nodes[0].path(&format!(".meshsync/versions/{dir}")))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{name}~")))
                .any(|e| std::fs::read(e.path()).is_ok_and(|k| &k == body));
            assert!(found, "the replaced version of {rel} is kept");
        }
    }
    let sparse = std::fs::metadata(nodes[0].path("d1/f0001")).unwrap();
    assert_eq!(sparse.len(), 5000, "an all-zero file keeps its length");
    for n in &nodes {
        let st = n.status();
        assert_eq!(st.shares[0].local_changes, 0, "{}: nothing came back as a local change", n.name);
        assert_eq!(st.counters.conflicts, 0, "{}: no conflict", n.name);
        let tmp = n.path(".meshsync/tmp");
        let left = walkdir_count(&tmp);
        assert_eq!(left, 0, "{}: no temp file left in {}", n.name, tmp.display());
    }
    stop_all(&mut nodes).await;
}

/// Files below `dir`, at any depth.
fn walkdir_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { walkdir_count(&e.path()) } else { 1 })
        .sum()
}

/// More paths than one plan takes at a time (`pass::PLAN_PAGE`, 4096) arrive whole
/// and go whole: a directory sorts before its files, so its delete can come a page
/// before theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_larger_than_a_plan_page_arrives_and_goes_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let files: Vec<(String, Vec<u8>)> =
        (0..5000u32).map(|i| (format!("top/d{:02}/e{}/f{i:05}", i % 40, i % 3), i.to_le_bytes().to_vec())).collect();
    for (rel, body) in &files {
        let p = nodes[0].path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    wait("beta has every file", || files.iter().all(|(rel, body)| read(&nodes[1].path(rel)).as_ref() == Some(body)))
        .await;
    wait_in_sync(&nodes).await;
    // All of the share gone at once stops the scan until the user confirms.
    std::fs::remove_dir_all(nodes[0].path("top")).unwrap();
    wait("alpha pauses on the delete brake", || nodes[0].status().shares[0].paused.is_some()).await;
    meshsync::ops::control::confirm_deletes(&nodes[0].home, SHARE.into()).await.unwrap();
    wait("beta deleted the whole tree", || !nodes[1].path("top").exists()).await;
    wait_in_sync(&nodes).await;
    for n in &nodes {
        let st = n.status();
        assert_eq!(st.shares[0].files, 0, "{}: no file left in the index", n.name);
        assert_eq!(st.shares[0].local_changes, 0, "{}: nothing came back as a local change", n.name);
        assert_eq!(st.counters.conflicts, 0, "{}: no conflict", n.name);
    }
    stop_all(&mut nodes).await;
}
