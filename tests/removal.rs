//! Removing a node: an admin signs a removal record, every member drops and
//! refuses the node, members that were offline learn it on connect, and a record
//! not signed by an admin changes nothing. Each refusal has its own test.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::identity::record::removal_message;
use meshsync::identity::{CaMaterial, Identity};
use meshsync::proto::{self, Control, RemovalNotice};
use std::time::{Duration, Instant};

fn knows(node: &TestNode, name: &str) -> bool {
    node.status().peers.iter().any(|p| p.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_is_dropped_and_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let gamma = nodes[2].home.clone();
    // Through the control socket, as `meshsync peer remove gamma` does.
    let removed = meshsync::ops::control::remove_peer(&nodes[0].home, "gamma".into()).await.unwrap();
    assert_eq!(removed.name, "gamma");
    let heard = Instant::now();
    wait("alpha and beta drop gamma", || !knows(&nodes[0], "gamma") && !knows(&nodes[1], "gamma")).await;
    wait("gamma has nobody", || connected(&nodes[2]) == 0).await;
    println!("gamma dropped by both members {} ms after the removal", heard.elapsed().as_millis());
    // It receives nothing new.
    std::fs::write(nodes[0].path("after-removal"), b"new").unwrap();
    wait_content(&nodes[..2], "after-removal", b"new").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!nodes[2].path("after-removal").exists());
    // And its certificate is refused at the handshake, by the admin and by a member.
    nodes[2].stop().await;
    assert!(refused_as(&gamma, nodes[0].listen).await);
    assert!(refused_as(&gamma, nodes[1].listen).await);
    // Kept across a restart.
    nodes[1].stop().await;
    nodes[1].start().await;
    assert!(refused_as(&gamma, nodes[1].listen).await);
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_was_offline_learns_the_removal_on_connect() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let gamma = nodes[2].home.clone();
    nodes[1].stop().await;
    nodes[2].stop().await;
    nodes[0].handle().remove_peer("gamma").await.unwrap();
    // gamma comes back first and reaches beta, which has not heard of the removal...
    nodes[2].start().await;
    nodes[1].start().await;
    // ...until beta meets alpha, which passes the record on.
    wait("beta hears of the removal and drops gamma", || !knows(&nodes[1], "gamma")).await;
    wait("gamma has nobody", || connected(&nodes[2]) == 0).await;
    nodes[2].stop().await;
    assert!(refused_as(&gamma, nodes[1].listen).await);
    stop_all(&mut nodes).await;
}

/// A removal record for gamma signed with `key` (not the mesh CA's), sent by beta.
async fn send_forged_removal(nodes: &mut [TestNode], key: CaMaterial, refusals: u64) {
    let gamma = Identity::load(&nodes[2].home).unwrap().id;
    let issued = 1_700_000_000;
    let signature = key.sign_record(&removal_message(&gamma, "gamma", issued)).unwrap();
    nodes[1].stop().await;
    let mut s = raw_session(&nodes[1].home, nodes[0].listen, &[]).await;
    let notice = RemovalNotice { node: gamma.0, name: "gamma".into(), issued, signature };
    proto::write_frame(&mut s.send, &Control::Removed(notice)).await.unwrap();
    wait("the forged record refused", || nodes[0].status().counters.refused >= refusals).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_removal_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    // beta, a member, signs with its own key; then with the CA key of a mesh of its own.
    let beta = Identity::load(&nodes[1].home).unwrap();
    send_forged_removal(&mut nodes, CaMaterial { cert_der: vec![], key_der: beta.key_der }, 1).await;
    let other = meshsync::identity::new_mesh("other").unwrap().ca().unwrap();
    send_forged_removal(&mut nodes, other, 2).await;
    // gamma is still a member: connected to alpha, and its files still arrive.
    std::fs::write(nodes[2].path("still-here"), b"yes").unwrap();
    wait("gamma's file reaches alpha", || read(&nodes[0].path("still-here")).as_deref() == Some(b"yes")).await;
    assert!(nodes[0].status().peers.iter().any(|p| p.name == "gamma" && p.connected));
    stop_all(&mut nodes).await;
}
