//! Swarm distribution on 127.0.0.1: receivers feed each other.

mod common;

use common::*;
use meshsync::config::ShareMode::SendReceive;

/// The source's upload is capped (like a slow uplink), so the only way to finish is
/// for the receivers to pass chunks among themselves; the test counts who sent what.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_upload_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), &[SendReceive; 4], "upload_limit_mbit = 40").await;
    let size = 16 << 20;
    let data = random_bytes(size, 42);
    place(dir.path(), &nodes[0], "blob.bin", &data);
    wait_content(&nodes, "blob.bin", &data).await;

    let sent: Vec<u64> = nodes.iter().map(|n| n.status().counters.chunk_bytes_sent).collect();
    let received: Vec<u64> = nodes.iter().map(|n| n.status().counters.chunk_bytes_received).collect();
    println!("chunk bytes sent per node: {sent:?}; received: {received:?}");
    let uploaders = sent[1..].iter().filter(|s| **s > 0).count();
    assert!(uploaders >= 2, "at least two receivers uploaded chunks to others: {sent:?}");
    let from_receivers: u64 = sent[1..].iter().sum();
    assert!(from_receivers >= size as u64, "receivers supplied at least one copy's worth: {sent:?}");
    assert!(sent[0] < 2 * size as u64, "the source sent less than two of the three copies: {sent:?}");
    assert!(sent.iter().sum::<u64>() >= received.iter().sum::<u64>(), "nothing received that was not sent");
    // Index batches and progress maps share each control stream; none may arrive torn.
    let refused: Vec<u64> = nodes.iter().map(|n| n.status().counters.refused).collect();
    assert!(refused.iter().all(|r| *r == 0), "no malformed frame or map: {refused:?}");
}

/// Two holders, both with a capped upload, feed a third node; one of them stops
/// early. The download finishes from the other without starting over: the holders
/// send the file once, plus at most what the departed one had in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_leaves_mid_download_costs_only_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cap = "upload_limit_mbit = 40";
    let mut nodes = mesh_with(dir.path(), &[SendReceive; 2], cap).await;
    let size = 24 << 20;
    let body = random_bytes(size, 7);
    place(dir.path(), &nodes[0], "big.bin", &body);
    wait_content(&nodes, "big.bin", &body).await;
    nodes[1].stop().await;
    node_option(&nodes[1].home, cap);
    nodes[1].start().await;
    wait("beta back", || nodes.iter().all(|n| n.status().peers.iter().any(|p| p.connected))).await;
    wait_in_sync(&nodes).await;

    let sent = |n: &TestNode| n.status().counters.chunk_bytes_sent;
    let (alpha_before, beta_before) = (sent(&nodes[0]), sent(&nodes[1]));
    let mut gamma = join_then_share(dir.path(), &nodes[1], "gamma", 2).await;

    let progress = |g: &TestNode| g.status().transfers.iter().map(|t| t.done).sum::<u64>();
    let arrived = |g: &TestNode| read(&g.path("big.bin")).is_some_and(|b| b.len() == size);
    // Also ends if the file is already there, so a slow poll fails with the assert
    // below, not a time-out.
    wait("gamma a part of the way, with chunks from beta", || {
        arrived(&gamma) || (progress(&gamma) >= size as u64 / 8 && sent(&nodes[1]) > beta_before)
    })
    .await;
    let done_at_stop = progress(&gamma);
    let beta_sent = sent(&nodes[1]) - beta_before;
    nodes[1].stop().await;
    assert!(
        done_at_stop > 0 && done_at_stop < size as u64 / 2,
        "beta stopped half way or sooner, at {done_at_stop} bytes"
    );
    wait("big.bin on gamma", || read(&gamma.path("big.bin")).as_deref() == Some(&body[..])).await;
    // What the holders sent gamma: beta's share until it stopped (its last pieces may
    // not have arrived), alpha's to the end. Starting over would be about twice the file.
    let alpha_sent = sent(&nodes[0]) - alpha_before;
    let total = alpha_sent + beta_sent;
    println!("beta stopped at {done_at_stop} of {size} bytes; beta sent {beta_sent}, alpha {alpha_sent}");
    assert!(total < size as u64 + size as u64 / 4, "not started over: {total} bytes sent for {size}");
    gamma.stop().await;
    nodes[0].stop().await;
}

/// `meshsync wait` after an upload job's `meshsync rescan`: right after the rescan
/// is asked for, the share reads as scanning (not caught up), and once caught up the
/// other node has the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caught_up_only_after_the_asked_scan_and_every_peer_have_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive; 2]).await;
    wait("caught up at start", || nodes[0].status().behind(None).is_empty()).await;
    let body = random_bytes(3 << 20, 5);
    place(dir.path(), &nodes[0], "upload.bin", &body);
    nodes[0].handle().rescan(Some(SHARE)).unwrap();
    let why = nodes[0].status().behind(None);
    assert!(why.iter().any(|w| w.ends_with("scanning")), "a rescan asked for is not caught up yet: {why:?}");
    wait("caught up after the upload", || nodes[0].status().behind(None).is_empty()).await;
    assert_eq!(read(&nodes[1].path("upload.bin")), Some(body), "caught up means beta has it");
    for mut n in nodes {
        n.stop().await;
    }
}

/// A share added while connected: the peer named it in its Hello already, so no
/// `ShareAdded` comes back, and its empty copy still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_added_at_run_time_knows_the_peers_that_already_had_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut alpha = first(dir.path(), "alpha", SendReceive);
    alpha.start().await;
    let beta = join_then_share(dir.path(), &alpha, "beta", 1).await;
    let alpha_id = alpha.status().node.id;
    wait("beta lists alpha under the share it added", || {
        beta.status().shares.first().is_some_and(|s| s.peers.iter().any(|p| p.id == alpha_id))
    })
    .await;
    wait("and alpha lists beta", || alpha.status().shares[0].peers.len() == 1).await;
    for mut n in [alpha, beta] {
        n.stop().await;
    }
}

/// A peer that left a share keeps its old entries in our index, but is no longer
/// waited for once it connects without the share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_left_the_share_is_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive; 2]).await;
    let body = random_bytes(1 << 20, 7);
    place(dir.path(), &nodes[1], "from-beta.bin", &body);
    wait_content(&nodes, "from-beta.bin", &body).await;
    wait("alpha lists beta", || nodes[0].status().shares[0].peers.len() == 1).await;
    nodes[1].stop().await;
    let cfg = nodes[1].home.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let cut = text.find("[[share]]").expect("beta's config has the share");
    std::fs::write(&cfg, &text[..cut]).unwrap();
    nodes[1].start().await;
    wait("beta is back", || nodes[0].status().peers.iter().any(|p| p.connected)).await;
    wait("alpha no longer lists beta under the share", || nodes[0].status().shares[0].peers.is_empty()).await;
    for mut n in nodes {
        n.stop().await;
    }
}

/// Peers whose copies are empty never send an index; they take part all the same,
/// so `wait` must not call the mesh caught up before they have the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_with_empty_copies_are_known_and_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive; 3]).await;
    let share_peers = |n: &TestNode| n.status().shares[0].peers.clone();
    wait("alpha knows both peers take part", || share_peers(&nodes[0]).len() == 2).await;
    assert!(share_peers(&nodes[0]).iter().all(|p| p.in_sync), "nothing to need on either side");
    assert_eq!(nodes[0].status().counters.entries_received, 0, "known from their Hello, not from an index");
    let body = random_bytes(1 << 20, 6);
    place(dir.path(), &nodes[0], "first.bin", &body);
    nodes[0].handle().rescan(Some(SHARE)).unwrap();
    wait("caught up after the upload", || nodes[0].status().behind(None).is_empty()).await;
    for n in &nodes[1..] {
        assert_eq!(read(&n.path("first.bin")), Some(body.clone()), "caught up means every peer has it");
    }
    for mut n in nodes {
        n.stop().await;
    }
}
