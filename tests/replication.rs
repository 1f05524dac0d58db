//! Several nodes keep one share identical: every kind of change, conflicts, modes.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

fn set_mtime(p: &std::path::Path, t: SystemTime) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(t)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_change_reaches_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let a = &nodes[0];
    // Gossip: gamma was invited by beta, yet it is connected to alpha.
    assert!(a.status().peers.iter().any(|p| p.name == "gamma" && p.connected));

    std::fs::create_dir_all(a.path("docs/sub dir")).unwrap();
    std::fs::create_dir_all(a.path("empty/dir")).unwrap();
    let body = random_bytes(300_000, 1);
    std::fs::write(a.path("docs/sub dir/ünïcode name.txt"), &body).unwrap();
    std::fs::write(a.path("zero"), b"").unwrap();
    std::fs::write(a.path("script.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(a.path("script.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    set_mtime(&a.path("script.sh"), t);
    std::os::unix::fs::symlink("docs/sub dir", a.path("link-in")).unwrap();
    std::os::unix::fs::symlink("/etc", a.path("link-out")).unwrap();
    std::fs::write(a.path("upload.pdf.filepart"), b"half").unwrap();

    wait_content(&nodes, "docs/sub dir/ünïcode name.txt", &body).await;
    wait_content(&nodes, "script.sh", b"#!/bin/sh\n").await;
    wait_content(&nodes, "zero", b"").await;
    wait("empty dirs and links", || {
        nodes.iter().all(|n| n.path("empty/dir").is_dir() && std::fs::read_link(n.path("link-in")).is_ok())
    })
    .await;
    // The mtime is set after the write: a scan in between replicates the file first
    // with the write's mtime, and the change follows.
    let mtime_of =
        |n: &TestNode| std::fs::metadata(n.path("script.sh")).map(|m| (m.mtime(), m.mtime_nsec())).unwrap_or_default();
    wait("script.sh mtime on every node", || nodes.iter().all(|n| mtime_of(n) == (1_600_000_000, 123_456_789))).await;
    wait_in_sync(&nodes).await;
    for n in &nodes[1..] {
        let m = std::fs::metadata(n.path("script.sh")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o751, "mode on {}", n.name);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789), "mtime ns on {}", n.name);
        assert_eq!(std::fs::read_link(n.path("link-in")).unwrap().to_str(), Some("docs/sub dir"));
        assert!(std::fs::symlink_metadata(n.path("link-out")).is_err(), "escaping symlink skipped");
        assert!(!n.path("upload.pdf.filepart").exists(), "partial upload not replicated");
    }

    // Modify, rename, delete.
    let body2 = random_bytes(200_000, 2);
    std::fs::write(nodes[1].path("zero"), &body2).unwrap();
    wait_content(&nodes, "zero", &body2).await;
    std::fs::rename(nodes[2].path("docs/sub dir/ünïcode name.txt"), nodes[2].path("moved.txt")).unwrap();
    wait_content(&nodes, "moved.txt", &body).await;
    wait("old name gone", || nodes.iter().all(|n| !n.path("docs/sub dir/ünïcode name.txt").exists())).await;
    std::fs::remove_file(a.path("script.sh")).unwrap();
    std::fs::remove_dir(a.path("empty/dir")).unwrap();
    wait("deletes everywhere", || nodes.iter().all(|n| !n.path("script.sh").exists() && !n.path("empty/dir").exists()))
        .await;
    // The partial upload completes: now it travels.
    std::fs::rename(a.path("upload.pdf.filepart"), a.path("upload.pdf")).unwrap();
    wait_content(&nodes, "upload.pdf", b"half").await;
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_pick_one_winner_and_keep_the_loser_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    std::fs::write(nodes[0].path("report.txt"), b"original").unwrap();
    wait_content(&nodes, "report.txt", b"original").await;
    wait_in_sync(&nodes).await;

    // beta edits offline while alpha edits too; beta's edit is later and wins.
    nodes[1].stop().await;
    let base = SystemTime::now();
    std::fs::write(nodes[0].path("report.txt"), b"alpha's edit").unwrap();
    set_mtime(&nodes[0].path("report.txt"), base + Duration::from_secs(100));
    std::fs::write(nodes[1].path("report.txt"), b"beta's edit").unwrap();
    set_mtime(&nodes[1].path("report.txt"), base + Duration::from_secs(200));
    wait_on(&[&nodes[0], &nodes[2]], "report.txt", b"alpha's edit").await;
    nodes[1].start().await;

    wait_content(&nodes, "report.txt", b"beta's edit").await;
    wait("conflict copy everywhere", || {
        nodes.iter().all(|n| {
            std::fs::read_dir(&n.root).unwrap().flatten().any(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.starts_with("report.sync-conflict-")
                    && name.ends_with(".txt")
                    && std::fs::read(e.path()).ok().as_deref() == Some(&b"alpha's edit"[..])
            })
        })
    })
    .await;
    wait_in_sync(&nodes).await;
    for mut n in nodes {
        n.stop().await;
    }
}

/// Waits for content on a subset of nodes.
async fn wait_on(nodes: &[&TestNode], rel: &str, content: &[u8]) {
    wait(&format!("{rel} on {} nodes", nodes.len()), || {
        nodes.iter().all(|n| read(&n.path(rel)).as_deref() == Some(content))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_only_and_receive_only_modes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendOnly, ReceiveOnly]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // From the send-only node: reaches everyone.
    std::fs::write(b.path("from-b"), b"b").unwrap();
    wait_on(&[a, b, c], "from-b", b"b").await;
    // From the send-receive node: the receive-only node gets it, the send-only one does not.
    std::fs::write(a.path("from-a"), b"a").unwrap();
    wait_on(&[a, c], "from-a", b"a").await;
    // From the receive-only node: never announced, reported as a local change.
    std::fs::write(c.path("from-c"), b"c").unwrap();
    wait("local change reported", || c.status().shares[0].local_changes >= 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!a.path("from-c").exists() && !b.path("from-c").exists());
    assert!(!b.path("from-a").exists(), "send-only never applies remote changes");
    let bs = b.status();
    assert!(!bs.shares[0].in_sync, "send-only node reports that a peer has newer data");
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setuid_bits_stay_home_and_are_not_stripped_by_the_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    std::fs::write(nodes[0].path("tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(nodes[0].path("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    wait_content(&nodes, "tool", b"#!/bin/sh\n").await;
    wait_in_sync(&nodes).await;
    // Beta looks at its copy again: 0755 on disk is what it applied, not a change.
    nodes[1].handle().rescan(Some(SHARE)).unwrap();
    wait("beta's rescan", || !nodes[1].status().shares[0].scanning).await;
    wait_in_sync(&nodes).await;
    let mode = |n: &TestNode| std::fs::metadata(n.path("tool")).unwrap().mode() & 0o7777;
    assert_eq!(mode(&nodes[1]), 0o755, "setuid never travels");
    assert_eq!(mode(&nodes[0]), 0o4755, "nor is it taken away from the node that set it");
    for mut n in nodes {
        n.stop().await;
    }
}

/// Appends `lines` to a node's config: the share's table is the last one.
fn share_option(n: &TestNode, lines: &str) {
    let p = n.home.config();
    let t = std::fs::read_to_string(&p).unwrap();
    std::fs::write(p, format!("{t}{lines}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_share_downloads_only_inside_its_window() {
    use chrono::Timelike;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    // Beta's window opens twelve hours from now and lasts a minute: closed now.
    nodes[1].stop().await;
    let hour = (chrono::Local::now().hour() + 12) % 24;
    share_option(&nodes[1], &format!("schedule = \"0 {hour} * * *\"\nschedule_window_mins = 1"));
    nodes[1].start().await;
    wait("connected again", || nodes[0].status().peers.iter().any(|p| p.connected)).await;
    std::fs::write(nodes[0].path("nightly.tar"), b"backup").unwrap();
    wait("beta knows it needs the file", || nodes[1].status().shares[0].peers.iter().any(|p| p.we_need > 0)).await;
    let st = nodes[1].status();
    let w = st.shares[0].schedule.clone().unwrap();
    assert!(!w.open && w.until.is_some(), "{w:?}");
    assert!(st.behind(None).iter().any(|r| r.contains("outside its transfer window")), "{:?}", st.behind(None));
    assert!(!nodes[1].path("nightly.tar").exists(), "nothing is fetched outside the window");
    // A window open now (every minute, for an hour): the file comes.
    nodes[1].stop().await;
    let p = nodes[1].home.config();
    let t = std::fs::read_to_string(&p).unwrap().replace(&format!("\"0 {hour} * * *\""), "\"* * * * *\"");
    std::fs::write(&p, t.replace("schedule_window_mins = 1", "schedule_window_mins = 60")).unwrap();
    nodes[1].start().await;
    wait_content(&nodes, "nightly.tar", b"backup").await;
    assert!(nodes[1].status().shares[0].schedule.as_ref().is_some_and(|w| w.open));
    for mut n in nodes {
        n.stop().await;
    }
}
