//! `meshsync bench` on a running mesh: probes every peer, swarms a blob, cleans up.

mod common;

use common::*;
use meshsync::config::ShareMode::SendReceive;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_measures_every_peer_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive; 3]).await;
    let mut events = Vec::new();
    let report = meshsync::ops::control::bench(&nodes[0].home, 8 << 20, 1 << 20, |e| events.push(e.clone()))
        .await
        .expect("bench runs");
    assert_eq!(report.bytes, 8 << 20);
    assert_eq!(report.peers.len(), 2);
    for p in &report.peers {
        assert!(p.mbit_s > 0.0 && p.rtt_ms >= 0.0, "{p:?}");
        assert!(p.secs.is_some(), "{} got a verified copy: {report:?}", p.name);
    }
    assert!(report.swarm_secs.is_some() && report.serial_estimate_secs > 0.0);
    let probes = events.iter().filter(|e| matches!(e, meshsync::daemon::bench::BenchEvent::Probe { .. })).count();
    assert_eq!(probes, 2);
    // The blob never enters a share, and every node deletes it.
    wait("bench blobs removed", || {
        nodes.iter().all(|n| {
            !n.home.dir().join("bench").join("x").exists()
                && std::fs::read_dir(n.home.dir().join("bench")).map(|d| d.count() == 0).unwrap_or(true)
        })
    })
    .await;
    for n in &nodes {
        assert_eq!(
            std::fs::read_dir(&n.root).unwrap().filter(|e| e.as_ref().unwrap().file_name() != ".meshsync").count(),
            0
        );
        assert!(n.status().shares.iter().all(|s| !s.name.starts_with("bench:")), "no bench share left");
    }
    // A bench without peers says so.
    let lone = tempfile::tempdir().unwrap();
    let mut solo = first(lone.path(), "solo", SendReceive);
    solo.start().await;
    let err = meshsync::ops::control::bench(&solo.home, 1 << 20, 1 << 20, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("no peer is connected"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_blobs_are_bounded_by_each_nodes_limit() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_with(dir.path(), &[SendReceive; 3], "bench_max_mib = 4").await;
    // Over its own limit, a node does not start a run.
    let err = meshsync::ops::control::bench(&nodes[0].home, 8 << 20, 1 << 20, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("bench_max_mib"), "{err}");
    // Offered a blob over its limit, it refuses at once, and says so: the run ends
    // without waiting for it.
    let report = meshsync::ops::control::bench(&nodes[1].home, 8 << 20, 1 << 20, |_| {}).await.expect("bench runs");
    let of = |name: &str| report.peers.iter().find(|p| p.name == name).map(|p| p.secs);
    assert_eq!(of("alpha"), Some(None), "the limited node fetched nothing: {report:?}");
    assert!(of("gamma").is_some_and(|s| s.is_some()), "the other peer got its copy: {report:?}");
    assert!(
        std::fs::read_dir(nodes[0].home.dir().join("bench")).map(|d| d.count() == 0).unwrap_or(true),
        "nothing written for the refused offer"
    );
}
