//! Trust records crossing the wire: a received removal or membership record is
//! checked (bounds, then the CA's signature) before it becomes a stored one; a
//! stored one goes out exactly as it was signed.

use crate::identity::record::{self, SignatureError};
use crate::ids::NodeId;
use crate::index::{Members, Removal, ShareMembers};
use crate::proto::{MembersNotice, RemovalNotice, WireMembers, MAX_NAME, MAX_SHARE_MEMBERS, MAX_TRUST_BLOB};

/// Why a received record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Outside the bounds any real record keeps.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Not signed by an admin of this mesh.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

fn bounded(what: &str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max {
        return Err(RecordError::Malformed(format!("{what} of {len} (at most {max})")));
    }
    Ok(())
}

/// Checks a received removal record against the mesh CA certificate.
pub fn removal_from_wire(n: RemovalNotice, ca_cert_der: &[u8]) -> Result<Removal, RecordError> {
    bounded("a node name", n.name.len(), MAX_NAME)?;
    bounded("a signature", n.signature.len(), MAX_TRUST_BLOB)?;
    record::verify(ca_cert_der, &record::removal_message(&NodeId(n.node), &n.name, n.issued), &n.signature)?;
    Ok(Removal { node: n.node, name: n.name, issued: n.issued, signature: n.signature })
}

impl From<&Removal> for RemovalNotice {
    fn from(r: &Removal) -> Self {
        RemovalNotice { node: r.node, name: r.name.clone(), issued: r.issued, signature: r.signature.clone() }
    }
}

/// The bytes the CA signed for a membership record.
pub fn members_message(m: &ShareMembers) -> Vec<u8> {
    let ids: Option<Vec<NodeId>> = match &m.members {
        Members::Everyone => None,
        Members::Only(set) => Some(set.iter().map(|b| NodeId(*b)).collect()),
    };
    record::members_message(&m.share, ids.as_deref(), m.version, m.issued)
}

/// Checks a received membership record against the mesh CA certificate.
pub fn members_from_wire(n: MembersNotice, ca_cert_der: &[u8]) -> Result<ShareMembers, RecordError> {
    crate::config::valid_share_name(&n.share).map_err(RecordError::Malformed)?;
    bounded("a signature", n.signature.len(), MAX_TRUST_BLOB)?;
    let members = match n.members {
        WireMembers::Everyone => Members::Everyone,
        WireMembers::Only(list) => {
            bounded("a member list", list.len(), MAX_SHARE_MEMBERS)?;
            Members::Only(list.into_iter().collect())
        }
    };
    let m = ShareMembers { share: n.share, members, version: n.version, issued: n.issued, signature: n.signature };
    record::verify(ca_cert_der, &members_message(&m), &m.signature)?;
    Ok(m)
}

impl From<&ShareMembers> for MembersNotice {
    fn from(m: &ShareMembers) -> Self {
        MembersNotice {
            share: m.share.clone(),
            members: match &m.members {
                Members::Everyone => WireMembers::Everyone,
                Members::Only(set) => WireMembers::Only(set.iter().copied().collect()),
            },
            version: m.version,
            issued: m.issued,
            signature: m.signature.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::new_mesh;

    #[test]
    fn records_signed_by_an_admin_go_through_and_come_back_as_sent() {
        let mesh = new_mesh("a").unwrap();
        let ca = mesh.ca().unwrap();
        let msg = record::removal_message(&NodeId([2; 32]), "b", 7);
        let n = RemovalNotice { node: [2; 32], name: "b".into(), issued: 7, signature: ca.sign_record(&msg).unwrap() };
        let r = removal_from_wire(n.clone(), &mesh.ca_cert_der).unwrap();
        assert_eq!(RemovalNotice::from(&r), n);

        let unsigned = ShareMembers {
            share: "www".into(),
            members: Members::Only([[1; 32], [2; 32]].into_iter().collect()),
            version: 3,
            issued: 7,
            signature: vec![],
        };
        let signed = ShareMembers { signature: ca.sign_record(&members_message(&unsigned)).unwrap(), ..unsigned };
        let n = MembersNotice::from(&signed);
        assert_eq!(members_from_wire(n, &mesh.ca_cert_der).unwrap(), signed);
    }

    #[test]
    fn forged_and_altered_records_are_refused() {
        let mesh = new_mesh("a").unwrap();
        let member_key = crate::identity::CaMaterial { cert_der: vec![], key_der: mesh.key_der.clone() };
        let msg = record::removal_message(&NodeId([2; 32]), "b", 7);
        // A node that is not an admin signs with its own key.
        let forged = RemovalNotice {
            node: [2; 32],
            name: "b".into(),
            issued: 7,
            signature: member_key.sign_record(&msg).unwrap(),
        };
        assert_eq!(removal_from_wire(forged, &mesh.ca_cert_der), Err(RecordError::Signature(SignatureError::Forged)));
        // A real signature on another node's removal.
        let real = mesh.ca().unwrap().sign_record(&msg).unwrap();
        let moved = RemovalNotice { node: [3; 32], name: "b".into(), issued: 7, signature: real.clone() };
        assert!(removal_from_wire(moved, &mesh.ca_cert_der).is_err());
        let long = RemovalNotice { node: [2; 32], name: "x".repeat(MAX_NAME + 1), issued: 7, signature: real };
        assert!(matches!(removal_from_wire(long, &mesh.ca_cert_der), Err(RecordError::Malformed(_))));

        let everyone =
            ShareMembers { share: "www".into(), members: Members::Everyone, version: 1, issued: 1, signature: vec![] };
        let sig = mesh.ca().unwrap().sign_record(&members_message(&everyone)).unwrap();
        // Signed as "everyone", sent as "only the forger".
        let narrowed = MembersNotice {
            share: "www".into(),
            members: WireMembers::Only(vec![[9; 32]]),
            version: 1,
            issued: 1,
            signature: sig,
        };
        assert!(members_from_wire(narrowed, &mesh.ca_cert_der).is_err());
        let bad_name = MembersNotice { share: "../x".into(), ..MembersNotice::from(&everyone) };
        assert!(matches!(members_from_wire(bad_name, &mesh.ca_cert_der), Err(RecordError::Malformed(_))));
    }
}
