//! Admins and members: only admins hold the CA key; a member invites through an
//! admin over the mesh; certificates are bounded and renewed through an admin.
//! Each refusal has its own test.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::daemon;
use meshsync::home::Home;
use meshsync::identity::{cert_info, now_secs, Identity, Role, Validity, CERT_LIFETIME_DAYS};
use meshsync::proto::{self, CertReply, CertWant, Control, JoinRole};
use meshsync::setup;
use std::time::Duration;

const DAY: i64 = 86_400;

fn role_of(home: &Home) -> Role {
    cert_info(&Identity::load(home).unwrap().cert_der).unwrap().role
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_holds_no_ca_key_and_invites_through_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    // beta joins through alpha (the admin), gamma through beta (a member).
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    assert!(nodes[0].home.ca_key().exists(), "the node that made the mesh is its admin");
    for n in &nodes[1..] {
        assert!(!n.home.ca_key().exists(), "{}: a default invite makes a member, without the CA key", n.name);
        assert_eq!(role_of(&n.home), Role::Member);
    }
    // gamma's certificate came from the admin, through beta, and works everywhere.
    std::fs::write(nodes[2].path("from-gamma"), b"hi").unwrap();
    wait_content(&nodes, "from-gamma", b"hi").await;
    // An admin made with --admin holds the key.
    let token = setup::invite(&nodes[0].home, Duration::from_secs(600), Role::Admin).unwrap();
    let home = Home::new(dir.path().join("second-admin"));
    let out = daemon::join(&home, &token, "second-admin", free_addr(), &[]).await.unwrap();
    assert_eq!(out.role, Role::Admin);
    assert!(home.ca_key().exists());
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_through_a_member_waits_while_no_admin_is_online() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    nodes[0].stop().await;
    let token = setup::invite(&nodes[1].home, Duration::from_secs(600), Role::Member).unwrap();
    let home = Home::new(dir.path().join("gamma"));
    let e = daemon::join(&home, &token, "gamma", free_addr(), &[]).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("no admin of the mesh is online") && e.contains("stays valid"), "{e}");
    assert!(!home.config().exists(), "a refused join writes nothing");
    // The mesh goes on without its admin...
    nodes[0].start().await;
    wait("beta connected to the admin again", || connected(&nodes[1]) == 1).await;
    // ...and the same token works once an admin is back: it was not spent.
    let out = daemon::join(&home, &token, "gamma", free_addr(), &[]).await.unwrap();
    assert_eq!(out.role, Role::Member);
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_issue_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    let beta = nodes[1].home.clone();
    nodes[1].stop().await;
    // No CA key, so no admin either.
    let e = setup::invite(&beta, Duration::from_secs(600), Role::Admin).unwrap_err().to_string();
    assert!(e.contains("only an admin"), "{e}");
    // A CA of its own signs a certificate (for its own key, as an admin) that no
    // member takes.
    let forger = Home::new(dir.path().join("forger"));
    std::fs::create_dir_all(forger.dir()).unwrap();
    let own_ca = meshsync::identity::new_mesh("beta").unwrap().ca().unwrap();
    let mut forged = Identity::load(&beta).unwrap();
    let spki = meshsync::identity::spki_of_cert(&forged.cert_der).unwrap();
    forged.cert_der = own_ca.issue(&spki, "beta", Role::Admin, Validity::standard(now_secs())).unwrap();
    forged.save(&forger).unwrap();
    assert!(!refused_as(&beta, nodes[0].listen).await, "its real certificate is taken");
    assert!(refused_as(&forger, nodes[0].listen).await, "a certificate of a member's own CA");
    assert!(refused_as(&forger, nodes[2].listen).await);
    // Another member asked to sign has nothing to sign with.
    let mut s = raw_session(&beta, nodes[2].listen, &[]).await;
    let (_, csr) = meshsync::identity::make_csr("new").unwrap();
    let want = CertWant::Join { name: "new".into(), role: JoinRole::Member, csr_der: csr };
    proto::write_frame(&mut s.send, &Control::CertRequest { id: 7, want }).await.unwrap();
    assert_eq!(read_cert_reply(&mut s.recv).await, CertReply::NotAdmin);
    stop_all(&mut nodes).await;
}

/// Reads control frames until a certificate reply.
async fn read_cert_reply(recv: &mut quinn::RecvStream) -> CertReply {
    loop {
        let msg: Control = tokio::time::timeout(Duration::from_secs(10), proto::read_frame(recv))
            .await
            .expect("a reply within 10 s")
            .unwrap()
            .expect("the session goes on");
        if let Control::CertReply { reply, .. } = msg {
            return reply;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_no_invite_member_is_refused_by_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = first(dir.path(), "alpha", SendReceive);
    a.start().await;
    let token = setup::invite(&a.home, Duration::from_secs(600), Role::NoInvite).unwrap();
    let home = Home::new(dir.path().join("guest"));
    let out = daemon::join(&home, &token, "guest", free_addr(), &[]).await.unwrap();
    assert_eq!((out.role, role_of(&home)), (Role::NoInvite, Role::NoInvite));
    let e = setup::invite(&home, Duration::from_secs(600), Role::Member).unwrap_err().to_string();
    assert!(e.contains("may not invite"), "{e}");
    // Asked over the mesh all the same, the admin refuses.
    let mut s = raw_session(&home, a.listen, &[]).await;
    let (_, csr) = meshsync::identity::make_csr("new").unwrap();
    let want = CertWant::Join { name: "new".into(), role: JoinRole::Member, csr_der: csr };
    proto::write_frame(&mut s.send, &Control::CertRequest { id: 1, want }).await.unwrap();
    match read_cert_reply(&mut s.recv).await {
        CertReply::Refused(why) => assert!(why.contains("--no-invite"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    nodes[1].stop().await;
    assert!(!refused_as(&nodes[1].home, nodes[0].listen).await, "its valid certificate is taken");
    let now = now_secs();
    reissue(&nodes[0].home, &nodes[1].home, Validity { not_before: now - 100 * DAY, not_after: now - DAY });
    assert!(refused_as(&nodes[1].home, nodes[0].listen).await, "an expired certificate of this mesh");
    nodes[0].stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_near_its_end_is_renewed_through_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    nodes[1].stop().await;
    let now = now_secs();
    reissue(&nodes[0].home, &nodes[1].home, Validity { not_before: now - DAY, not_after: now + 10 * DAY });
    let before = Identity::load(&nodes[1].home).unwrap().cert_der;
    nodes[1].start().await;
    let renewed = || {
        let c = cert_info(&Identity::load(&nodes[1].home).unwrap().cert_der).unwrap();
        c.not_after > now_secs() + (CERT_LIFETIME_DAYS - 1) * DAY
    };
    wait("beta's certificate renewed by the admin", renewed).await;
    let after = Identity::load(&nodes[1].home).unwrap().cert_der;
    assert_ne!(before, after);
    let (b, a) = (cert_info(&before).unwrap(), cert_info(&after).unwrap());
    assert_eq!((b.id, b.name, b.role), (a.id, a.name, a.role), "same key, name and role");
    // The renewed certificate is what it dials with now.
    nodes[0].stop().await;
    nodes[0].start().await;
    wait("beta reconnected with its new certificate", || connected(&nodes[1]) == 1).await;
    stop_all(&mut nodes).await;
}
