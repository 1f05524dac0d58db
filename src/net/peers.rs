//! The table of live peer connections, one per peer.

use crate::ids::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

/// One established, authenticated session.
#[derive(Clone, Debug)]
pub struct PeerConn {
    /// The peer.
    pub id: NodeId,
    /// Its name from Hello.
    pub name: String,
    /// Its address on this connection.
    pub addr: SocketAddr,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// Which side dialed: the duplicate-connection tie-break needs it.
    pub dialed_by_us: bool,
}

/// Connected peers.
#[derive(Debug)]
pub struct Peers {
    me: NodeId,
    /// Each session, and whether a duplicate of it was refused already.
    inner: RwLock<HashMap<NodeId, (PeerConn, bool)>>,
}

impl Peers {
    /// An empty table for node `me`.
    pub fn new(me: NodeId) -> Self {
        Self { me, inner: RwLock::new(HashMap::new()) }
    }

    fn dialer(&self, p: &PeerConn) -> NodeId {
        if p.dialed_by_us {
            self.me
        } else {
            p.id
        }
    }

    /// Registers a session. When two connections to one peer exist (both dialed at
    /// once), both sides keep the one dialed by the smaller node id; returns false
    /// if the new one lost and should be closed. Only once per kept connection: a
    /// peer that has it does not dial again, so a second one means the peer lost it
    /// (killed and restarted, or its side timed out) while ours lingers until QUIC's
    /// idle timeout, and the new one replaces it.
    pub fn register(&self, p: PeerConn) -> bool {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some((old, refused_one)) = m.get_mut(&p.id) {
            let old_alive = old.conn.close_reason().is_none();
            let preferred = std::cmp::min(self.me, p.id);
            if old_alive && !*refused_one && self.dialer(old) == preferred && self.dialer(&p) != preferred {
                *refused_one = true;
                return false;
            }
            if old.conn.stable_id() != p.conn.stable_id() {
                old.conn.close(0u32.into(), b"replaced by another connection");
            }
        }
        m.insert(p.id, (p, false));
        true
    }

    /// Removes a session if it is still the registered one.
    pub fn unregister(&self, id: &NodeId, conn: &quinn::Connection) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if m.get(id).is_some_and(|(p, _)| p.conn.stable_id() == conn.stable_id()) {
            m.remove(id);
        }
    }

    /// The connection to a peer, if any.
    pub fn get(&self, id: &NodeId) -> Option<quinn::Connection> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(id).map(|(p, _)| p.conn.clone())
    }

    /// True when connected.
    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.get(id).is_some_and(|c| c.close_reason().is_none())
    }

    /// Number of sessions.
    pub fn count(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Every session.
    pub fn list(&self) -> Vec<PeerConn> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).values().map(|(p, _)| p.clone()).collect()
    }
}
