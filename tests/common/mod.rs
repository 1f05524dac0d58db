//! A mesh of nodes on 127.0.0.1 in temp dirs, driven through the library the CLI uses.
#![allow(dead_code)]

use meshsync::config::ShareMode;
use meshsync::daemon::{self, NodeHandle};
use meshsync::home::Home;
use meshsync::identity::Role;
use meshsync::ops::status::{build, Status};
use meshsync::setup;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SHARE: &str = "s";

pub struct TestNode {
    pub name: String,
    pub home: Home,
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub handle: Option<NodeHandle>,
}

impl TestNode {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn status(&self) -> Status {
        build(&self.handle().snapshot(), chrono::Local::now())
    }
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
    /// Starts the node; while its port is still held (a node stopped just after a
    /// peer went away keeps its socket until its dials to that peer drain, up to
    /// the 30 s idle timeout), tries again.
    pub async fn start(&mut self) {
        let since = Instant::now();
        loop {
            match meshsync::ops::start_node(&self.home).await {
                Ok(h) => break self.handle = Some(h),
                Err(e) if port_in_use(&e) && since.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("node starts: {e:?}"),
            }
        }
    }
    /// The running node's narrow interface.
    pub fn handle(&self) -> meshsync::daemon::Handle {
        self.handle.as_ref().expect("node is running").handle()
    }
}

fn port_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse))
}

pub fn free_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// Creates the first node of a new mesh (not started).
pub fn first(dir: &Path, name: &str, mode: ShareMode) -> TestNode {
    let home = Home::new(dir.join(name));
    let listen = free_addr();
    setup::init(&home, name, listen, &[]).unwrap();
    let root = dir.join(format!("{name}-share"));
    setup::share_add(&home, SHARE, &root, mode).unwrap();
    TestNode { name: name.into(), root: root.canonicalize().unwrap(), home, listen, handle: None }
}

/// Joins a new node through `inviter` (which must run) and starts it.
pub async fn join(dir: &Path, inviter: &TestNode, name: &str, mode: ShareMode) -> TestNode {
    let token = setup::invite(&inviter.home, Duration::from_secs(600), Role::Member).unwrap();
    let home = Home::new(dir.join(name));
    let listen = free_addr();
    daemon::join(&home, &token, name, listen, &[]).await.unwrap();
    let root = dir.join(format!("{name}-share"));
    setup::share_add(&home, SHARE, &root, mode).unwrap();
    let mut n = TestNode { name: name.into(), root: root.canonicalize().unwrap(), home, listen, handle: None };
    n.start().await;
    n
}

/// Joins a node through `inviter` without the share, starts it, waits until it is
/// connected to `peers` nodes, then adds the share: every holder then announces its
/// index to it at about the same time.
pub async fn join_then_share(dir: &Path, inviter: &TestNode, name: &str, peers: usize) -> TestNode {
    let token = setup::invite(&inviter.home, Duration::from_secs(600), Role::Member).unwrap();
    let home = Home::new(dir.join(name));
    let listen = free_addr();
    daemon::join(&home, &token, name, listen, &[]).await.unwrap();
    let root = dir.join(format!("{name}-share"));
    let mut n = TestNode { name: name.into(), root: root.clone(), home, listen, handle: None };
    n.start().await;
    wait(&format!("{name} connected to {peers} peers"), || {
        n.status().peers.iter().filter(|p| p.connected).count() == peers
    })
    .await;
    setup::share_add(&n.home, SHARE, &root, ShareMode::SendReceive).unwrap();
    n.root = root.canonicalize().unwrap();
    n
}

/// Adds `key = value` lines to a node's `[node]` table (before it starts).
pub fn node_option(home: &Home, lines: &str) {
    let p = home.config();
    let t = std::fs::read_to_string(&p).unwrap().replacen("[node]\n", &format!("[node]\n{lines}\n"), 1);
    std::fs::write(p, t).unwrap();
}

/// A started mesh of `modes.len()` nodes; node i>0 is invited by node i-1.
pub async fn mesh(dir: &Path, modes: &[ShareMode]) -> Vec<TestNode> {
    mesh_with(dir, modes, "").await
}

/// Two started, connected send-receive nodes; `share_lines` are appended to the
/// first one's share table (the last table of its config).
pub async fn pair_with(dir: &Path, share_lines: &str) -> Vec<TestNode> {
    let mut a = first(dir, "alpha", ShareMode::SendReceive);
    let cfg = a.home.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}{share_lines}\n")).unwrap();
    a.start().await;
    let b = join(dir, &a, "beta", ShareMode::SendReceive).await;
    let nodes = vec![a, b];
    wait("both connected", || nodes.iter().all(|n| n.status().peers.iter().any(|p| p.connected))).await;
    nodes
}

/// Like [`mesh`], with extra `[node]` options for the first node.
pub async fn mesh_with(dir: &Path, modes: &[ShareMode], first_options: &str) -> Vec<TestNode> {
    let names = ["alpha", "beta", "gamma", "delta"];
    let mut a = first(dir, names[0], modes[0]);
    node_option(&a.home, first_options);
    a.start().await;
    let mut nodes = vec![a];
    for (i, m) in modes.iter().enumerate().skip(1) {
        let n = join(dir, &nodes[i - 1], names[i], *m).await;
        nodes.push(n);
    }
    let want = nodes.len() - 1;
    wait("full mesh", || nodes.iter().all(|n| n.status().peers.iter().filter(|p| p.connected).count() == want)).await;
    nodes
}

/// Polls a condition for up to 60 s.
pub async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `body` next to `node`'s share and renames it to `rel` inside, as an
/// upload job would: the daemon never sees a partial file.
pub fn place(dir: &Path, node: &TestNode, rel: &str, body: &[u8]) {
    let tmp = dir.join(format!("{rel}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, node.path(rel)).unwrap();
}

/// Waits until every node has exactly `content` at `rel`.
pub async fn wait_content(nodes: &[TestNode], rel: &str, content: &[u8]) {
    wait(&format!("{rel} everywhere"), || nodes.iter().all(|n| read(&n.path(rel)).as_deref() == Some(content))).await;
}

/// Waits until every running node reports the share in sync with every connected peer.
pub async fn wait_in_sync(nodes: &[TestNode]) {
    wait("share in sync everywhere", || {
        nodes
            .iter()
            .filter(|n| n.handle.is_some())
            .all(|n| n.status().shares.iter().all(|s| s.in_sync && !s.peers.is_empty()))
    })
    .await;
}

/// Dials `addr` with the identity kept in `home`, from an endpoint of its own (the
/// node's daemon may be stopped): what that node, or a thief of its key, can do.
pub async fn connect_as(home: &Home, addr: SocketAddr) -> (meshsync::net::Net, Option<quinn::Connection>) {
    let ident = meshsync::identity::Identity::load(home).unwrap();
    // Not on 127.0.0.1, where it could take the port of a stopped test node.
    let net = meshsync::net::Net::bind(&ident, "127.0.0.2:0".parse().unwrap()).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(10), net.connect(addr)).await.expect("an answer");
    (net, conn.ok())
}

/// True if a mesh connection with the identity in `home` to `addr` is refused: at
/// the handshake, or closed before the node says Hello (QUIC completes a client's
/// handshake before the server has checked the client's certificate).
pub async fn refused_as(home: &Home, addr: SocketAddr) -> bool {
    let (_net, conn) = connect_as(home, addr).await;
    let Some(conn) = conn else { return true };
    let hello = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let mine = meshsync::proto::Hello { minor: 0, name: "x".into(), addrs: vec![], shares: vec![] };
        meshsync::proto::write_frame(&mut send, &mine).await.ok()?;
        meshsync::proto::read_frame::<_, meshsync::proto::Hello>(&mut recv).await.ok()?
    })
    .await
    .expect("the node answers or closes within 10 s");
    hello.is_none()
}

/// A session driven by hand with the identity of a (stopped) node: Hello both ways.
pub struct RawSession {
    pub net: meshsync::net::Net,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// The node's Hello.
    pub hello: meshsync::proto::Hello,
}

/// Opens a hand-driven session with `addr` as the node of `home`, saying it takes
/// part in `shares` (none of which it has anything of).
pub async fn raw_session(home: &Home, addr: SocketAddr, shares: &[&str]) -> RawSession {
    let (net, conn) = connect_as(home, addr).await;
    let conn = conn.expect("the node accepts this certificate");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let shares = shares
        .iter()
        .map(|s| meshsync::proto::ShareHello { name: s.to_string(), index_id: 1, max_seq: 0, have: None })
        .collect();
    let mine =
        meshsync::proto::Hello { minor: meshsync::proto::PROTOCOL_MINOR, name: "raw".into(), addrs: vec![], shares };
    meshsync::proto::write_frame(&mut send, &mine).await.unwrap();
    let hello = meshsync::proto::read_frame(&mut recv).await.unwrap().expect("a Hello");
    RawSession { net, conn, send, recv, hello }
}

/// Replaces the certificate in `home` by one for the same key, name and role that
/// the mesh CA (held in `admin`'s home) signs with the given validity.
pub fn reissue(admin: &Home, home: &Home, validity: meshsync::identity::Validity) {
    use meshsync::identity::{cert_info, spki_of_cert, Identity};
    let ca = Identity::load(admin).unwrap().ca().expect("an admin");
    let mut ident = Identity::load(home).unwrap();
    let info = cert_info(&ident.cert_der).unwrap();
    ident.cert_der = ca.issue(&spki_of_cert(&ident.cert_der).unwrap(), &info.name, info.role, validity).unwrap();
    ident.save_cert(home).unwrap();
}

/// Stops every node that runs.
pub async fn stop_all(nodes: &mut [TestNode]) {
    for n in nodes {
        n.stop().await;
    }
}

/// The number of peers `node` is connected to.
pub fn connected(node: &TestNode) -> usize {
    node.status().peers.iter().filter(|p| p.connected).count()
}
