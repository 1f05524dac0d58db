//! Nothing is lost: a share folder that is missing, replaced or unmarked pauses the
//! share instead of announcing every file deleted; a receive-only local change
//! survives a remote delete.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::ops::control;

fn paused(n: &TestNode) -> Option<String> {
    n.status().shares[0].paused.clone()
}

fn files(n: &TestNode) -> u64 {
    n.status().shares[0].files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_folder_missing_at_start_pauses_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    for i in 0..20 {
        std::fs::write(nodes[0].path(&format!("f{i}")), format!("{i}")).unwrap();
    }
    wait_content(&nodes, "f19", b"19").await;
    wait_in_sync(&nodes).await;
    // What an unmounted disk looks like to a daemon that starts.
    nodes[0].stop().await;
    let away = dir.path().join("away");
    std::fs::rename(&nodes[0].root, &away).unwrap();
    nodes[0].start().await;
    wait("alpha pauses the share", || paused(&nodes[0]).is_some()).await;
    let why = paused(&nodes[0]).unwrap();
    assert!(why.contains("missing") && why.contains("share resume"), "{why}");
    assert!(!nodes[0].root.exists(), "the folder is not made again");
    assert_eq!(files(&nodes[0]), 20, "no file recorded deleted");
    let err = control::rescan(&nodes[0].home, None).await.unwrap_err().to_string();
    assert!(err.contains("paused"), "rescan says the share is paused: {err}");
    let err = control::wait(&nodes[0].home, None, None, meshsync::ops::status::Waiting::ForEveryMember)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("paused"), "wait says the share is paused: {err}");
    // The disk is back: the share resumes by itself, and is as it was.
    std::fs::rename(&away, &nodes[0].root).unwrap();
    wait("alpha resumes", || paused(&nodes[0]).is_none()).await;
    std::fs::write(nodes[0].path("after"), b"a").unwrap();
    wait_content(&nodes, "after", b"a").await;
    for i in 0..20 {
        assert_eq!(read(&nodes[1].path(&format!("f{i}"))), Some(format!("{i}").into_bytes()));
    }
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_folder_replaced_while_running_pauses_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    std::fs::write(nodes[0].path("before"), b"1").unwrap();
    wait_content(&nodes, "before", b"1").await;
    wait_in_sync(&nodes).await;
    // Removed and made again empty (or a disk unmounted under a running daemon).
    std::fs::rename(&nodes[0].root, dir.path().join("old-alpha")).unwrap();
    std::fs::create_dir(&nodes[0].root).unwrap();
    // (Between the two steps it may say the folder is missing.)
    wait("alpha pauses: no marker", || paused(&nodes[0]).is_some_and(|p| p.contains("marker"))).await;
    assert_eq!(files(&nodes[0]), 1, "nothing recorded deleted");
    assert!(nodes[1].path("before").exists());
    // Changes from the mesh are not written into the unmarked folder either.
    std::fs::write(nodes[1].path("from-beta"), b"b").unwrap();
    wait("beta scans its new file", || files(&nodes[1]) == 2).await;
    assert!(!nodes[0].path("from-beta").exists());
    // The user says this empty folder is the share now: that is a delete, on purpose.
    nodes[0].handle().resume(SHARE).unwrap();
    wait("the confirmed folder's delete reaches beta", || !nodes[1].path("before").exists()).await;
    wait_content(&nodes, "from-beta", b"b").await;
    // And the new folder is watched.
    std::fs::write(nodes[0].path("after"), b"2").unwrap();
    wait_content(&nodes, "after", b"2").await;
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receive_only_local_edit_survives_a_remote_delete_until_reverted() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, ReceiveOnly]).await;
    std::fs::write(nodes[0].path("f.txt"), b"upstream").unwrap();
    std::fs::write(nodes[0].path("g.txt"), b"upstream").unwrap();
    wait_content(&nodes, "g.txt", b"upstream").await;
    wait_content(&nodes, "f.txt", b"upstream").await;
    std::fs::write(nodes[1].path("f.txt"), b"edited on the backup").unwrap();
    std::fs::write(nodes[1].path("mine.txt"), b"added on the backup").unwrap();
    wait("beta records its local changes", || nodes[1].status().shares[0].local_changes == 2).await;
    std::fs::remove_file(nodes[0].path("f.txt")).unwrap();
    std::fs::remove_file(nodes[0].path("g.txt")).unwrap();
    // The untouched file follows the delete; the edited one stays.
    wait("g.txt deleted on beta", || !nodes[1].path("g.txt").exists()).await;
    assert_eq!(read(&nodes[1].path("f.txt")).as_deref(), Some(&b"edited on the backup"[..]));
    let st = nodes[1].status();
    assert_eq!(st.shares[0].local_change_paths, vec!["f.txt".to_string(), "mine.txt".to_string()]);
    assert!(st.human().contains("meshsync revert s"), "{}", st.human());
    // On request the mesh's version comes back: deleted, and the local addition goes.
    assert_eq!(control::revert(&nodes[1].home, SHARE.into()).await.unwrap(), 2);
    wait("f.txt reverted", || !nodes[1].path("f.txt").exists() && !nodes[1].path("mine.txt").exists()).await;
    wait("no local changes left", || nodes[1].status().shares[0].local_changes == 0).await;
    assert!(!nodes[0].path("mine.txt").exists(), "a reverted addition never reaches the mesh");
    let err = control::revert(&nodes[0].home, SHARE.into()).await.unwrap_err().to_string();
    assert!(err.contains("receive-only"), "{err}");
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_that_finds_most_files_gone_pauses_until_the_user_confirms() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    std::fs::create_dir(nodes[0].path("site")).unwrap();
    for i in 0..150 {
        std::fs::write(nodes[0].path(&format!("site/{i}.html")), format!("page {i}")).unwrap();
    }
    // Every page known to alpha: the first ones may be written before the new
    // folder's watch exists, and are found when the folder is scanned, a second
    // after it was made.
    wait("alpha indexed every page", || files(&nodes[0]) == 150).await;
    wait_content(&nodes, "site/0.html", b"page 0").await;
    wait_content(&nodes, "site/149.html", b"page 149").await;
    wait_in_sync(&nodes).await;
    // A deploy script gone astray: most of the tree is gone at once.
    std::fs::remove_dir_all(nodes[0].path("site")).unwrap();
    wait("alpha pauses on the brake", || paused(&nodes[0]).is_some_and(|p| p.contains("confirm-deletes"))).await;
    assert_eq!(files(&nodes[0]), 150, "nothing recorded deleted");
    assert!(nodes[1].path("site/0.html").exists());
    let err = control::rescan(&nodes[0].home, None).await.unwrap_err().to_string();
    assert!(err.contains("paused"), "{err}");
    // Meant: confirmed, the deletions reach the peer.
    control::confirm_deletes(&nodes[0].home, SHARE.into()).await.unwrap();
    wait("the deletions reach beta", || !nodes[1].path("site/0.html").exists()).await;
    wait("alpha resumes", || paused(&nodes[0]).is_none()).await;
    let again = control::confirm_deletes(&nodes[0].home, SHARE.into()).await.unwrap_err().to_string();
    assert!(again.contains("not paused for deletions"), "{again}");
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_peer_replaces_or_deletes_is_kept_and_can_be_restored() {
    use meshsync::ops::versions;
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    std::fs::write(nodes[0].path("f.txt"), b"first").unwrap();
    wait_content(&nodes, "f.txt", b"first").await;
    std::fs::write(nodes[0].path("f.txt"), b"second").unwrap();
    wait_content(&nodes, "f.txt", b"second").await;
    let kept = versions::list(&nodes[1].home, SHARE, Some("f.txt")).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0].file).unwrap(), b"first");
    std::fs::remove_file(nodes[0].path("f.txt")).unwrap();
    wait("the delete reaches beta", || !nodes[1].path("f.txt").exists()).await;
    let kept = versions::list(&nodes[1].home, SHARE, None).unwrap();
    assert_eq!(kept.iter().map(|v| std::fs::read(&v.file).unwrap()).collect::<Vec<_>>(), [&b"first"[..], b"second"]);
    assert!(versions::table(&kept).contains("f.txt"));
    // Restored on beta: a local edit there, which comes back to alpha.
    versions::restore(&nodes[1].home, SHARE, "f.txt", None).unwrap();
    wait_content(&nodes, "f.txt", b"second").await;
    let err = versions::restore(&nodes[1].home, SHARE, "never.txt", None).unwrap_err().to_string();
    assert!(err.contains("no kept version of never.txt"), "{err}");
    for mut n in nodes {
        n.stop().await;
    }
}
