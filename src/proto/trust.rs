//! Messages of the trust layer (protocol minor [`MINOR_TRUST`]): CA-signed removal
//! and share membership records, and certificates asked of an admin over the mesh.

use serde::{Deserialize, Serialize};

/// The minor version that added [`super::Control::Removed`], [`super::Control::Members`],
/// [`super::Control::CertRequest`] and [`super::Control::CertReply`]; a peer of a
/// smaller minor never receives them.
pub const MINOR_TRUST: u32 = 3;

/// Most nodes one membership record names.
pub const MAX_SHARE_MEMBERS: usize = 4096;
/// Longest signature, certificate request or certificate accepted, in bytes.
pub const MAX_TRUST_BLOB: usize = 16 << 10;

/// "This node is out of the mesh": signed by an admin with the CA key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalNotice {
    /// The removed node's id.
    pub node: [u8; 32],
    /// Its name when it was removed (for the log and status).
    pub name: String,
    /// Unix seconds when the admin issued the record.
    pub issued: u64,
    /// The CA's signature (ECDSA P-256, ASN.1) over the record (`identity::record`).
    pub signature: Vec<u8>,
}

/// Who may take part in a share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMembers {
    /// Every member of the mesh (the default when no record exists).
    Everyone,
    /// Only these node ids.
    Only(Vec<[u8; 32]>),
}

/// The members of one share, signed by an admin with the CA key. A record of a
/// higher `version` replaces the one before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersNotice {
    /// The share's name.
    pub share: String,
    /// Who may take part.
    pub members: WireMembers,
    /// Counts the changes to this share's members.
    pub version: u64,
    /// Unix seconds when the admin issued the record.
    pub issued: u64,
    /// The CA's signature over the record.
    pub signature: Vec<u8>,
}

/// The role a node asks an admin to certify for a joiner: never an admin's,
/// which only an admin can grant, in person (`invite --admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinRole {
    /// May invite in turn.
    Member,
    /// May not invite.
    NoInvite,
}

/// What a node asks an admin to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertWant {
    /// A certificate for a node joining through the asker (which must be allowed to invite).
    Join {
        /// The joiner's name.
        name: String,
        /// What it will be.
        role: JoinRole,
        /// Its PKCS#10 request (proves it holds the key).
        csr_der: Vec<u8>,
    },
    /// A new certificate for the asker's own key, name and role (its current one is
    /// near its end): the key is the one it proved in this connection's handshake.
    Renew,
}

/// An admin's answer to [`CertWant`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertReply {
    /// The certificate, DER, signed by the mesh CA.
    Signed(Vec<u8>),
    /// Not signed, and why (the asker may not invite, the key was removed...).
    Refused(String),
    /// Not signed: the receiver holds no CA key (ask another node).
    NotAdmin,
}
