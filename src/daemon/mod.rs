//! The running node: wires index, network, sessions and share workers together.
//! `meshsync run` and the tests start it through [`start`].

pub mod bench;
mod certs;
mod dialer;
mod exchange;
mod handle;
mod join;
mod membership;
mod memory;
mod reload;
pub mod runtime;
mod service;
mod session;
mod share;
mod summary;
mod trust;

pub use handle::{Handle, NodeSnapshot, PeerSnapshot, ShareOpError, ShareSnapshot, Unreachable};
pub use join::{join, JoinError, JoinOutcome};
pub use membership::{ForgetError, LeaveReport};
pub use memory::{limit_arenas, EVERY as GIVE_BACK_EVERY};
pub use reload::{ReloadError, ReloadReport};
pub use service::{run, Signals};
pub use summary::{ShareSummary, LISTED_PATHS};
pub use trust::{MembersChange, MembersView, RemovedPeer, TrustError};

use share::Share;

use crate::config::{Config, ShareConfig};
use crate::home::Home;
use crate::identity::Identity;
use crate::ids::NodeId;
use crate::index::{AddrOrigin, Index};
use crate::net::{Net, Peers};
use crate::proto::PeerInfo;
use crate::stats::{Counters, Progress};
use anyhow::Context;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// A running node's shared state.
pub(crate) struct Node {
    /// Home directory.
    home: Home,
    /// Keys and certificates.
    ident: Identity,
    /// Config as loaded (node part; shares live in `shares`).
    config: Config,
    /// The index.
    index: Index,
    /// QUIC endpoint.
    net: Net,
    /// Live sessions.
    peers: Arc<Peers>,
    /// Counters.
    counters: Arc<Counters>,
    /// Downloads in progress.
    progress: Arc<Progress>,
    /// Shares by name.
    shares: RwLock<BTreeMap<String, Arc<Share>>>,
    /// Stops everything.
    cancel: CancellationToken,
    /// Wakes the dialer (a peer was learned).
    dial_now: tokio::sync::Notify,
    /// Re-reads the config now (SIGHUP) instead of at its next change on disk.
    reload_now: tokio::sync::Notify,
    /// Reloads asked for by a caller that wants the report (`meshsync reload`).
    reload_asks: tokio::sync::mpsc::Sender<reload::Ask>,
    /// The node settings a reload changes while it runs.
    live: reload::LiveSettings,
    /// Tells sessions about shares added and removed while running, and that this
    /// node leaves the mesh.
    events: tokio::sync::broadcast::Sender<NodeEvent>,
    /// Download progress maps to send to every peer.
    announce: tokio::sync::broadcast::Sender<crate::proto::Control>,
    /// Serves peers' chunk requests under the upload policy and cap.
    server: Arc<crate::transfer::serve::Server>,
    /// `meshsync bench` runs in flight.
    bench: Mutex<bench::BenchState>,
    /// When to dial which known peer, and what is known of reaching each.
    dialer: Mutex<crate::sync::dial::Dialer>,
    /// The node's clock for its pure cores (they take time as an offset from it).
    clock: Instant,
    /// The addresses this node tells peers (see [`crate::net::addrs`]); read again
    /// while running, for a wildcard listen.
    addrs: RwLock<Vec<SocketAddr>>,
    /// Peers with a dial (or the session it opened) in progress: a second dial
    /// while a handshake waits out a lost Initial would open a second connection,
    /// and the newer one replaces the first with its requests in flight.
    dialing: Mutex<HashSet<NodeId>>,
    /// Places for connections that have proved nothing yet.
    gate: crate::net::gate::Gate,
    /// Control frames all peers together may hold (see [`crate::net::budget`]).
    control_memory: Arc<tokio::sync::Semaphore>,
    /// Removed nodes and share members, as admins signed them.
    trust: trust::Trust,
    /// Certificates asked of admins and signed for peers; this node's own.
    certs: certs::Certs,
}

/// What sessions are told of this node while it runs.
#[derive(Clone, Debug)]
enum NodeEvent {
    /// This node started taking part in a share.
    ShareAdded(String),
    /// This node stopped taking part in a share.
    ShareRemoved(String),
    /// This node leaves the mesh: tell the peer, and report whether it heard.
    Leaving(tokio::sync::mpsc::Sender<membership::LeaveAck>),
}

/// A started node; drop or [`NodeHandle::shutdown`] to stop it.
pub struct NodeHandle {
    node: Arc<Node>,
    tasks: tokio::task::JoinSet<()>,
}

impl NodeHandle {
    /// The node's narrow interface, for control, status and metrics.
    pub fn handle(&self) -> Handle {
        Handle::new(self.node.clone())
    }

    /// Stops the node cleanly: sessions closed, index flushed, control socket removed.
    pub async fn shutdown(mut self) {
        self.node.cancel.cancel();
        self.node.net.endpoint().close(0u32.into(), b"shutting down");
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        if let Err(e) = self.node.index.flush() {
            warn!(error = %e, "index flush failed");
        }
        // Closed connections drain for a few PTOs and hold the UDP port meanwhile;
        // waiting here lets a restart (systemctl restart) bind it again at once.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.node.net.endpoint().wait_idle()).await;
        let _ = std::fs::remove_file(self.node.home.control_socket());
        info!("stopped");
    }
}

impl Node {
    /// This node as gossiped.
    pub fn me(&self) -> PeerInfo {
        PeerInfo { id: self.ident.id.0, name: self.config.node.name.clone(), addrs: self.advertised() }
    }

    /// The addresses this node tells peers to reach it at.
    pub fn advertised(&self) -> Vec<SocketAddr> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The dial schedule and what is known of reaching each peer.
    fn dialer(&self) -> std::sync::MutexGuard<'_, crate::sync::dial::Dialer> {
        self.dialer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One share.
    pub fn share(&self, name: &str) -> Option<Arc<Share>> {
        self.shares.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// All shares.
    pub fn share_list(&self) -> Vec<Arc<Share>> {
        self.shares.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Records a peer learned from itself, by gossip or by a join; wakes the dialer
    /// when it is new or moved. Addresses a peer gave itself are never replaced by
    /// another member's word (which could redirect this node's dials).
    pub fn learn_peer(&self, mut p: PeerInfo, origin: AddrOrigin) {
        p.addrs.retain(crate::net::addrs::dialable);
        // Stored as it may be gossiped: every peer list then fits its frame.
        p.addrs.truncate(crate::proto::MAX_PEER_ADDRS);
        if p.name.len() > crate::proto::MAX_NAME {
            let cut = (0..=crate::proto::MAX_NAME).rev().find(|i| p.name.is_char_boundary(*i)).unwrap_or(0);
            p.name.truncate(cut);
        }
        if p.id == self.ident.id.0
            || p.addrs.is_empty()
            || self.index.has_left(&p.id).unwrap_or(false)
            || self.trust.removed.contains(&NodeId(p.id))
        {
            return;
        }
        let known_origin = self.index.peer_origin(&p.id).unwrap_or(None);
        if origin == AddrOrigin::Gossip && known_origin.is_some() {
            return;
        }
        let known = self.index.peers().unwrap_or_default();
        let old = known.iter().find(|k| k.id == p.id);
        if old.is_some_and(|o| o.addrs == p.addrs && o.name == p.name) && known_origin == Some(origin) {
            return;
        }
        if let Err(e) = self.index.put_peer_from(&p.clone().into(), origin) {
            warn!(error = %e, "cannot store peer");
            return;
        }
        info!(peer = ?NodeId(p.id), name = %p.name, addrs = ?p.addrs, ?origin, "learned peer");
        self.dialer().retry_now(&NodeId(p.id), self.clock.elapsed());
        self.dial_now.notify_one();
        // A new member, or one that moved, is news for every connected peer too.
        let _ = self.announce.send(crate::proto::Control::Peers(vec![p]));
    }

    fn add_share(self: &Arc<Self>, cfg: ShareConfig, tasks: &mut tokio::task::JoinSet<()>) -> anyhow::Result<()> {
        let share = Arc::new(Share::open(self, cfg)?);
        let name = share.cfg.name.clone();
        self.shares.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), share.clone());
        let node = self.clone();
        let span = tracing::info_span!("share", share = %name);
        tasks.spawn(share::run(node, share).instrument(span));
        let _ = self.events.send(NodeEvent::ShareAdded(name));
        Ok(())
    }
}

/// Starts a node from its home: index, endpoint, share workers, sessions. (The
/// control socket and metrics are `ops`'s, served through [`NodeHandle::handle`].)
pub async fn start(home: &Home) -> anyhow::Result<NodeHandle> {
    let config = Config::load(&home.config())?;
    let ident =
        Identity::load(home).context("loading this node's identity (did you run `meshsync init` or `join`?)")?;
    let index = Index::open_with_cache(&home.index(), config.node.index_cache_mib << 20).with_context(|| {
        format!("opening the index in {} (is another meshsync running with this home?)", home.index().display())
    })?;
    let trust = trust::Trust::load(&index).context("reading the removal and membership records")?;
    let net = Net::bind_refusing(&ident, config.node.listen, trust.removed.clone())
        .with_context(|| format!("listening on {}", config.node.listen))?;
    let counters = Arc::new(Counters::default());
    let (reload_asks, asks) = tokio::sync::mpsc::channel(4);
    let ident_cert = ident.cert_der.clone();
    let node = Arc::new(Node {
        home: home.clone(),
        peers: Arc::new(Peers::new(ident.id)),
        ident,
        index,
        net,
        counters: counters.clone(),
        progress: Arc::new(Progress::default()),
        shares: RwLock::new(BTreeMap::new()),
        cancel: CancellationToken::new(),
        dial_now: tokio::sync::Notify::new(),
        reload_now: tokio::sync::Notify::new(),
        reload_asks,
        live: reload::LiveSettings::of(&config.node),
        events: tokio::sync::broadcast::channel(16).0,
        announce: tokio::sync::broadcast::channel(256).0,
        server: Arc::new(crate::transfer::serve::Server::new(config.node.upload_limit_mbit, counters.clone())),
        bench: Mutex::new(Default::default()),
        dialer: Mutex::new(Default::default()),
        clock: Instant::now(),
        dialing: Mutex::new(HashSet::new()),
        gate: crate::net::gate::Gate::new(
            crate::net::admit::Caps {
                total: config.node.max_join_connections,
                per_source: config.node.max_join_per_address,
            },
            config.node.join_deadline,
        ),
        control_memory: crate::net::budget::pool(crate::net::budget::CONTROL_MEMORY_KIB),
        addrs: RwLock::new(crate::net::addrs::advertised(config.node.listen, &config.node.advertise)),
        config: config.clone(),
        certs: certs::Certs::new(ident_cert),
        trust,
    });
    bench::clean_leftovers(&node);
    let mut tasks = tokio::task::JoinSet::new();
    for s in config.shares.clone() {
        node.add_share(s, &mut tasks)?;
    }
    let span = tracing::info_span!("node", node = %node.config.node.name);
    info!(parent: &span, id = %node.ident.id, listen = %config.node.listen, advertised = ?node.advertised(), "started");
    if node.advertised().is_empty() {
        warn!(parent: &span, "no address to tell peers: this host has no usable interface address; set `advertise`");
    }
    tasks.spawn(accept_loop(node.clone()).instrument(span.clone()));
    tasks.spawn(dialer::dial_loop(node.clone()).instrument(span.clone()));
    tasks.spawn(dialer::address_loop(node.clone()).instrument(span.clone()));
    tasks.spawn(certs::renew_loop(node.clone()).instrument(span.clone()));
    tasks.spawn(reload::config_reload_loop(node.clone(), asks).instrument(span));
    tasks.spawn(memory::give_back_loop(node.cancel.clone()));
    Ok(NodeHandle { node, tasks })
}

async fn accept_loop(node: Arc<Node>) {
    use crate::net::gate::{Admitted, Screened};
    loop {
        let incoming = tokio::select! {
            _ = node.cancel.cancelled() => return,
            i = node.net.endpoint().accept() => match i { Some(i) => i, None => return },
        };
        let remote = incoming.remote_address();
        let arriving = match node.gate.screen(incoming) {
            Screened::In(a) => a,
            Screened::Retried => continue,
            Screened::Refused(why) => {
                Counters::add(&node.counters.connections_refused, 1);
                debug!(%remote, %why, "refused connection");
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            match node.gate.admit(arriving).await {
                Ok(Admitted::Mesh(conn)) => session::run(node, conn, false).await,
                Ok(Admitted::Join { conn, place, deadline }) => join::serve(node, conn, deadline, place).await,
                // The dialer closed it itself (it found itself connected already).
                Err(why @ crate::net::gate::Refusal::Handshake(quinn::ConnectionError::ApplicationClosed(_))) => {
                    debug!(%remote, %why, "connection closed by the dialer during its handshake");
                }
                Err(why @ crate::net::gate::Refusal::Handshake(_)) => {
                    warn!(%remote, %why, "refused connection");
                }
                Err(why) => {
                    Counters::add(&node.counters.connections_refused, 1);
                    // Caused by their number, at a stranger's will: counted, not a warning each.
                    debug!(%remote, %why, "refused connection");
                }
            }
        });
    }
}
