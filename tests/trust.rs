//! Joining and refusing: bad tokens, other meshes, hostile peers.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::daemon;
use meshsync::home::Home;
use meshsync::identity::token::JoinToken;
use meshsync::identity::Role;
use meshsync::setup;
use serde::Serialize;
use std::time::Duration;

async fn refused(dir: &std::path::Path, name: &str, token: &str) -> String {
    let home = Home::new(dir.join(name));
    let err = daemon::join(&home, token, name, free_addr(), &[]).await.unwrap_err();
    assert!(!home.config().exists() && !home.node_key().exists(), "a refused join writes nothing");
    format!("{err:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = first(dir.path(), "alpha", SendReceive);
    a.start().await;
    let peers_before = a.status().peers.len();

    // Used twice.
    let t = setup::invite(&a.home, Duration::from_secs(600), Role::Member).unwrap();
    daemon::join(&Home::new(dir.path().join("ok")), &t, "ok", free_addr(), &[]).await.unwrap();
    let e = refused(dir.path(), "again", &t).await;
    assert!(e.contains("already used"), "{e}");

    // Expired.
    let t = setup::invite(&a.home, Duration::from_secs(0), Role::Member).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = refused(dir.path(), "late", &t).await;
    assert!(e.contains("expired"), "{e}");

    // Forged secret.
    let mut forged =
        JoinToken::decode(&setup::invite(&a.home, Duration::from_secs(600), Role::Member).unwrap()).unwrap();
    forged.secret[0] ^= 1;
    let e = refused(dir.path(), "forger", &forged.encode()).await;
    assert!(e.contains("not valid"), "{e}");

    // A token naming another mesh's CA: the inviter's certificate does not match.
    let other = first(dir.path(), "other", SendReceive);
    let mut foreign =
        JoinToken::decode(&setup::invite(&other.home, Duration::from_secs(600), Role::Member).unwrap()).unwrap();
    foreign.addrs = vec![a.listen];
    let e = refused(dir.path(), "foreign", &foreign.encode()).await;
    assert!(e.contains("unreachable") || e.contains("mesh"), "{e}");

    // Nobody listening.
    let mut gone = JoinToken::decode(&setup::invite(&a.home, Duration::from_secs(600), Role::Member).unwrap()).unwrap();
    gone.addrs = vec![free_addr()];
    let e = refused(dir.path(), "lonely", &gone.encode()).await;
    assert!(e.contains("unreachable"), "{e}");

    // Garbage.
    let e = refused(dir.path(), "junk", "hello").await;
    assert!(e.contains("not a meshsync join token"), "{e}");

    // Only the one good join changed alpha's peer list.
    assert_eq!(a.status().peers.len(), peers_before + 1);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_from_another_mesh_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let mut stranger = first(dir.path(), "stranger", SendReceive);
    stranger.start().await;
    // The stranger's own keys, dialing from an endpoint of its own.
    let ident = meshsync::identity::Identity::load(&stranger.home).unwrap();
    let net = meshsync::net::Net::bind(&ident, "127.0.0.1:0".parse().unwrap()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), net.connect(nodes[0].listen)).await.unwrap();
    assert!(r.is_err(), "a certificate from another CA fails the handshake");
    std::fs::write(stranger.path("secret"), b"x").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!nodes[0].path("secret").exists());
    assert!(nodes[0].status().peers.iter().all(|p| p.name != "stranger"));
    stranger.stop().await;
    for mut n in nodes {
        n.stop().await;
    }
}

// A hostile peer speaking the protocol with hand-made entries (same serde layout as
// the real ones, but free to carry any path).
#[derive(Serialize)]
struct EvilEntry {
    path: String,
    kind: EvilKind,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    version: Vec<(u64, u64)>,
    modified_by: u64,
    deleted: bool,
    blocks: Vec<([u8; 32], u32)>,
}
#[derive(Serialize)]
#[allow(dead_code)]
enum EvilKind {
    File,
    Dir,
    Symlink { target: String },
}
#[derive(Serialize)]
enum EvilControl {
    Index { share: String, index_id: u64, entries: Vec<EvilEntry>, upto_seq: u64 },
}

fn evil(path: &str, kind: EvilKind) -> EvilEntry {
    EvilEntry {
        path: path.into(),
        kind,
        size: 0,
        mode: 0o644,
        mtime: (0, 0),
        version: vec![(1, 99)],
        modified_by: 1,
        deleted: false,
        blocks: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_paths_are_refused_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    // beta turns hostile: stop its daemon, speak to alpha with its certificate.
    nodes[1].stop().await;
    let ident = meshsync::identity::Identity::load(&nodes[1].home).unwrap();
    let net = meshsync::net::Net::bind(&ident, free_addr()).unwrap();
    let conn = net.connect(nodes[0].listen).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = meshsync::proto::Hello { minor: 0, name: "beta".into(), addrs: vec![], shares: vec![] };
    meshsync::proto::write_frame(&mut send, &hello).await.unwrap();
    let _: Option<meshsync::proto::Hello> = meshsync::proto::read_frame(&mut recv).await.unwrap();

    // An escaping symlink decodes but fails validation: refused, session goes on.
    let batch = EvilControl::Index {
        share: SHARE.into(),
        index_id: 1,
        entries: vec![evil("innocent-link", EvilKind::Symlink { target: "../../../etc".into() })],
        upto_seq: 1,
    };
    meshsync::codec::write_frame(&mut send, &batch).await.unwrap();
    wait("symlink refused", || nodes[0].status().counters.refused >= 1).await;

    // Paths that leave the share do not even decode: refused, session closed.
    for bad in ["../escape.txt", "/etc/evil", "a/../../b"] {
        let conn = net.connect(nodes[0].listen).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        meshsync::proto::write_frame(&mut send, &hello).await.unwrap();
        let _: Option<meshsync::proto::Hello> = meshsync::proto::read_frame(&mut recv).await.unwrap();
        let batch = EvilControl::Index {
            share: SHARE.into(),
            index_id: 1,
            entries: vec![evil(bad, EvilKind::Dir)],
            upto_seq: 1,
        };
        meshsync::codec::write_frame(&mut send, &batch).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!dir.path().join("escape.txt").exists());
    assert!(!std::path::Path::new("/etc/evil").exists());
    assert!(std::fs::symlink_metadata(nodes[0].path("innocent-link")).is_err());
    let st = nodes[0].status();
    assert!(st.counters.refused >= 4, "{:?}", st.counters);
    // And alpha still works.
    std::fs::write(nodes[0].path("still-alive"), b"yes").unwrap();
    wait("alpha still scanning", || nodes[0].status().shares[0].files >= 1).await;
    nodes[0].stop().await;
}
