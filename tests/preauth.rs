//! What a stranger, and a member, cannot make a node do: one test per refusal of
//! the pre-authentication budget and the gossip bounds (README, "What a stranger
//! can do"; PROTOCOL.md §10).

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::identity::Identity;
use meshsync::identity::Role;
use meshsync::net::gate::{CLOSE_BAD_JOIN_REQUEST, CLOSE_BUSY, CLOSE_LATE_JOIN_REQUEST};
use meshsync::proto::{self, Control, Hello, JoinReply, JoinRequest, PeerInfo};
use meshsync::{net, setup};
use std::net::SocketAddr;
use std::time::Duration;

/// A certificate-less join connection to `node` from the loopback address `from`.
async fn stranger(node: &TestNode, from: &str) -> Result<quinn::Connection, net::NetError> {
    let fp = Identity::load(&node.home).unwrap().ca_fingerprint();
    net::connect_join_from(format!("{from}:0").parse().unwrap(), fp, node.listen).await
}

/// How the node closed a connection: its close code and reason.
async fn closed_by(conn: &quinn::Connection) -> (u64, String) {
    // Only a guard against a hang: the node closes it at its deadline, 10 s at most.
    let e = tokio::time::timeout(Duration::from_secs(60), conn.closed()).await.expect("the node closes it");
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            (c.error_code.into_inner(), String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => panic!("closed otherwise: {other}"),
    }
}

/// Waits until `node` counts `n` join connections holding a place.
async fn held_places(node: &TestNode, n: usize) {
    for _ in 0..600 {
        if node.status().node.join_connections == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node holds {} join places, not {n}", node.status().node.join_connections);
}

/// A stranger that took a join place and holds it: it announced a request of 1000
/// bytes and sends none of them.
async fn holder(node: &TestNode, from: &str) -> (quinn::Connection, quinn::SendStream) {
    let conn = stranger(node, from).await.expect("a place is free");
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&1000u32.to_be_bytes()).await.unwrap();
    (conn, send)
}

fn join_request(token_id: [u8; 16], secret: [u8; 32], csr_der: Vec<u8>) -> JoinRequest {
    JoinRequest { token_id, secret, name: "newcomer".into(), addrs: vec![free_addr()], csr_der }
}

/// Sends a join request from a stranger's connection and reads the answer.
async fn ask(conn: &quinn::Connection, req: &JoinRequest) -> JoinReply {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    proto::write_frame(&mut send, req).await.unwrap();
    let _ = send.finish();
    proto::read_frame(&mut recv).await.unwrap().expect("a reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_join_request_is_refused_at_its_length_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = first(dir.path(), "alpha", SendReceive);
    a.start().await;
    let conn = stranger(&a, "127.0.0.1").await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // 4 bytes claiming 32 MiB: refused on their own, nothing read or allocated after them.
    send.write_all(&(32u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(closed_by(&conn).await, (CLOSE_BAD_JOIN_REQUEST as u64, "bad join request".into()));
    // One byte over the join request limit, likewise.
    let conn = stranger(&a, "127.0.0.1").await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&(proto::MAX_JOIN_REQUEST as u32 + 1).to_be_bytes()).await.unwrap();
    assert_eq!(closed_by(&conn).await, (CLOSE_BAD_JOIN_REQUEST as u64, "bad join request".into()));
    assert_eq!(a.status().counters.connections_refused, 2);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_join_request_is_cut_off_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = first(dir.path(), "alpha", SendReceive);
    node_option(&a.home, "join_deadline_secs = 2");
    a.start().await;
    let conn = stranger(&a, "127.0.0.1").await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // Slowloris: a legal length, then a byte every 300 ms, for ever (cut at 2 s here).
    send.write_all(&1000u32.to_be_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        while send.write_all(&[0]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    assert_eq!(closed_by(&conn).await, (CLOSE_LATE_JOIN_REQUEST as u64, "no join request in time".into()));
    trickle.abort();
    assert_eq!(a.status().counters.connections_refused, 1);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_get_four_places_per_address_and_sixteen_in_all() {
    let dir = tempfile::tempdir().unwrap();
    // The places are held, however long this takes on a loaded machine.
    let mut nodes = mesh_with(dir.path(), &[SendReceive, SendReceive], "join_deadline_secs = 300").await;
    let a = &nodes[0];
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(holder(a, "127.0.0.2").await);
    }
    // A client's handshake ends before the node's: wait until the node holds them.
    held_places(a, 4).await;
    // A fifth from the same address: refused, while other addresses still get places.
    let fifth = stranger(a, "127.0.0.2").await;
    assert_eq!(closed_by(&fifth.unwrap()).await.0, CLOSE_BUSY as u64);
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..4 {
            held.push(holder(a, from).await);
        }
    }
    held_places(a, 16).await;
    // Sixteen places taken: an address that holds none is refused too.
    let seventeenth = stranger(a, "127.0.0.6").await;
    assert_eq!(closed_by(&seventeenth.unwrap()).await.0, CLOSE_BUSY as u64);
    // A member's handshake needs no join place: beta dials in while strangers hold them all.
    let beta = Identity::load(&nodes[1].home).unwrap();
    let member = net::Net::bind(&beta, "127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = member.connect(a.listen).await.expect("a member connects while every join place is taken");
    conn.close(0u32.into(), b"done");
    assert_eq!(a.status().counters.connections_refused, 2);
    // Places are given back: once the holders leave, a newcomer is answered.
    for (c, _) in &held {
        c.close(0u32.into(), b"bye");
    }
    drop(held);
    let token = setup::invite(&a.home, Duration::from_secs(600), Role::NoInvite).unwrap();
    let t = meshsync::identity::token::JoinToken::decode(&token).unwrap();
    let req = join_request(t.token_id, [0; 32], vec![]);
    let mut reply = None;
    for _ in 0..100 {
        if let Ok(conn) = stranger(a, "127.0.0.6").await {
            if let Ok(r) = tokio::time::timeout(Duration::from_secs(5), ask(&conn, &req)).await {
                reply = Some(r);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(reply, Some(JoinReply::Refused(ref why)) if why.contains("not valid")), "{reply:?}");
    for n in &mut nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_token_gets_nothing_parsed_or_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = first(dir.path(), "alpha", SendReceive);
    a.start().await;
    let peers_before = a.status().peers.len();
    let token = setup::invite(&a.home, Duration::from_secs(600), Role::NoInvite).unwrap();
    let t = meshsync::identity::token::JoinToken::decode(&token).unwrap();
    // A forged secret with a request that is not a CSR at all: the token is refused
    // and the CSR never looked at (else the answer would name the bad request).
    let mut forged = t.secret;
    forged[0] ^= 1;
    let conn = stranger(&a, "127.0.0.1").await.unwrap();
    let reply = ask(&conn, &join_request(t.token_id, forged, b"not a CSR".to_vec())).await;
    assert!(matches!(&reply, JoinReply::Refused(why) if why.contains("not valid")), "{reply:?}");
    // The real token with the same junk: now the CSR is parsed, and refused.
    let conn = stranger(&a, "127.0.0.1").await.unwrap();
    let reply = ask(&conn, &join_request(t.token_id, t.secret, b"not a CSR".to_vec())).await;
    assert!(matches!(&reply, JoinReply::Refused(why) if why.contains("bad certificate request")), "{reply:?}");
    assert_eq!(a.status().peers.len(), peers_before, "nobody was let in");
    a.stop().await;
}

/// A member speaking for itself with beta's certificate (beta's daemon stopped).
async fn as_member(nodes: &[TestNode], who: usize) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let ident = Identity::load(&nodes[who].home).unwrap();
    let member = net::Net::bind(&ident, free_addr()).unwrap();
    let conn = member.connect(nodes[0].listen).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello { minor: 1, name: nodes[who].name.clone(), addrs: vec![], shares: vec![] };
    proto::write_frame(&mut send, &hello).await.unwrap();
    let _: Option<Hello> = proto::read_frame(&mut recv).await.unwrap();
    (conn, send, recv)
}

fn fake_peer(i: u32, name_len: usize) -> PeerInfo {
    let mut id = [0x5a; 32];
    id[..4].copy_from_slice(&i.to_be_bytes());
    let addr: SocketAddr = format!("198.18.{}.{}:7700", i / 250, 1 + i % 250).parse().unwrap();
    PeerInfo { id, name: "x".repeat(name_len), addrs: vec![addr] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_redirect_others_or_flood_peer_lists() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let gamma_id = Identity::load(&nodes[2].home).unwrap().id;
    let gamma_addrs = |n: &TestNode| {
        let snap = n.handle().snapshot();
        snap.peers.iter().find(|p| p.id == gamma_id).map(|p| p.addrs.clone()).unwrap()
    };
    let before = gamma_addrs(&nodes[0]);
    let known = nodes[0].status().peers.len();
    nodes[1].stop().await;
    let (conn, mut send, _recv) = as_member(&nodes, 1).await;

    // Third-party word about gamma's addresses: ignored.
    let redirect = PeerInfo { id: gamma_id.0, name: "gamma".into(), addrs: vec!["198.18.0.9:7700".parse().unwrap()] };
    proto::write_frame(&mut send, &Control::Peers(vec![redirect])).await.unwrap();
    // One peer over the count limit: the whole list is refused (and, being read after
    // the redirect on the same stream, says that one was dealt with).
    let refused = nodes[0].status().counters.refused;
    let flood: Vec<PeerInfo> = (0..proto::MAX_GOSSIP_PEERS as u32 + 1).map(|i| fake_peer(i, 8)).collect();
    proto::write_frame(&mut send, &Control::Peers(flood)).await.unwrap();
    wait("the long list refused", || nodes[0].status().counters.refused > refused).await;
    assert_eq!(gamma_addrs(&nodes[0]), before, "gamma's own addresses stand");
    assert_eq!(nodes[0].status().peers.len(), known, "nobody of the long list was learned");

    // A list within the count but over the bytes of its frame: the session is closed.
    let fat: Vec<PeerInfo> = (0..proto::MAX_GOSSIP_PEERS as u32).map(|i| fake_peer(i, 2000)).collect();
    let e = proto::write_frame(&mut send, &Control::Peers(fat.clone())).await.unwrap_err();
    assert!(matches!(e, proto::CodecError::TooLarge { max: proto::MAX_PEERS_FRAME, .. }), "{e}");
    meshsync::codec::write_frame(&mut send, &Control::Peers(fat)).await.unwrap();
    assert_eq!(closed_by(&conn).await, (5, "protocol error".into()));
    assert_eq!(nodes[0].status().peers.len(), known);
    for n in &mut nodes {
        n.stop().await;
    }
}
