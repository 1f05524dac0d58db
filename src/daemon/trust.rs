//! The mesh's trust records in the running node: nodes removed by an admin, and
//! who may take part in each share. An admin issues them here (`peer remove`,
//! `share add --peers`, `share peers`); every node takes them in from its peers,
//! checks the CA's signature, keeps them in the index, acts on them at once and
//! passes them on (and to every peer that connects later).

use super::Node;
use crate::gossip::trust::{members_from_wire, members_message, removal_from_wire, RecordError};
use crate::identity::{now_secs, record, IdentityError};
use crate::ids::NodeId;
use crate::index::{IndexError, Members, Removal, ShareMembers};
use crate::net::Removed;
use crate::proto::{Control, MembersNotice, RemovalNotice, BENCH_SHARE_PREFIX};
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// The records a node holds, as it acts on them.
pub(crate) struct Trust {
    /// Removed nodes; the endpoint's TLS verifiers share the set.
    pub(crate) removed: Removed,
    /// Each share's membership record, by share name (no record: every node).
    members: RwLock<HashMap<String, ShareMembers>>,
    /// Records this node just took in or issued, for every session to act on and
    /// pass on.
    pub(crate) events: broadcast::Sender<Control>,
}

impl Trust {
    /// The records kept in the index.
    pub(crate) fn load(index: &crate::index::Index) -> Result<Self, IndexError> {
        let removed = Removed::of(index.removals()?.iter().map(Removal::id));
        let members = index.all_members()?.into_iter().map(|m| (m.share.clone(), m)).collect();
        Ok(Self { removed, members: RwLock::new(members), events: broadcast::channel(64).0 })
    }

    /// The membership record of `share`, if an admin set one.
    pub(crate) fn members_of(&self, share: &str) -> Option<ShareMembers> {
        self.members.read().unwrap_or_else(|e| e.into_inner()).get(share).cloned()
    }

    /// Every membership record.
    fn all_members(&self) -> Vec<ShareMembers> {
        self.members.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

/// Why an admin's command on the mesh's trust was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// This node holds no CA key.
    #[error("only an admin (a node holding the mesh CA key, ca.key) can {0}; run this on an admin")]
    NotAdmin(&'static str),
    /// No known node has that name or id.
    #[error("no known node is named {0:?} or has that id (`meshsync status` lists the peers)")]
    UnknownPeer(String),
    /// Several known nodes have that name.
    #[error("{name:?} names several nodes ({ids}); give the node id instead")]
    Ambiguous {
        /// The name given.
        name: String,
        /// The ids it could mean.
        ids: String,
    },
    /// A node asked to remove itself.
    #[error("a node cannot remove itself from the mesh; run `meshsync peer remove` on another admin")]
    Myself,
    /// Not a share name.
    #[error("{0}")]
    BadShare(String),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Signing failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A change to a share's members (`share add --peers`, `share peers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembersChange {
    /// Only show them.
    Show,
    /// Exactly these nodes (by name or id) and this one.
    Set(Vec<String>),
    /// Add one node.
    Add(String),
    /// Remove one node.
    Remove(String),
}

/// A share's members as `share peers` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersView {
    /// The share.
    pub share: String,
    /// `None`: every member of the mesh; otherwise (id, name) of each member.
    pub members: Option<Vec<(NodeId, String)>>,
    /// How many times an admin set them (0: never).
    pub version: u64,
}

/// A node removed by `peer remove`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedPeer {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
}

impl Node {
    /// True if `peer` may exchange `share` with this node: an admin's record (if
    /// any) admits both. Bench blobs are no share.
    pub(crate) fn admits(&self, share: &str, peer: &NodeId) -> bool {
        if share.starts_with(BENCH_SHARE_PREFIX) {
            return true;
        }
        let m = self.trust.members.read().unwrap_or_else(|e| e.into_inner());
        m.get(share).is_none_or(|r| r.admits(peer) && r.admits(&self.ident.id))
    }

    /// The records to give a peer that just connected: every removal, and the
    /// membership record of each share it is a member of (of every share, to an admin).
    pub(crate) fn records_for(&self, peer: &NodeId, peer_is_admin: bool) -> Vec<Control> {
        let removals = self.index.removals().unwrap_or_default();
        let mut out: Vec<Control> = removals.iter().map(|r| Control::Removed(r.into())).collect();
        for m in self.trust.all_members() {
            if peer_is_admin || m.admits(peer) {
                out.push(Control::Members((&m).into()));
            }
        }
        out
    }

    /// Takes in a removal record from a peer: checked, then acted on if new.
    pub(crate) async fn take_removal(&self, n: RemovalNotice) -> Result<(), RecordError> {
        let r = removal_from_wire(n, &self.ident.ca_cert_der)?;
        self.apply_removal(r).await;
        Ok(())
    }

    /// Acts on a checked removal record: kept, the node refused at every handshake
    /// from now on, its connection closed, forgotten as a peer and in every share,
    /// and the record passed to every connected peer. A record known before is
    /// dropped here, so gossip ends.
    async fn apply_removal(&self, r: Removal) {
        let id = r.id();
        match self.index.put_removal(&r) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => warn!(error = %e, "cannot keep a removal record; acting on it until restart"),
        }
        if id == self.ident.id {
            warn!(issued = r.issued, "an admin removed this node from the mesh: every member refuses it now");
            return;
        }
        self.trust.removed.insert(id);
        if let Some(conn) = self.peers.get(&id) {
            conn.close(6u32.into(), b"removed from the mesh");
        }
        info!(peer = ?id, name = %r.name, "node removed from the mesh by an admin: refused from now on");
        if let Err(e) = self.index.forget_known_peer(&id.0) {
            warn!(error = %e, "cannot forget the removed node's addresses");
        }
        for share in self.share_list() {
            share.forget_peer(id).await;
        }
        let _ = self.trust.events.send(Control::Removed((&r).into()));
    }

    /// Takes in a membership record from a peer: checked, kept if it replaces the
    /// one held, and acted on by every session.
    pub(crate) fn take_members(&self, n: MembersNotice) -> Result<(), RecordError> {
        let m = members_from_wire(n, &self.ident.ca_cert_der)?;
        self.apply_members(m);
        Ok(())
    }

    fn apply_members(&self, m: ShareMembers) {
        {
            let mut all = self.trust.members.write().unwrap_or_else(|e| e.into_inner());
            if all.get(&m.share).is_some_and(|old| !m.supersedes(old)) {
                return;
            }
            if let Err(e) = self.index.put_members(&m) {
                warn!(error = %e, "cannot keep a membership record; acting on it until restart");
            }
            all.insert(m.share.clone(), m.clone());
        }
        let count = match &m.members {
            Members::Everyone => "every member".to_string(),
            Members::Only(set) => format!("{} node(s)", set.len()),
        };
        info!(share = %m.share, version = m.version, members = %count, "share members set by an admin");
        // Sessions pass it on and start or stop exchanging the share.
        let _ = self.trust.events.send(Control::Members((&m).into()));
    }

    /// `peer remove`: an admin signs a removal record and acts on it as if received.
    pub(crate) async fn remove_peer(&self, who: &str) -> Result<RemovedPeer, TrustError> {
        let ca = self.ident.ca().ok_or(TrustError::NotAdmin("remove a node"))?;
        let (id, name) = self.resolve(who, true)?;
        if id == self.ident.id {
            return Err(TrustError::Myself);
        }
        let issued = now_secs().max(0) as u64;
        let signature = ca.sign_record(&record::removal_message(&id, &name, issued))?;
        self.apply_removal(Removal { node: id.0, name: name.clone(), issued, signature }).await;
        Ok(RemovedPeer { id, name })
    }

    /// `share peers` and `share add --peers`: shows, or (an admin) changes and signs,
    /// a share's members.
    pub(crate) fn change_members(&self, share: &str, change: MembersChange) -> Result<MembersView, TrustError> {
        crate::config::valid_share_name(share).map_err(TrustError::BadShare)?;
        let current = self.trust.members_of(share);
        let everyone = |m: &Option<ShareMembers>| m.as_ref().is_none_or(|m| m.members == Members::Everyone);
        let members = match change {
            MembersChange::Show => return Ok(self.view(share, current)),
            MembersChange::Add(_) if everyone(&current) => return Ok(self.view(share, current)),
            MembersChange::Set(names) => {
                let mut set: BTreeSet<[u8; 32]> =
                    names.iter().map(|n| self.resolve(n, false).map(|(id, _)| id.0)).collect::<Result<_, _>>()?;
                set.insert(self.ident.id.0);
                set
            }
            MembersChange::Add(who) => {
                let mut set = only(&current);
                set.insert(self.resolve(&who, false)?.0 .0);
                set
            }
            MembersChange::Remove(who) => {
                let id = self.resolve(&who, false)?.0;
                let mut set = if everyone(&current) { self.every_node() } else { only(&current) };
                set.remove(&id.0);
                set
            }
        };
        let ca = self.ident.ca().ok_or(TrustError::NotAdmin("change a share's members"))?;
        let unsigned = ShareMembers {
            share: share.to_string(),
            members: Members::Only(members),
            version: current.as_ref().map_or(1, |m| m.version + 1),
            issued: now_secs().max(0) as u64,
            signature: Vec::new(),
        };
        let signature = ca.sign_record(&members_message(&unsigned))?;
        let m = ShareMembers { signature, ..unsigned };
        self.apply_members(m.clone());
        Ok(self.view(share, Some(m)))
    }

    /// This node and every node it knows that was not removed.
    fn every_node(&self) -> BTreeSet<[u8; 32]> {
        let mut set: BTreeSet<[u8; 32]> = self.index.peers().unwrap_or_default().into_iter().map(|p| p.id).collect();
        set.insert(self.ident.id.0);
        set
    }

    fn view(&self, share: &str, m: Option<ShareMembers>) -> MembersView {
        let known = self.index.peers().unwrap_or_default();
        let name_of = |id: &[u8; 32]| {
            if *id == self.ident.id.0 {
                return self.config.node.name.clone();
            }
            known.iter().find(|p| p.id == *id).map_or_else(|| "(unknown)".to_string(), |p| p.name.clone())
        };
        let members = match m.as_ref().map(|m| &m.members) {
            None | Some(Members::Everyone) => None,
            Some(Members::Only(set)) => {
                let mut list: Vec<(NodeId, String)> = set.iter().map(|id| (NodeId(*id), name_of(id))).collect();
                list.sort_by(|a, b| a.1.cmp(&b.1));
                Some(list)
            }
        };
        MembersView { share: share.to_string(), members, version: m.map_or(0, |m| m.version) }
    }

    /// A node by name or id: this one or a known peer. With `any_id`, a node id
    /// nobody here knows is taken as given (to remove a node known only elsewhere).
    fn resolve(&self, who: &str, any_id: bool) -> Result<(NodeId, String), TrustError> {
        let known = self.index.peers().unwrap_or_default();
        if let Ok(id) = NodeId::parse(who) {
            if id == self.ident.id {
                return Ok((id, self.config.node.name.clone()));
            }
            if let Some(p) = known.iter().find(|p| p.id == id.0) {
                return Ok((id, p.name.clone()));
            }
            if any_id {
                return Ok((id, String::new()));
            }
        }
        let mut named: Vec<(NodeId, String)> =
            known.iter().filter(|p| p.name == who).map(|p| (NodeId(p.id), p.name.clone())).collect();
        if self.config.node.name == who {
            named.push((self.ident.id, who.to_string()));
        }
        match named.len() {
            0 => Err(TrustError::UnknownPeer(who.to_string())),
            1 => Ok(named.remove(0)),
            _ => Err(TrustError::Ambiguous {
                name: who.to_string(),
                ids: named.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

fn only(m: &Option<ShareMembers>) -> BTreeSet<[u8; 32]> {
    match m.as_ref().map(|m| &m.members) {
        Some(Members::Only(set)) => set.clone(),
        None | Some(Members::Everyone) => BTreeSet::new(),
    }
}
