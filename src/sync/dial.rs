//! Which known peers to dial when, and what to tell the user about each: a pure
//! core with time passed in (an offset from the node's start), driven by the
//! daemon's dialer.
//!
//! A peer that is not connected is dialed again and again, with a backoff that
//! doubles from [`FIRST_RETRY`] up to [`MAX_RETRY`], and at once when something new
//! is learned of it (an address, a connection that just ended). Its state changes
//! (reachable to unreachable and back) are reported once each, so the log says
//! when a peer went away and when it came back, not every failed attempt.

use crate::ids::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The wait after a first failed dial.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between dials of an unreachable peer.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// What is known of reaching one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Not dialed yet, and not connected.
    Unknown,
    /// Connected now.
    Connected,
    /// Not connected: the last dial failed.
    Unreachable {
        /// When it was first found unreachable (this time).
        since: Duration,
        /// The addresses the last dial tried.
        tried: Vec<SocketAddr>,
        /// Why the last dial failed.
        error: String,
    },
}

/// A state change worth telling the user about, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It could not be reached (it was connected, or never reached yet).
    WentUnreachable,
    /// It is connected again after being unreachable.
    Back,
}

#[derive(Clone, Debug)]
struct Peer {
    reach: Reach,
    /// Failed dials in a row.
    fails: u32,
    /// Not before this.
    next: Duration,
}

/// The dial schedule and reachability of every known peer.
#[derive(Default, Debug)]
pub struct Dialer {
    peers: HashMap<NodeId, Peer>,
}

impl Dialer {
    /// The peers among `known` to dial at `now` (not connected, due). They count as
    /// being dialed: each is due again only after [`Dialer::failed`] or a reset.
    pub fn due(&mut self, known: impl IntoIterator<Item = NodeId>, now: Duration) -> Vec<NodeId> {
        let mut out = Vec::new();
        for id in known {
            let p = self.peers.entry(id).or_insert(Peer { reach: Reach::Unknown, fails: 0, next: now });
            if p.reach != Reach::Connected && p.next <= now {
                // While the dial runs it is not due again; `failed` sets the real backoff.
                p.next = now + MAX_RETRY;
                out.push(id);
            }
        }
        out
    }

    /// A dial of `id` failed at `now`, after trying `tried`.
    pub fn failed(&mut self, id: NodeId, now: Duration, tried: Vec<SocketAddr>, error: String) -> Option<Change> {
        let p = self.peers.entry(id).or_insert(Peer { reach: Reach::Unknown, fails: 0, next: now });
        p.fails = p.fails.saturating_add(1);
        let wait = FIRST_RETRY.saturating_mul(1 << (p.fails - 1).min(16)).min(MAX_RETRY);
        p.next = now + wait;
        let (change, since) = match &p.reach {
            Reach::Unreachable { since, .. } => (None, *since),
            _ => (Some(Change::WentUnreachable), now),
        };
        p.reach = Reach::Unreachable { since, tried, error };
        change
    }

    /// `id` is connected (dialed by either side).
    pub fn connected(&mut self, id: NodeId) -> Option<Change> {
        let p = self.peers.entry(id).or_insert(Peer { reach: Reach::Unknown, fails: 0, next: Duration::ZERO });
        let was = std::mem::replace(&mut p.reach, Reach::Connected);
        p.fails = 0;
        matches!(was, Reach::Unreachable { .. }).then_some(Change::Back)
    }

    /// `id`'s connection ended at `now`: dial it again at once.
    pub fn disconnected(&mut self, id: NodeId, now: Duration) {
        if let Some(p) = self.peers.get_mut(&id) {
            if p.reach == Reach::Connected {
                p.reach = Reach::Unknown;
            }
            p.next = now;
        }
    }

    /// Something new was learned of `id` (an address): dial it at `now`.
    pub fn retry_now(&mut self, id: &NodeId, now: Duration) {
        if let Some(p) = self.peers.get_mut(id) {
            p.next = p.next.min(now);
        }
    }

    /// Every unreachable peer may be dialed at `now` (the network came back).
    pub fn retry_all(&mut self, now: Duration) {
        for p in self.peers.values_mut() {
            p.next = p.next.min(now);
        }
    }

    /// When the next dial is due, for the driver's timer.
    pub fn next_due(&self) -> Option<Duration> {
        self.peers.values().filter(|p| p.reach != Reach::Connected).map(|p| p.next).min()
    }

    /// What is known of reaching `id`.
    pub fn reach(&self, id: &NodeId) -> Reach {
        self.peers.get(id).map_or(Reach::Unknown, |p| p.reach.clone())
    }

    /// Forgets a peer that left the mesh.
    pub fn forget(&mut self, id: &NodeId) {
        self.peers.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId([1; 32]);
    const B: NodeId = NodeId([2; 32]);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn an_unreachable_peer_is_dialed_with_a_growing_backoff_up_to_a_minute() {
        let mut d = Dialer::default();
        let mut now = s(0.0);
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(d.due([A], now), vec![A]);
            assert!(d.due([A], now).is_empty(), "not twice while one dial runs");
            d.failed(A, now, vec![], "timeout".into());
            let next = d.next_due().unwrap();
            waits.push((next - now).as_secs_f64());
            now = next;
        }
        assert_eq!(waits[..4], [0.5, 1.0, 2.0, 4.0]);
        assert_eq!(*waits.last().unwrap(), 60.0, "{waits:?}");
    }

    #[test]
    fn state_changes_are_reported_once_each() {
        let mut d = Dialer::default();
        d.due([A, B], s(0.0));
        assert_eq!(
            d.failed(A, s(0.0), vec!["10.0.0.1:7700".parse().unwrap()], "no answer".into()),
            Some(Change::WentUnreachable)
        );
        assert_eq!(d.failed(A, s(1.0), vec![], "no answer".into()), None, "still unreachable: said already");
        assert!(matches!(d.reach(&A), Reach::Unreachable { since, .. } if since == s(0.0)));
        assert_eq!(d.connected(A), Some(Change::Back));
        assert_eq!(d.connected(B), None, "never unreachable: nothing to tell");
        assert_eq!(d.reach(&A), Reach::Connected);
        d.disconnected(A, s(5.0));
        assert_eq!(d.due([A, B], s(5.0)), vec![A], "dialed again at once; B is connected");
        assert_eq!(d.failed(A, s(5.0), vec![], "refused".into()), Some(Change::WentUnreachable));
    }

    #[test]
    fn news_of_a_peer_cuts_its_backoff_short() {
        let mut d = Dialer::default();
        for i in 0..6 {
            d.due([A], s(i as f64 * 100.0));
            d.failed(A, s(i as f64 * 100.0), vec![], "x".into());
        }
        assert!(d.due([A], s(501.0)).is_empty());
        d.retry_now(&A, s(501.0));
        assert_eq!(d.due([A], s(501.0)), vec![A]);
    }
}
