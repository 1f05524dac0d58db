//! The mesh's known peers: who they are, where they listen, and whether a peer's
//! addresses came from the peer itself or from another member's word.

use super::{Index, IndexError};
use crate::codec;
use serde::{Deserialize, Serialize};

/// A peer as this node remembers it: who it is and where it was last known to listen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// blake3 of the peer's public key.
    pub id: [u8; 32],
    /// Human name.
    pub name: String,
    /// Addresses to dial it at.
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Where the addresses known for a peer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrOrigin {
    /// The peer said so itself, over its own authenticated connection.
    Itself,
    /// Another member passed them on (gossip, a join reply).
    Gossip,
}

impl Index {
    /// Remembers a peer (replacing what was known of it) as learned by gossip.
    pub fn put_peer(&self, p: &KnownPeer) -> Result<(), IndexError> {
        self.put_peer_from(p, AddrOrigin::Gossip)
    }

    /// Remembers a peer, noting where its addresses came from.
    pub fn put_peer_from(&self, p: &KnownPeer, origin: AddrOrigin) -> Result<(), IndexError> {
        self.peers.insert(p.id, codec::encode(p)?)?;
        match origin {
            AddrOrigin::Itself => self.peers_direct.insert(p.id, &[])?,
            AddrOrigin::Gossip => self.peers_direct.remove(p.id)?,
        };
        Ok(())
    }

    /// Where the addresses known for a peer came from; `None` for an unknown peer.
    pub fn peer_origin(&self, id: &[u8; 32]) -> Result<Option<AddrOrigin>, IndexError> {
        if !self.peers.contains_key(id)? {
            return Ok(None);
        }
        Ok(Some(if self.peers_direct.contains_key(id)? { AddrOrigin::Itself } else { AddrOrigin::Gossip }))
    }

    /// All known peers.
    pub fn peers(&self) -> Result<Vec<KnownPeer>, IndexError> {
        self.peers.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Forgets a peer: it is no longer dialed, gossiped or listed.
    pub fn forget_known_peer(&self, id: &[u8; 32]) -> Result<(), IndexError> {
        self.peers.remove(id)?;
        self.peers_direct.remove(id)?;
        Ok(())
    }
}
