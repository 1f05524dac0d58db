//! The mesh certificate authority: creating it, and signing node certificates.

use super::{Identity, IdentityError, NodeId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};

/// The DNS name every node certificate carries; peers are told apart by node id, not name.
pub const NODE_SAN: &str = super::NODE_NAME;

/// The CA certificate and its private key.
pub struct CaMaterial {
    /// CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// CA key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

fn key_from_der(der: &[u8]) -> Result<KeyPair, IdentityError> {
    let k = PrivatePkcs8KeyDer::from(der.to_vec());
    KeyPair::try_from(&k).map_err(IdentityError::from)
}

fn validity(p: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365 * years);
}

fn node_params(name: &str) -> Result<CertificateParams, IdentityError> {
    let mut p = CertificateParams::new(vec![NODE_SAN.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, 20);
    Ok(p)
}

impl CaMaterial {
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IdentityError> {
        let key = key_from_der(&self.key_der)?;
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.clone()), key).map_err(IdentityError::from)
    }

    /// Signs a certificate for a public key.
    fn sign(&self, public_key: &impl PublicKeyData, name: &str) -> Result<Vec<u8>, IdentityError> {
        let issuer = self.issuer()?;
        Ok(node_params(name)?.signed_by(public_key, &issuer)?.der().to_vec())
    }
}

/// Creates a new mesh: a CA and this node's identity signed by it.
pub fn new_mesh(mesh_label: &str) -> Result<Identity, IdentityError> {
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("meshsync CA {mesh_label}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, 30);
    let ca_cert = p.self_signed(&ca_key)?;
    let ca = CaMaterial { cert_der: ca_cert.der().to_vec(), key_der: ca_key.serialize_der() };
    let node_key = KeyPair::generate()?;
    let cert_der = ca.sign(&node_key, mesh_label)?;
    Ok(Identity {
        id: NodeId::from_spki(&node_key.subject_public_key_info()),
        key_der: node_key.serialize_der(),
        cert_der,
        ca_cert_der: ca.cert_der,
        ca_key_der: Some(ca.key_der),
    })
}

/// A fresh key and a certificate request for it: (PKCS#8 key DER, CSR DER).
pub fn make_csr(name: &str) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
    let key = KeyPair::generate()?;
    // The request only proves key possession; the inviter sets every field it signs.
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Verifies a certificate request (proof of key possession) and signs it for `name`.
pub fn sign_csr(ca: &CaMaterial, csr_der: &[u8], name: &str) -> Result<Vec<u8>, IdentityError> {
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der.to_vec()))?;
    ca.sign(&csr.public_key, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_roundtrip_gives_matching_node_id() {
        let ident = new_mesh("a").unwrap();
        let ca = ident.ca().unwrap();
        let (key_der, csr) = make_csr("b").unwrap();
        let cert = sign_csr(&ca, &csr, "b").unwrap();
        let key = key_from_der(&key_der).unwrap();
        assert_eq!(crate::identity::node_id_of_cert(&cert).unwrap(), NodeId::from_spki(&key.subject_public_key_info()));
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ident = new_mesh("a").unwrap();
        assert!(sign_csr(&ident.ca().unwrap(), b"not a csr", "x").is_err());
    }
}
