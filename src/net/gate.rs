//! The door every incoming connection passes before the node sees it. A connection
//! has proved nothing until its handshake shows a mesh certificate, so until then
//! it holds one of a few places (PROTOCOL.md §10):
//!
//! - a handshake in progress holds a handshake place, until the deadline at most
//!   (`join_deadline_secs`, 10 s by default, from the connection's first packet);
//!   past as many handshakes as join places, a source whose address is not validated
//!   is answered with a QUIC Retry first (it costs this node no state, and a forged
//!   source address never comes back);
//! - a join connection then holds a join place (`max_join_connections`, 4 per source
//!   by default) until it is answered, and must have sent its request by the
//!   same deadline;
//! - a mesh connection needs no place: its certificate is checked by the session.
//!
//! Without a place a connection is refused at once: before the handshake with a
//! QUIC close that keeps no state, after it with a close naming why.

use super::admit::{Admission, Caps, Full, Place};
use crate::proto::{ALPN_JOIN, ALPN_MESH};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Handshake places per join place: handshakes are short, and a mesh peer's
/// handshake must find a place while strangers hold every join place.
const HANDSHAKES_PER_JOIN: usize = 4;

/// QUIC close code: no place left for this connection.
pub const CLOSE_BUSY: u32 = 6;
/// QUIC close code: an application protocol this node does not speak.
pub const CLOSE_UNKNOWN_PROTOCOL: u32 = 1;
/// QUIC close code: a join request that was malformed or over its limit.
pub const CLOSE_BAD_JOIN_REQUEST: u32 = 7;
/// QUIC close code: a join request that was not all there by [`JOIN_DEADLINE`].
pub const CLOSE_LATE_JOIN_REQUEST: u32 = 8;

/// The places for connections that have proved nothing yet.
#[derive(Debug)]
pub struct Gate {
    handshakes: Arc<Admission>,
    joins: Arc<Admission>,
    /// How long after its first packet a handshake must be done, and a join
    /// connection's request be all there.
    deadline: Duration,
}

/// A connection attempt let in at first look, holding a handshake place.
#[derive(Debug)]
pub struct Arriving {
    incoming: quinn::Incoming,
    place: Place,
    since: Instant,
}

/// A connection through the door.
#[derive(Debug)]
pub enum Admitted {
    /// A mesh connection, its handshake done; the session checks its certificate.
    Mesh(quinn::Connection),
    /// A join connection with its place, held until it is answered.
    Join {
        /// The connection.
        conn: quinn::Connection,
        /// Its join place.
        place: Place,
        /// When its request must have arrived.
        deadline: Instant,
    },
}

/// Why a connection was refused at the door.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No handshake place left for it.
    #[error("no place for another handshake: {0}")]
    Handshakes(Full),
    /// No join place left for it.
    #[error("no place for another join connection: {0}")]
    Joins(Full),
    /// It did not finish its handshake in time.
    #[error("handshake not done in time")]
    Slow,
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// It asked for a protocol this node does not speak.
    #[error("unknown protocol")]
    UnknownProtocol,
}

/// What the first look at a connection attempt decided.
#[derive(Debug)]
pub enum Screened {
    /// Let in, holding a handshake place.
    In(Box<Arriving>),
    /// Asked to prove its address with a Retry; it comes back as a new attempt.
    Retried,
    /// Refused with a QUIC close, no state kept.
    Refused(Refusal),
}

impl Gate {
    /// A door with `joins` join places and four times as many handshake places (as
    /// many per source as there are join places in all), and `deadline` for a
    /// handshake and a join request.
    pub fn new(joins: Caps, deadline: Duration) -> Self {
        let handshakes = Caps { total: joins.total * HANDSHAKES_PER_JOIN, per_source: joins.total };
        Self { handshakes: Admission::new(handshakes), joins: Admission::new(joins), deadline }
    }

    /// Join places taken now.
    pub fn joins_taken(&self) -> usize {
        self.joins.taken()
    }

    /// First look at a connection attempt, before any cryptography.
    pub fn screen(&self, incoming: quinn::Incoming) -> Screened {
        let many = self.handshakes.taken() >= self.joins.caps().total;
        let incoming = if many && !incoming.remote_address_validated() && incoming.may_retry() {
            match incoming.retry() {
                Ok(()) => return Screened::Retried,
                Err(e) => e.into_incoming(),
            }
        } else {
            incoming
        };
        match self.handshakes.admit(incoming.remote_address().ip()) {
            Ok(place) => Screened::In(Box::new(Arriving { incoming, place, since: Instant::now() })),
            Err(full) => {
                incoming.refuse();
                Screened::Refused(Refusal::Handshakes(full))
            }
        }
    }

    /// Runs the handshake of a connection let in, then gives a join connection its
    /// place (or refuses it).
    pub async fn admit(&self, arriving: Box<Arriving>) -> Result<Admitted, Refusal> {
        let Arriving { incoming, place, since } = *arriving;
        let connecting = incoming.accept()?;
        let conn = tokio::time::timeout_at(since + self.deadline, connecting).await.map_err(|_| Refusal::Slow)??;
        drop(place);
        match super::alpn(&conn).as_deref() {
            Some(a) if a == ALPN_MESH => Ok(Admitted::Mesh(conn)),
            Some(a) if a == ALPN_JOIN => match self.joins.admit(conn.remote_address().ip()) {
                Ok(place) => Ok(Admitted::Join { conn, place, deadline: since + self.deadline }),
                Err(full) => {
                    conn.close(CLOSE_BUSY.into(), b"too many join connections; try again later");
                    Err(Refusal::Joins(full))
                }
            },
            _ => {
                conn.close(CLOSE_UNKNOWN_PROTOCOL.into(), b"unknown protocol");
                Err(Refusal::UnknownProtocol)
            }
        }
    }
}
