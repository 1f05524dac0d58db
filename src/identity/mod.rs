//! Who a node is and who it trusts: node ids, the mesh CA, certificates and the
//! role they carry, join tokens, and the CA-signed records (removals, share members).

mod ca;
pub mod record;
pub mod token;

pub use ca::{
    csr_node_id, make_csr, new_mesh, now_secs, renewal_due, sign_csr, CaMaterial, Validity, CERT_LIFETIME_DAYS,
    RENEW_WITHIN_DAYS,
};

use crate::home::{write_atomic, write_private, Home};
use crate::ids::NodeId;

/// The server name every node certificate carries and every client asks for;
/// peers are told apart by node id, not by name.
pub const NODE_NAME: &str = "node.meshsync.invalid";

/// Identity failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Certificate or key generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// A key or certificate file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl From<rcgen::Error> for IdentityError {
    fn from(e: rcgen::Error) -> Self {
        IdentityError::Cert(e.to_string())
    }
}

/// What a node may do, as the certificate the CA signed for it says (its subject's
/// organizational unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Holds the CA key (`init`, `invite --admin`): signs certificates, removals and
    /// share members.
    Admin,
    /// May invite: an admin signs the new node's certificate, asked over the mesh.
    Member,
    /// May not invite (`invite --no-invite`): admins refuse its requests.
    NoInvite,
}

impl Role {
    /// The text in the certificate and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::NoInvite => "no-invite",
        }
    }

    /// The role a certificate's organizational unit names. A certificate without one
    /// (issued before roles existed) is a member's.
    fn from_unit(unit: Option<&str>) -> Result<Self, IdentityError> {
        match unit {
            None | Some("member") => Ok(Role::Member),
            Some("admin") => Ok(Role::Admin),
            Some("no-invite") => Ok(Role::NoInvite),
            Some(other) => Err(IdentityError::Cert(format!(
                "unknown role {other:?} in the certificate (expected admin, member or no-invite)"
            ))),
        }
    }

    /// True if a node of this role may have new nodes join through it.
    pub fn may_invite(self) -> bool {
        self != Role::NoInvite
    }
}

/// What a node certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The id of its key.
    pub id: NodeId,
    /// The node's name (CN).
    pub name: String,
    /// What the node may do.
    pub role: Role,
    /// Unix seconds after which it is no longer valid.
    pub not_after: i64,
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Cert(format!("parse: {e}")))?;
    Ok(cert)
}

/// The id of the key in a DER certificate.
pub fn node_id_of_cert(der: &[u8]) -> Result<NodeId, IdentityError> {
    Ok(NodeId::from_spki(parse_cert(der)?.tbs_certificate.subject_pki.raw))
}

/// The SubjectPublicKeyInfo (DER) of a certificate's key.
pub fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    Ok(parse_cert(der)?.tbs_certificate.subject_pki.raw.to_vec())
}

/// Reads id, name, role and expiry from a DER node certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, IdentityError> {
    let cert = parse_cert(der)?;
    let subject = cert.subject();
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().map(str::to_string).ok();
    let name = subject.iter_common_name().next().and_then(text).unwrap_or_default();
    let unit = subject.iter_organizational_unit().next().and_then(text);
    Ok(CertInfo {
        id: NodeId::from_spki(cert.tbs_certificate.subject_pki.raw),
        name,
        role: Role::from_unit(unit.as_deref())?,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// A node's keys and certificates as loaded from its home.
#[derive(Clone)]
pub struct Identity {
    /// This node's id.
    pub id: NodeId,
    /// Private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Mesh CA certificate, DER.
    pub ca_cert_der: Vec<u8>,
    /// Mesh CA key, PKCS#8 DER, when this node may invite.
    pub ca_key_der: Option<Vec<u8>>,
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn pem_decode(text: &str, path: &std::path::Path) -> Result<Vec<u8>, IdentityError> {
    pem::parse(text)
        .map(|p| p.into_contents())
        .map_err(|e| IdentityError::Cert(format!("{}: not PEM: {e}", path.display())))
}

fn read(path: &std::path::Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::File { path: path.to_path_buf(), source })
}

impl Identity {
    /// Loads the identity files of a home.
    pub fn load(home: &Home) -> Result<Self, IdentityError> {
        let key_der = pem_decode(&read(&home.node_key())?, &home.node_key())?;
        let cert_der = pem_decode(&read(&home.node_cert())?, &home.node_cert())?;
        let ca_cert_der = pem_decode(&read(&home.ca_cert())?, &home.ca_cert())?;
        let ca_key_der = match std::fs::read_to_string(home.ca_key()) {
            Ok(t) => Some(pem_decode(&t, &home.ca_key())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(IdentityError::File { path: home.ca_key(), source }),
        };
        let id = node_id_of_cert(&cert_der)?;
        Ok(Self { id, key_der, cert_der, ca_cert_der, ca_key_der })
    }

    /// Writes the identity files (keys 0600).
    pub fn save(&self, home: &Home) -> Result<(), IdentityError> {
        let w = |path: std::path::PathBuf, data: String, private: bool| {
            let r = if private {
                write_private(&path, data.as_bytes())
            } else {
                write_atomic(&path, data.as_bytes(), 0o644)
            };
            r.map_err(|source| IdentityError::File { path, source })
        };
        w(home.node_key(), pem_encode("PRIVATE KEY", &self.key_der), true)?;
        w(home.node_cert(), pem_encode("CERTIFICATE", &self.cert_der), false)?;
        w(home.ca_cert(), pem_encode("CERTIFICATE", &self.ca_cert_der), false)?;
        if let Some(k) = &self.ca_key_der {
            w(home.ca_key(), pem_encode("PRIVATE KEY", k), true)?;
        }
        Ok(())
    }

    /// blake3 of the CA certificate: what join tokens pin.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.ca_cert_der).as_bytes()
    }

    /// The CA, when this node holds its key.
    pub fn ca(&self) -> Option<CaMaterial> {
        self.ca_key_der.as_ref().map(|k| CaMaterial { cert_der: self.ca_cert_der.clone(), key_der: k.clone() })
    }

    /// What this node may do: an admin if it holds the CA key (whatever its
    /// certificate says), otherwise its certificate's role.
    pub fn role(&self) -> Result<Role, IdentityError> {
        if self.ca_key_der.is_some() {
            return Ok(Role::Admin);
        }
        Ok(match cert_info(&self.cert_der)?.role {
            // An admin whose CA key was deleted is a member now.
            Role::Admin => Role::Member,
            r => r,
        })
    }

    /// Writes a new certificate for this node's key (a renewal).
    pub fn save_cert(&self, home: &Home) -> Result<(), IdentityError> {
        let path = home.node_cert();
        write_atomic(&path, pem_encode("CERTIFICATE", &self.cert_der).as_bytes(), 0o644)
            .map_err(|source| IdentityError::File { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_roundtrip_and_short_prefix() {
        let id = NodeId([0xab; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 52);
        assert_eq!(NodeId::parse(&s.to_lowercase()).unwrap(), id);
        assert!(s.starts_with(&id.short().to_string()));
        assert!(NodeId::parse("nope").is_err());
    }

    #[test]
    fn identity_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let ident = new_mesh("alpha").unwrap();
        ident.save(&home).unwrap();
        let back = Identity::load(&home).unwrap();
        assert_eq!(back.id, ident.id);
        assert_eq!(back.key_der, ident.key_der);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.node_key()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
