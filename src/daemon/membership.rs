//! Leaving the mesh (`meshsync leave`): this node tells its connected peers, and a
//! peer that hears it forgets the node: its addresses, its index entries, and any
//! dial to it; gossip from members that did not hear does not bring it back. A
//! member that was offline then is forgotten by hand (`meshsync peers forget`).

use super::{Node, NodeEvent};
use crate::ids::NodeId;
use crate::proto::{Control, CLOSE_LEFT, MINOR_MEMBERSHIP};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long a leaving node waits for each peer to say it heard (by closing).
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// Whether a peer heard that this node leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// It forgot this node and closed the connection.
    Yes,
    /// It did not close the connection in time.
    NoAnswer,
    /// Its protocol version has no such message.
    TooOld,
}

/// A session's answer to [`NodeEvent::Leaving`].
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaveAck {
    peer: NodeId,
    heard: Heard,
}

/// Who heard that this node leaves the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReport {
    /// Peers that forgot this node, by name.
    pub told: Vec<String>,
    /// Peers that did not hear, each with why ("web4: offline").
    pub not_told: Vec<String>,
}

/// Why a member was not forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// No known peer has that name or id.
    #[error("no known peer is named {0:?} or has that id (`meshsync peers` lists them)")]
    Unknown(String),
    /// More than one peer matches.
    #[error("{0:?} names more than one peer; give its id")]
    Ambiguous(String),
    /// It is connected: it has not left.
    #[error("{0} is connected, so it has not left; to take it out of the mesh, run `meshsync leave` on it")]
    Connected(String),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
}

impl Node {
    /// Tells every connected peer that this node leaves the mesh and waits (a few
    /// seconds at most) for each to say it heard; the caller then stops the node.
    pub(super) async fn leave(&self) -> LeaveReport {
        let connected: Vec<NodeId> =
            self.peers.list().into_iter().filter(|p| p.conn.close_reason().is_none()).map(|p| p.id).collect();
        let (tx, mut rx) = mpsc::channel(64);
        let _ = self.events.send(NodeEvent::Leaving(tx));
        let mut heard: HashMap<NodeId, Heard> = HashMap::new();
        let deadline = tokio::time::sleep(LEAVE_WAIT + Duration::from_secs(1));
        tokio::pin!(deadline);
        while !connected.iter().all(|p| heard.get(p) == Some(&Heard::Yes)) {
            tokio::select! {
                ack = rx.recv() => match ack {
                    // A duplicate connection's answer does not undo the other's.
                    Some(a) => { heard.entry(a.peer).and_modify(|h| if a.heard == Heard::Yes { *h = a.heard }).or_insert(a.heard); }
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let mut report = LeaveReport::default();
        for p in self.index.peers().unwrap_or_default() {
            let id = NodeId(p.id);
            match heard.get(&id) {
                Some(Heard::Yes) => report.told.push(p.name),
                Some(Heard::TooOld) => report.not_told.push(format!("{}: runs an older meshsync", p.name)),
                Some(Heard::NoAnswer) => report.not_told.push(format!("{}: did not answer", p.name)),
                None if connected.contains(&id) => report.not_told.push(format!("{}: did not answer", p.name)),
                None => report.not_told.push(format!("{}: not connected", p.name)),
            }
        }
        info!(told = ?report.told, not_told = ?report.not_told, "left the mesh");
        report
    }

    /// Forgets a member that left: it is no longer dialed nor learned again, its
    /// entries leave every share's index (a large index takes a while: call it off
    /// the runtime's workers).
    fn forget_member(&self, peer: NodeId) -> Result<(), crate::index::IndexError> {
        self.index.forget_member(&peer.0)?;
        self.dialer().forget(&peer);
        for share in self.share_list() {
            share.forget_participant(&peer);
            share.ctx.announced.forget_peer(&peer);
            share.ctx.index.forget_peer(&peer)?;
        }
        Ok(())
    }

    /// `meshsync peers forget`: forgets a member that is gone (left while this node
    /// was offline, or a host that no longer exists), by name or id (or the start
    /// of its id). Returns its name.
    pub(super) async fn forget_by_name(self: &Arc<Self>, who: &str) -> Result<String, ForgetError> {
        let known = self.index.peers()?;
        let matches: Vec<_> = known
            .iter()
            .filter(|p| p.name == who || (who.len() >= 4 && NodeId(p.id).to_string().starts_with(who)))
            .collect();
        let p = match matches.as_slice() {
            [] => return Err(ForgetError::Unknown(who.to_string())),
            [p] => *p,
            _ => return Err(ForgetError::Ambiguous(who.to_string())),
        };
        let id = NodeId(p.id);
        if self.peers.is_connected(&id) {
            return Err(ForgetError::Connected(p.name.clone()));
        }
        let node = self.clone();
        tokio::task::spawn_blocking(move || node.forget_member(id))
            .await
            .map_err(|e| crate::index::IndexError::Task(e.to_string()))??;
        info!(peer = ?id, name = %p.name, "peer forgotten");
        Ok(p.name.clone())
    }
}

/// In a session, at [`NodeEvent::Leaving`]: tells the peer, if its version knows
/// the message, and reports whether it closed the connection in time.
pub(super) async fn tell_leaving(
    conn: &quinn::Connection,
    peer: NodeId,
    their_minor: u32,
    tx: &mpsc::Sender<Control>,
    ack: mpsc::Sender<LeaveAck>,
) {
    if their_minor < MINOR_MEMBERSHIP {
        let _ = ack.send(LeaveAck { peer, heard: Heard::TooOld }).await;
        return;
    }
    let _ = tx.send(Control::Leaving).await;
    let conn = conn.clone();
    tokio::spawn(async move {
        let heard = match tokio::time::timeout(LEAVE_WAIT, conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == CLOSE_LEFT.into() => Heard::Yes,
            _ => Heard::NoAnswer,
        };
        let _ = ack.send(LeaveAck { peer, heard }).await;
    });
}

/// In a session: the peer leaves the mesh. It is marked as gone at once and the
/// connection closed (which tells it that it was heard); its entries go after.
pub(super) async fn on_leaving(node: &Arc<Node>, conn: &quinn::Connection, peer: NodeId, name: &str) {
    if let Err(e) = node.index.forget_member(&peer.0) {
        warn!(error = %e, "cannot record that the peer left");
        return;
    }
    conn.close(CLOSE_LEFT.into(), b"left the mesh");
    info!(name, "the peer left the mesh; forgetting it");
    let n = node.clone();
    match tokio::task::spawn_blocking(move || n.forget_member(peer)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot drop the entries of the peer that left"),
        Err(e) => warn!(error = %e, "dropping the entries of the peer that left failed"),
    }
}
