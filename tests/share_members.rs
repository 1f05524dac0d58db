//! Per-share membership: an admin names a share's members; a node outside them is
//! not told the share exists, gets none of its index, and its requests for it are
//! refused; changes reach connected nodes at once. Each refusal has its own test.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::identity::record::members_message;
use meshsync::identity::{CaMaterial, Identity};
use meshsync::ids::ChunkHash;
use meshsync::ops::control::{share_peers, PeersChange};
use meshsync::proto::{
    self, ChunkRef, ChunkReply, ChunkRequest, Control, Holders, MembersNotice, StreamRequest, WireMembers,
};
use std::time::Duration;

/// Waits until each of `nodes` has exactly `content` at `rel`.
async fn wait_at(nodes: &[&TestNode], rel: &str, content: &[u8]) {
    wait(&format!("{rel} on those nodes"), || nodes.iter().all(|n| read(&n.path(rel)).as_deref() == Some(content)))
        .await;
}

fn names(p: &meshsync::ops::control::SharePeers) -> Vec<String> {
    let mut n: Vec<String> = p.members.iter().flatten().map(|m| m.name.clone()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_reaches_only_its_members_and_follows_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let admin = nodes[0].home.clone();
    // As `share add s DIR --peers beta` and `share peers s add|remove` on the admin do.
    let set = share_peers(&admin, SHARE.into(), PeersChange::Set(vec!["beta".into()])).await.unwrap();
    assert_eq!(names(&set), ["alpha", "beta"], "the admin setting them is a member");
    std::fs::write(nodes[0].path("one"), b"1").unwrap();
    wait_content(&nodes[..2], "one", b"1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!nodes[2].path("one").exists(), "gamma is not a member");
    // gamma no longer counts as a peer of the share: alpha and beta are in sync;
    // gamma, told it is out, no longer waits for them.
    wait_in_sync(&nodes[..2]).await;
    wait("gamma forgets the share's peers", || nodes[2].status().shares[0].peers.is_empty()).await;

    let added = share_peers(&admin, SHARE.into(), PeersChange::Add("gamma".into())).await.unwrap();
    assert_eq!(names(&added), ["alpha", "beta", "gamma"]);
    wait_content(&nodes, "one", b"1").await;

    let removed = share_peers(&admin, SHARE.into(), PeersChange::Remove("beta".into())).await.unwrap();
    assert_eq!(names(&removed), ["alpha", "gamma"]);
    assert_eq!(removed.version, 3);
    std::fs::write(nodes[2].path("two"), b"2").unwrap();
    wait_at(&[&nodes[0], &nodes[2]], "two", b"2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!nodes[1].path("two").exists(), "beta left the share");
    // Every node, not only the admin, shows the members.
    let seen = share_peers(&nodes[2].home, SHARE.into(), PeersChange::Show).await.unwrap();
    assert_eq!(names(&seen), ["alpha", "gamma"]);
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_member_is_not_told_of_the_share_and_its_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    nodes[0].handle().share_members(SHARE, meshsync::daemon::MembersChange::Set(vec!["beta".into()])).unwrap();
    let body = b"members only".to_vec();
    std::fs::write(nodes[0].path("secret"), &body).unwrap();
    wait_content(&nodes[..2], "secret", &body).await;
    // gamma, by hand: its Hello names the share, as if it had always had it.
    nodes[2].stop().await;
    let refused_before = nodes[0].status().counters.refused;
    let mut s = raw_session(&nodes[2].home, nodes[0].listen, &[SHARE]).await;
    assert!(s.hello.shares.is_empty(), "not told the share exists: {:?}", s.hello.shares);
    // Its chunk request for the file is answered as for a share alpha does not hold.
    let (mut send, mut recv) = s.conn.open_bi().await.unwrap();
    let chunk = ChunkRef { hash: ChunkHash::of(&body), len: body.len() as u32 };
    let req = ChunkRequest { share: SHARE.into(), chunks: vec![chunk], holders: Holders::OnlyYou, remaining: 0 };
    proto::write_frame(&mut send, &StreamRequest::Chunk(req)).await.unwrap();
    let _ = send.finish();
    let reply: Option<ChunkReply> = proto::read_frame(&mut recv).await.unwrap();
    assert_eq!(reply, Some(ChunkReply::NotFound));
    wait("the request counted as refused", || nodes[0].status().counters.refused > refused_before).await;
    // And nothing of the share's index comes, however long it listens.
    let listen = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match proto::read_frame::<_, Control>(&mut s.recv).await {
                Ok(Some(Control::Index { share, .. } | Control::IndexBatch { share, .. })) => return Some(share),
                Ok(Some(Control::ShareAdded(sh))) => return Some(sh.name),
                Ok(Some(Control::Members(m))) => return Some(m.share),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .await;
    assert!(!matches!(listen, Ok(Some(_))), "a non-member heard of the share: {listen:?}");
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_sets_a_shares_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    // A member asking its own daemon is told no.
    let e = share_peers(&nodes[1].home, SHARE.into(), PeersChange::Remove("gamma".into())).await.unwrap_err();
    assert!(e.to_string().contains("only an admin"), "{e}");
    // A member forging a record (signed with its own key) is refused by the others.
    let beta = Identity::load(&nodes[1].home).unwrap();
    let only_beta = [beta.id];
    let signature = CaMaterial { cert_der: vec![], key_der: beta.key_der.clone() }
        .sign_record(&members_message(SHARE, Some(&only_beta), 9, 1))
        .unwrap();
    nodes[1].stop().await;
    let mut s = raw_session(&nodes[1].home, nodes[0].listen, &[SHARE]).await;
    let forged = MembersNotice {
        share: SHARE.into(),
        members: WireMembers::Only(vec![beta.id.0]),
        version: 9,
        issued: 1,
        signature,
    };
    proto::write_frame(&mut s.send, &Control::Members(forged)).await.unwrap();
    wait("the forged membership refused", || nodes[0].status().counters.refused >= 1).await;
    // gamma still gets the share from alpha.
    std::fs::write(nodes[0].path("for-all"), b"x").unwrap();
    wait_at(&[&nodes[0], &nodes[2]], "for-all", b"x").await;
    let shown = share_peers(&nodes[0].home, SHARE.into(), PeersChange::Show).await.unwrap();
    assert_eq!(shown.members, None, "still every member");
    stop_all(&mut nodes).await;
}

fn cli(home: &meshsync::home::Home, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_meshsync"))
        .arg("--home")
        .arg(home.dir())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_sets_members_before_the_share_exists_and_removes_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let (alpha, beta) = (nodes[0].home.clone(), nodes[1].home.clone());
    let t = dir.path().join("t-alpha");
    let out = cli(&alpha, &["share", "add", "t", t.to_str().unwrap(), "--peers", "beta"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("share t: alpha (") && text.contains("beta (") && text.contains("share t added"), "{text}");
    // beta, a member of t, was told.
    wait("beta hears of t's members", || {
        String::from_utf8_lossy(&cli(&beta, &["share", "peers", "t"]).stdout).contains("alpha (")
    })
    .await;
    // On a member, --peers fails before the share is added: it never runs open to all.
    let u = dir.path().join("u-beta");
    let out = cli(&beta, &["share", "add", "u", u.to_str().unwrap(), "--peers", "alpha"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only an admin"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::fs::read_to_string(beta.config()).unwrap().contains("\"u\""), "share u not added");
    let out = cli(&alpha, &["peer", "remove", "beta"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed beta"));
    wait("beta dropped", || connected(&nodes[0]) == 0).await;
    stop_all(&mut nodes).await;
}
