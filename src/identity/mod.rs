//! Who a node is and who it trusts: node ids, the mesh CA, certificates, join tokens.

mod ca;
pub mod token;

pub use ca::{make_csr, new_mesh, sign_csr, CaMaterial};

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

/// The id of the key in a DER certificate.
pub fn node_id_of_cert(der: &[u8]) -> Result<NodeId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Cert(format!("parse: {e}")))?;
    Ok(NodeId::from_spki(cert.tbs_certificate.subject_pki.raw))
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
