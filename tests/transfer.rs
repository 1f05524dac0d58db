//! Only what is missing travels: renames, edits, restarts, several sources, big files.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_moves_no_chunk_data_and_an_edit_only_the_changed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let body = random_bytes(4 << 20, 7);
    std::fs::write(a.path("big.bin"), &body).unwrap();
    wait_content(&nodes, "big.bin", &body).await;
    let before = b.status().counters;
    assert!(before.chunk_bytes_received >= body.len() as u64);

    std::fs::rename(a.path("big.bin"), a.path("renamed.bin")).unwrap();
    wait_content(&nodes, "renamed.bin", &body).await;
    wait("old name removed", || !b.path("big.bin").exists()).await;
    let after = b.status().counters;
    assert_eq!(after.chunk_bytes_received, before.chunk_bytes_received, "a rename moves no chunk data");
    assert!(after.chunk_bytes_reused >= body.len() as u64 + before.chunk_bytes_reused);

    // Insert 10 KiB in the middle: a few chunks travel, not the file.
    let mut edited = body[..2 << 20].to_vec();
    edited.extend_from_slice(&random_bytes(10 << 10, 8));
    edited.extend_from_slice(&body[2 << 20..]);
    std::fs::write(a.path("renamed.bin"), &edited).unwrap();
    wait_content(&nodes, "renamed.bin", &edited).await;
    let now = b.status().counters;
    let moved = now.chunk_bytes_received - after.chunk_bytes_received;
    assert!(moved > 0 && moved < 1 << 20, "an insert moved {moved} bytes");
    // ... and its entry went as runs of the version b holds (protocol minor 5),
    // not every block again as when the file was new.
    let told = now.index_bytes_received - after.index_bytes_received;
    assert!(
        told * 2 < before.index_bytes_received,
        "the edit's entry took {told} bytes, the new file's {}",
        before.index_bytes_received
    );
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_exchanges_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    for i in 0..60 {
        std::fs::write(nodes[0].path(&format!("f{i}")), format!("file {i}")).unwrap();
    }
    wait_content(&nodes, "f59", b"file 59").await;
    wait_in_sync(&nodes).await;
    nodes[1].stop().await;
    std::fs::write(nodes[0].path("new-while-down"), b"late").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[1].start().await;
    wait_content(&nodes, "new-while-down", b"late").await;
    wait_in_sync(&nodes).await;
    // Counters restart with the daemon: everything it received came after the restart.
    let got = nodes[1].status().counters.entries_received;
    assert!(got < 10, "after a restart only the change travels, got {got} entries");
    assert!(got >= 1);
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_on_two_peers_is_fetched_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let body = random_bytes(24 << 20, 11);
    std::fs::write(nodes[0].path("both.bin"), &body).unwrap();
    wait_content(&nodes, "both.bin", &body).await;
    wait_in_sync(&nodes).await;
    let sent_before: Vec<u64> = nodes.iter().map(|n| n.status().counters.chunk_bytes_sent).collect();
    let c = join_then_share(dir.path(), &nodes[1], "gamma", 2).await;
    nodes.push(c);
    wait_content(&nodes, "both.bin", &body).await;
    let sent: Vec<u64> =
        nodes[..2].iter().zip(&sent_before).map(|(n, b)| n.status().counters.chunk_bytes_sent - b).collect();
    assert!(sent[0] > 0 && sent[1] > 0, "both holders uploaded: {sent:?}");
    assert!(sent[0] + sent[1] >= body.len() as u64);
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_over_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    // Sparse: 4 GiB + 1 MiB with real data at both ends and past the 4 GiB mark.
    let size: u64 = (4 << 30) + (1 << 20);
    let head = random_bytes(100_000, 1);
    let tail = random_bytes(200_000, 2);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(nodes[0].path("huge.img")).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&head, 0).unwrap();
        f.write_all_at(&tail, size - tail.len() as u64).unwrap();
    }
    wait("huge file", || std::fs::metadata(nodes[1].path("huge.img")).map(|m| m.len() == size).unwrap_or(false)).await;
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(nodes[1].path("huge.img")).unwrap();
    let mut buf = vec![0u8; tail.len()];
    f.read_exact_at(&mut buf, size - tail.len() as u64).unwrap();
    assert_eq!(buf, tail);
    let mut buf = vec![0u8; head.len()];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, head);
    for mut n in nodes {
        n.stop().await;
    }
}

/// Sets a node's `min_free_mib` (the node must be stopped).
fn set_min_free(n: &TestNode, mib: u64) {
    let p = n.home.config();
    let t = std::fs::read_to_string(&p).unwrap();
    let line = t.lines().find(|l| l.starts_with("min_free_mib")).expect("min_free_mib in the config").to_string();
    std::fs::write(&p, t.replace(&line, &format!("min_free_mib = {mib}"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_pauses_the_share_writes_nothing_and_resumes_when_space_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    // No disk has a petabyte free beyond what a file needs: every download is "disk full".
    nodes[1].stop().await;
    set_min_free(&nodes[1], 1 << 30);
    nodes[1].start().await;
    let body = random_bytes(2 << 20, 11);
    std::fs::write(nodes[0].path("big.bin"), &body).unwrap();
    wait("beta paused for disk space", || {
        nodes[1].status().shares.iter().any(|s| s.paused.as_deref().is_some_and(|p| p.contains("disk full")))
    })
    .await;
    assert!(!nodes[1].path("big.bin").exists(), "nothing appears at the target while paused");
    let parts: Vec<_> = std::fs::read_dir(nodes[1].path(meshsync::relpath::PRIVATE_DIR))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".part")).collect())
        .unwrap_or_default();
    assert!(parts.is_empty(), "no temp file is started without room for it: {parts:?}");

    nodes[1].stop().await;
    set_min_free(&nodes[1], 0);
    nodes[1].start().await;
    wait_content(&nodes, "big.bin", &body).await;
    wait("beta resumed", || nodes[1].status().shares.iter().all(|s| s.paused.is_none())).await;
    for mut n in nodes {
        n.stop().await;
    }
}

/// A peer's entry sent as runs of a version this node does not hold (it changed
/// the file meanwhile) is asked for whole, and taken in when it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delta_of_a_version_not_held_is_asked_for_whole() {
    use meshsync::proto::{self, BlockRun, Control, DeltaEntry, WireBlock, WireEntry, WireKind, WireMtime};
    use meshsync::relpath::RelPath;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    nodes[1].stop().await;
    // beta, by hand, with its index of id 1.
    let mut s = raw_session(&nodes[1].home, nodes[0].listen, &[SHARE]).await;
    let blocks: Vec<WireBlock> =
        (0..40u32).map(|i| WireBlock { hash: meshsync::ids::ChunkHash::of(&i.to_le_bytes()), len: 100 }).collect();
    let whole = WireEntry {
        path: RelPath::parse("big.bin").unwrap(),
        kind: WireKind::File,
        size: 4000,
        mode: 0o644,
        mtime: WireMtime { secs: 1_700_000_000, nanos: 0 },
        version: vec![(77, 2)],
        modified_by: 77,
        deleted: false,
        blocks,
    };
    let delta = DeltaEntry {
        entry: WireEntry { blocks: Vec::new(), ..whole.clone() },
        base: meshsync::ids::ContentId([9; 32]),
        runs: vec![BlockRun::Base { start: 0, len: 40 }],
    };
    let batch = Control::IndexDelta {
        share: SHARE.into(),
        index_id: 1,
        entries: vec![],
        same: vec![],
        deltas: vec![delta],
        upto_seq: 5,
    };
    proto::write_frame(&mut s.send, &batch).await.unwrap();
    let asked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match proto::read_frame::<_, Control>(&mut s.recv).await {
                Ok(Some(Control::EntriesWanted { share, index_id, paths })) => return (share, index_id, paths),
                Ok(Some(_)) => continue,
                other => panic!("the session ended: {other:?}"),
            }
        }
    })
    .await
    .expect("alpha asks for the entry whole");
    assert_eq!(asked, (SHARE.to_string(), 1, vec![whole.path.clone()]));
    let needed = |n: &TestNode| n.status().shares[0].needed_paths.clone();
    assert!(needed(&nodes[0]).is_empty(), "nothing is known of the new version yet");
    let reply = Control::EntriesReply { share: SHARE.into(), index_id: 1, entries: vec![whole], absent: vec![] };
    proto::write_frame(&mut s.send, &reply).await.unwrap();
    wait("alpha knows beta's version", || needed(&nodes[0]) == ["big.bin"]).await;
    stop_all(&mut nodes).await;
}
