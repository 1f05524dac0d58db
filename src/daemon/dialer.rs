//! Reaching peers: the dialer that keeps every known member connected, and the
//! addresses this node tells them.

use super::{session, Node};
use crate::ids::NodeId;
use crate::index::KnownPeer;
use crate::sync::dial::Change;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Marks a peer as being dialed until dropped, whatever way the dial ends.
pub(super) struct Dialing<'a> {
    set: &'a Mutex<HashSet<NodeId>>,
    id: NodeId,
}

impl<'a> Dialing<'a> {
    /// Claims the peer; `None` when a dial to it is already in progress.
    fn claim(set: &'a Mutex<HashSet<NodeId>>, id: NodeId) -> Option<Self> {
        // Not `then_some`: it would build (and drop, so unclaim) a guard on refusal.
        let fresh = set.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        fresh.then(|| Self { set, id })
    }
}

impl Drop for Dialing<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// How often a wildcard listen's interface addresses are read again: a change
/// reaches connected peers within about this long (one netlink dump each time).
const ADDRESS_REFRESH: Duration = Duration::from_secs(1);

/// Keeps the advertised addresses current (DHCP, an address added or removed) and
/// tells every connected peer when they change.
pub(super) async fn address_loop(node: Arc<Node>) {
    let listen = node.config.node.listen;
    if !node.config.node.advertise.is_empty() || !listen.ip().is_unspecified() {
        return;
    }
    loop {
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = tokio::time::sleep(ADDRESS_REFRESH) => {}
        }
        let now = match tokio::task::spawn_blocking(move || crate::net::addrs::advertised(listen, &[])).await {
            Ok(a) => a,
            Err(_) => continue,
        };
        let changed = {
            let mut addrs = node.addrs.write().unwrap_or_else(|e| e.into_inner());
            let changed = *addrs != now;
            *addrs = now.clone();
            changed
        };
        if changed {
            info!(advertised = ?now, "this host's addresses changed; telling peers");
            let _ = node.announce.send(crate::proto::Control::Peers(vec![node.me()]));
        }
    }
}

/// Dials every known peer that is not connected: all its addresses at once, the
/// first answer wins; again and again with a backoff up to a minute (see
/// `sync::dial`), at once when something new is learned of it.
pub(super) async fn dial_loop(node: Arc<Node>) {
    loop {
        let now = node.clock.elapsed();
        let known: Vec<KnownPeer> = node.index.peers().unwrap_or_default();
        let candidates =
            known.iter().map(|p| NodeId(p.id)).filter(|id| *id != node.ident.id && !node.peers.is_connected(id));
        let due = node.dialer().due(candidates, now);
        for id in due {
            let Some(p) = known.iter().find(|p| p.id == id.0).cloned() else { continue };
            tokio::spawn(dial(node.clone(), p));
        }
        let next = node.dialer().next_due().map(|d| d.saturating_sub(node.clock.elapsed()));
        let pause = next.unwrap_or(IDLE_CHECK).clamp(MIN_PAUSE, IDLE_CHECK);
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = node.dial_now.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The dialer looks at the peer list at least this often (peers learned by gossip
/// wake it at once).
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// ... and at most this often.
const MIN_PAUSE: Duration = Duration::from_millis(50);
/// How long one dial waits for an answer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One dial of a peer: every address it is known at, at once.
async fn dial(node: Arc<Node>, p: KnownPeer) {
    let id = NodeId(p.id);
    let Some(dialing) = Dialing::claim(&node.dialing, id) else { return };
    // A socket bound to IPv4 cannot send to an IPv6 address, and the other way round.
    let local_v6 = node.net.endpoint().local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let tried: Vec<SocketAddr> = p.addrs.iter().copied().filter(|a| local_v6 || a.is_ipv4()).collect();
    let mut attempts = tokio::task::JoinSet::new();
    for addr in tried.iter().copied() {
        let net = node.net.clone();
        attempts.spawn(async move { (addr, tokio::time::timeout(DIAL_TIMEOUT, net.connect(addr)).await) });
    }
    let mut why: Option<String> = None;
    while let Some(done) = attempts.join_next().await {
        let Ok((addr, r)) = done else { continue };
        match r {
            Ok(Ok(conn)) if crate::net::peer_node_id(&conn) == Some(id) => {
                attempts.abort_all();
                // The peer dialed this node meanwhile (a dial to a stopped peer is
                // answered when its handshake is retried, a second after it came
                // back): the connection in use stays. Run as a session, this one
                // would replace it and fail every request in flight on it.
                if node.peers.is_connected(&id) {
                    conn.close(0u32.into(), b"already connected");
                    return;
                }
                // Not held for the session: when it ends, the next dial starts at
                // once, and a dial that found this one still claimed would end
                // silently and leave the peer for a minute (a restarted peer whose
                // first connection was refused as a duplicate stayed away 60 s).
                drop(dialing);
                session::run(node.clone(), conn, true).await;
                return;
            }
            Ok(Ok(conn)) => {
                conn.close(2u32.into(), b"unexpected node");
                why = Some(format!("{addr}: another node answers there"));
            }
            Ok(Err(e)) => {
                why.get_or_insert(format!("{addr}: {e}"));
            }
            Err(_) => {}
        }
    }
    let error = why.unwrap_or_else(|| {
        format!("no answer within {} s (host down, daemon stopped, or a firewall drops UDP)", DIAL_TIMEOUT.as_secs())
    });
    let error = if tried.is_empty() { "no address of a family this node can reach".to_string() } else { error };
    if node.dialer().failed(id, node.clock.elapsed(), tried.clone(), error.clone()) == Some(Change::WentUnreachable) {
        warn!(peer = ?id, name = %p.name, tried = ?tried, %error, "peer unreachable; dialing it again with a backoff up to 60 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_being_dialed_is_not_dialed_again_until_that_dial_ends() {
        let set = Mutex::new(HashSet::new());
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let first = Dialing::claim(&set, a);
        assert!(first.is_some());
        assert!(Dialing::claim(&set, a).is_none(), "a second dial to the same peer must wait");
        assert!(Dialing::claim(&set, b).is_some(), "another peer is independent");
        drop(first);
        assert!(Dialing::claim(&set, a).is_some(), "the claim ends with the dial");
    }
}
