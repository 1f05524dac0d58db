//! What the index keeps of the mesh's trust records: nodes removed by an admin, and
//! each share's members. Both are kept as received (with the CA's signature) so
//! they can be passed on to nodes that were offline; they are checked before they
//! are stored (`gossip::trust`).

use super::{Index, IndexError};
use crate::codec;
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A node removed from the mesh, as an admin signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The removed node.
    pub node: [u8; 32],
    /// Its name then.
    pub name: String,
    /// Unix seconds when the admin issued it.
    pub issued: u64,
    /// The CA's signature.
    pub signature: Vec<u8>,
}

impl Removal {
    /// The removed node's id.
    pub fn id(&self) -> NodeId {
        NodeId(self.node)
    }
}

/// Who may take part in a share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Members {
    /// Every node of the mesh.
    Everyone,
    /// Only these.
    Only(BTreeSet<[u8; 32]>),
}

/// A share's members, as an admin signed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareMembers {
    /// The share.
    pub share: String,
    /// Who may take part.
    pub members: Members,
    /// Counts the changes.
    pub version: u64,
    /// Unix seconds when the admin issued it.
    pub issued: u64,
    /// The CA's signature.
    pub signature: Vec<u8>,
}

impl ShareMembers {
    /// True if `node` may take part in the share.
    pub fn admits(&self, node: &NodeId) -> bool {
        match &self.members {
            Members::Everyone => true,
            Members::Only(set) => set.contains(&node.0),
        }
    }

    /// True if this record replaces `old`: a higher version; at the same version
    /// (two admins changed the members at once), the later one, then the one with
    /// the larger signature hash, so every node settles on the same record.
    pub fn supersedes(&self, old: &ShareMembers) -> bool {
        let rank = |m: &ShareMembers| (m.version, m.issued, *blake3::hash(&m.signature).as_bytes());
        rank(self) > rank(old)
    }
}

impl Index {
    /// Keeps a removal record; returns false if that node was removed before.
    pub fn put_removal(&self, r: &Removal) -> Result<bool, IndexError> {
        let new = self.removed.insert(r.node, codec::encode(r)?)?.is_none();
        self.removed.flush()?;
        Ok(new)
    }

    /// Every removal record.
    pub fn removals(&self) -> Result<Vec<Removal>, IndexError> {
        self.removed.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Keeps a share's membership record (the caller decided it supersedes the last).
    pub fn put_members(&self, m: &ShareMembers) -> Result<(), IndexError> {
        self.members.insert(m.share.as_bytes(), codec::encode(m)?)?;
        self.members.flush()?;
        Ok(())
    }

    /// Every share's membership record.
    pub fn all_members(&self) -> Result<Vec<ShareMembers>, IndexError> {
        self.members.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, issued: u64, sig: u8, only: &[u8]) -> ShareMembers {
        ShareMembers {
            share: "www".into(),
            members: Members::Only(only.iter().map(|b| [*b; 32]).collect()),
            version,
            issued,
            signature: vec![sig],
        }
    }

    #[test]
    fn membership_decisions() {
        let m = record(1, 1, 1, &[1, 2]);
        assert!(m.admits(&NodeId([1; 32])) && m.admits(&NodeId([2; 32])));
        assert!(!m.admits(&NodeId([3; 32])));
        let all = ShareMembers { members: Members::Everyone, ..record(2, 1, 1, &[]) };
        assert!(all.admits(&NodeId([3; 32])));
    }

    #[test]
    fn a_higher_version_wins_and_concurrent_ones_settle_the_same_everywhere() {
        let (v1, v2) = (record(1, 100, 1, &[1]), record(2, 50, 1, &[2]));
        assert!(v2.supersedes(&v1) && !v1.supersedes(&v2), "version first, whatever the clocks say");
        let (a, b) = (record(3, 10, 1, &[1]), record(3, 10, 2, &[2]));
        assert_ne!(a.supersedes(&b), b.supersedes(&a), "exactly one of two concurrent records wins");
        assert!(!a.supersedes(&a), "a record does not replace itself");
        assert!(record(3, 11, 1, &[1]).supersedes(&a), "then the later one");
    }

    #[test]
    fn records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        let r = Removal { node: [9; 32], name: "old".into(), issued: 5, signature: vec![1] };
        assert!(idx.put_removal(&r).unwrap());
        assert!(!idx.put_removal(&r).unwrap(), "a second copy is not news");
        assert_eq!(idx.removals().unwrap(), vec![r]);
        let m = record(1, 1, 1, &[1]);
        idx.put_members(&m).unwrap();
        idx.put_members(&record(2, 1, 1, &[1, 2])).unwrap();
        assert_eq!(idx.all_members().unwrap(), vec![record(2, 1, 1, &[1, 2])]);
        idx.put_peer(&super::super::KnownPeer { id: [9; 32], name: "old".into(), addrs: vec![] }).unwrap();
        idx.forget_known_peer(&[9; 32]).unwrap();
        assert!(idx.peers().unwrap().is_empty());
    }
}
