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
    let tmp = dir.path().join("blob.tmp");
    std::fs::write(&tmp, &data).unwrap();
    std::fs::rename(&tmp, nodes[0].path("blob.bin")).unwrap();
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
