//! The narrow way into a running node for everything above the daemon (control
//! socket, status, metrics, the service manager, tests): queries that return plain
//! snapshot types, and a few commands. Nothing outside the daemon holds its state.

use super::bench::{self, BenchEvent};
use super::membership::{ForgetError, LeaveReport};
use super::reload::{ReloadError, ReloadReport};
use super::summary::ShareSummary;
use super::Node;
use crate::config::schedule::Schedule;
use crate::config::ShareMode;
use crate::home::Home;
use crate::ids::NodeId;
use crate::stats::{CounterSnapshot, Transfer};
use crate::sync::dial::Reach;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A running node, as seen from outside.
#[derive(Clone, Debug)]
pub struct NodeSnapshot {
    /// This node's id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// The addresses it tells peers.
    pub advertised: Vec<SocketAddr>,
    /// Every known peer.
    pub peers: Vec<PeerSnapshot>,
    /// Every share.
    pub shares: Vec<ShareSnapshot>,
    /// Downloads in progress.
    pub transfers: Vec<Transfer>,
    /// Counters since start.
    pub counters: CounterSnapshot,
    /// What this node may do.
    pub role: crate::identity::Role,
    /// Unix seconds after which its certificate is no longer valid.
    pub certificate_expires: i64,
    /// Join connections (strangers not yet answered) holding a place now.
    pub join_connections: usize,
}

/// One known peer.
#[derive(Clone, Debug)]
pub struct PeerSnapshot {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Where it is known to listen.
    pub addrs: Vec<SocketAddr>,
    /// The address of the live connection, if connected.
    pub connected: Option<SocketAddr>,
    /// Why it is not connected, once a dial failed.
    pub unreachable: Option<Unreachable>,
}

/// A peer this node cannot reach now.
#[derive(Clone, Debug)]
pub struct Unreachable {
    /// Since when (this time): how long it has been.
    pub for_: std::time::Duration,
    /// The addresses the last dial tried.
    pub tried: Vec<SocketAddr>,
    /// Why the last dial failed.
    pub error: String,
}

/// One share.
#[derive(Clone, Debug)]
pub struct ShareSnapshot {
    /// Its name.
    pub name: String,
    /// The local folder.
    pub path: PathBuf,
    /// send-receive, send-only or receive-only.
    pub mode: ShareMode,
    /// What the index holds: counts and what each peer needs.
    pub summary: Arc<ShareSummary>,
    /// False while the summary is from before the index's latest changes (it
    /// keeps changing; see `summary::RECOUNT_EVERY`).
    pub summary_current: bool,
    /// Why it is paused, if it is.
    pub paused: Option<String>,
    /// A scan runs or is due (see `Share::scanning`).
    pub scanning: bool,
    /// Its transfer schedule, if it has one.
    pub schedule: Option<Schedule>,
}

/// Why a command on a share was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ShareOpError {
    /// No share of that name.
    #[error("no share named {0:?} on this node")]
    NoShare(String),
    /// The share is paused; the command cannot take effect.
    #[error("share {share} is paused: {why}")]
    Paused {
        /// The share.
        share: String,
        /// Why it is paused.
        why: String,
    },
    /// The command itself failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A running node's narrow interface (cheap to clone).
#[derive(Clone)]
pub struct Handle {
    node: Arc<Node>,
}

impl Handle {
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The node's home directory.
    pub fn home(&self) -> &Home {
        &self.node.home
    }

    /// Where Prometheus metrics are to be served, if anywhere.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.node.config.node.metrics_listen
    }

    /// Everything `status` shows. Reads the index where the last read is stale:
    /// call it off the async runtime's workers.
    pub fn snapshot(&self) -> NodeSnapshot {
        let node = &self.node;
        let live: std::collections::HashMap<NodeId, SocketAddr> =
            node.peers.list().into_iter().filter(|p| p.conn.close_reason().is_none()).map(|p| (p.id, p.addr)).collect();
        let peers = node
            .index
            .peers()
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let id = NodeId(p.id);
                let connected = live.get(&id).copied();
                let unreachable = match node.dialer().reach(&id) {
                    Reach::Unreachable { since, tried, error } if connected.is_none() => {
                        Some(Unreachable { for_: node.clock.elapsed().saturating_sub(since), tried, error })
                    }
                    _ => None,
                };
                PeerSnapshot { id, name: p.name, addrs: p.addrs, connected, unreachable }
            })
            .collect();
        let shares = node
            .share_list()
            .into_iter()
            .map(|share| {
                let view = share.status_cache.get_or_compute(&share);
                ShareSnapshot {
                    name: share.cfg.name.clone(),
                    path: share.cfg.path.clone(),
                    mode: share.cfg.mode,
                    summary: view.summary,
                    summary_current: view.current,
                    paused: share.paused(),
                    scanning: share.scanning(),
                    schedule: share.schedule(),
                }
            })
            .collect();
        NodeSnapshot {
            id: node.ident.id,
            name: node.config.node.name.clone(),
            listen: node.config.node.listen,
            advertised: node.advertised(),
            peers,
            shares,
            transfers: node.progress.list(),
            counters: node.counters.snapshot(),
            role: node.ident.role().unwrap_or(crate::identity::Role::Member),
            certificate_expires: node.certs.not_after(),
            join_connections: node.gate.joins_taken(),
        }
    }

    /// Scans one share (or every share) now; returns the names. A paused share's
    /// scan cannot run: that is an error (after the others were asked).
    pub fn rescan(&self, share: Option<&str>) -> Result<Vec<String>, ShareOpError> {
        let shares: Vec<_> =
            self.node.share_list().into_iter().filter(|s| share.is_none_or(|n| n == s.cfg.name)).collect();
        if shares.is_empty() {
            return Err(ShareOpError::NoShare(share.unwrap_or_default().to_string()));
        }
        for s in &shares {
            s.rescan();
        }
        if let Some(s) = shares.iter().find(|s| s.paused().is_some()) {
            let why = s.paused().unwrap_or_default();
            return Err(ShareOpError::Paused { share: s.cfg.name.clone(), why });
        }
        Ok(shares.iter().map(|s| s.cfg.name.clone()).collect())
    }

    /// The user confirms a paused share's folder as it is now (`share resume`).
    pub fn resume(&self, share: &str) -> Result<(), ShareOpError> {
        Ok(self.share(share)?.resume()?)
    }

    /// The user confirms the deletions that paused a share (`share confirm-deletes`).
    pub fn confirm_deletes(&self, share: &str) -> Result<(), ShareOpError> {
        Ok(self.share(share)?.confirm_deletes()?)
    }

    /// Puts the mesh's versions back over a receive-only share's local changes;
    /// returns how many there are.
    pub fn revert(&self, share: &str) -> Result<usize, ShareOpError> {
        Ok(self.share(share)?.revert()?)
    }

    /// `meshsync peer remove`: an admin removes a node (by name or id) from the mesh.
    pub async fn remove_peer(&self, who: &str) -> Result<super::RemovedPeer, super::TrustError> {
        self.node.remove_peer(who).await
    }

    /// `meshsync share peers` (and `share add --peers`): shows a share's members, or
    /// (an admin) changes them.
    pub fn share_members(
        &self,
        share: &str,
        change: super::MembersChange,
    ) -> Result<super::MembersView, super::TrustError> {
        self.node.change_members(share, change)
    }

    /// Starts `meshsync bench`: events arrive on the receiver, the last a result or an error.
    pub fn bench(&self, bytes: u64, probe_bytes: u64) -> mpsc::Receiver<BenchEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(bench::run(self.node.clone(), bytes, probe_bytes, tx));
        rx
    }

    /// Re-reads the config now and applies what can change while it runs (as
    /// SIGHUP does); returns what it did.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.node.reload_asks.send(tx).await.map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Tells the connected peers that this node leaves the mesh; returns who heard.
    /// The node keeps running: [`Handle::stop`] it next.
    pub async fn leave(&self) -> LeaveReport {
        self.node.leave().await
    }

    /// Forgets a member that is gone (`meshsync peers forget`); returns its name.
    pub async fn forget_peer(&self, who: &str) -> Result<String, ForgetError> {
        self.node.forget_by_name(who).await
    }

    /// Stops the node (`meshsync run` then shuts it down and exits).
    pub fn stop(&self) {
        self.node.cancel.cancel();
    }

    /// Resolves when the node stops.
    pub async fn stopped(&self) {
        self.node.cancel.cancelled().await
    }

    fn share(&self, name: &str) -> Result<Arc<super::Share>, ShareOpError> {
        self.node.share(name).ok_or_else(|| ShareOpError::NoShare(name.to_string()))
    }
}
