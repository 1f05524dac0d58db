//! What the mesh CA signs besides certificates: removal records (a node is out of
//! the mesh) and share membership records (who may take part in a share). Only an
//! admin holds the CA key, so only an admin can make either; every node checks them
//! against the CA certificate it pinned when it joined.
//!
//! The signed bytes are built here, field by field behind a tag naming the kind
//! of record, so no record can pass for another and no encoding change elsewhere
//! (wire, index) can change what was signed.

use super::NodeId;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

const REMOVAL_TAG: &[u8] = b"meshsync removal record v1\0";
const MEMBERS_TAG: &[u8] = b"meshsync share members record v1\0";

/// Why a record's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature does not verify with the mesh CA's key: not made by an admin
    /// of this mesh, or the record was changed after signing.
    #[error("not signed by this mesh's CA (forged, altered, or of another mesh)")]
    Forged,
    /// The CA certificate holds no usable key.
    #[error("the mesh CA certificate cannot be read: {0}")]
    BadCa(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The bytes an admin signs to remove `node` (named `name` then) at `issued` (Unix seconds).
pub fn removal_message(node: &NodeId, name: &str, issued: u64) -> Vec<u8> {
    let mut m = REMOVAL_TAG.to_vec();
    m.extend_from_slice(&node.0);
    m.extend_from_slice(&issued.to_be_bytes());
    put_str(&mut m, name);
    m
}

/// The bytes an admin signs to set the members of `share`: `None` is every member
/// of the mesh, otherwise exactly the nodes listed (order and repeats do not count).
pub fn members_message(share: &str, members: Option<&[NodeId]>, version: u64, issued: u64) -> Vec<u8> {
    let mut m = MEMBERS_TAG.to_vec();
    put_str(&mut m, share);
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&issued.to_be_bytes());
    match members {
        None => m.push(0),
        Some(list) => {
            let mut ids: Vec<&NodeId> = list.iter().collect();
            ids.sort();
            ids.dedup();
            m.push(1);
            m.extend_from_slice(&(ids.len() as u64).to_be_bytes());
            for id in ids {
                m.extend_from_slice(&id.0);
            }
        }
    }
    m
}

/// Checks that `signature` over `message` was made with the key of the CA
/// certificate `ca_cert_der`.
pub fn verify(ca_cert_der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let (_, ca) = x509_parser::parse_x509_certificate(ca_cert_der).map_err(|e| SignatureError::BadCa(e.to_string()))?;
    let point = &ca.tbs_certificate.subject_pki.subject_public_key.data;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point.as_ref())
        .verify(message, signature)
        .map_err(|_| SignatureError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::new_mesh;

    #[test]
    fn an_admin_signs_and_every_node_checks_with_the_ca_certificate() {
        let mesh = new_mesh("a").unwrap();
        let ca = mesh.ca().unwrap();
        let gone = NodeId([7; 32]);
        let msg = removal_message(&gone, "laptop", 1_700_000_000);
        let sig = ca.sign_record(&msg).unwrap();
        assert_eq!(verify(&mesh.ca_cert_der, &msg, &sig), Ok(()));
        // Any field changed after signing: refused.
        for altered in [
            removal_message(&NodeId([8; 32]), "laptop", 1_700_000_000),
            removal_message(&gone, "laptop2", 1_700_000_000),
            removal_message(&gone, "laptop", 1_700_000_001),
        ] {
            assert_eq!(verify(&mesh.ca_cert_der, &altered, &sig), Err(SignatureError::Forged));
        }
        // Signed by another mesh's CA, or by a node key: refused.
        let other = new_mesh("b").unwrap();
        let foreign = other.ca().unwrap().sign_record(&msg).unwrap();
        assert_eq!(verify(&mesh.ca_cert_der, &msg, &foreign), Err(SignatureError::Forged));
        let by_node = crate::identity::CaMaterial { cert_der: vec![], key_der: mesh.key_der.clone() };
        let node_sig = by_node.sign_record(&msg).unwrap();
        assert_eq!(verify(&mesh.ca_cert_der, &msg, &node_sig), Err(SignatureError::Forged));
        assert_eq!(verify(&mesh.ca_cert_der, &msg, b"junk"), Err(SignatureError::Forged));
    }

    #[test]
    fn a_signature_of_one_kind_of_record_is_no_signature_of_another() {
        let mesh = new_mesh("a").unwrap();
        let ca = mesh.ca().unwrap();
        let members = members_message("www", Some(&[NodeId([1; 32])]), 1, 5);
        let sig = ca.sign_record(&members).unwrap();
        assert_eq!(verify(&mesh.ca_cert_der, &members, &sig), Ok(()));
        assert_eq!(verify(&mesh.ca_cert_der, &members_message("www", None, 1, 5), &sig), Err(SignatureError::Forged));
        assert_eq!(
            verify(&mesh.ca_cert_der, &members_message("www", Some(&[NodeId([1; 32])]), 2, 5), &sig),
            Err(SignatureError::Forged)
        );
        let removal = removal_message(&NodeId([1; 32]), "www", 5);
        assert_eq!(verify(&mesh.ca_cert_der, &removal, &sig), Err(SignatureError::Forged));
    }

    #[test]
    fn member_order_and_repeats_do_not_change_what_is_signed() {
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        assert_eq!(members_message("s", Some(&[a, b]), 1, 1), members_message("s", Some(&[b, a, b]), 1, 1));
        assert_ne!(members_message("s", Some(&[]), 1, 1), members_message("s", None, 1, 1));
    }
}
