//! The mesh certificate authority: creating it, and signing node certificates.

use super::{Identity, IdentityError, NodeId, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SigningKey,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};

/// The DNS name every node certificate carries; peers are told apart by node id, not name.
pub const NODE_SAN: &str = super::NODE_NAME;

/// How long a node certificate is valid: a stolen key that nobody removed stops
/// working by itself, and renewal (through an admin) keeps live nodes going.
pub const CERT_LIFETIME_DAYS: i64 = 90;
/// A node asks for a new certificate once its own has fewer days than this left.
pub const RENEW_WITHIN_DAYS: i64 = 30;
const DAY: i64 = 86_400;

/// The CA certificate and its private key.
pub struct CaMaterial {
    /// CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// CA key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// When a certificate is valid, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: i64,
    /// Not valid after.
    pub not_after: i64,
}

impl Validity {
    /// The standard lifetime from `now`: from a day before (clocks differ) for
    /// [`CERT_LIFETIME_DAYS`].
    pub fn standard(now: i64) -> Self {
        Self { not_before: now - DAY, not_after: now + CERT_LIFETIME_DAYS * DAY }
    }
}

/// True when a certificate valid until `not_after` should be renewed at `now`:
/// less than [`RENEW_WITHIN_DAYS`] left, or more than the standard lifetime (one
/// issued before lifetimes were bounded, valid for 20 years).
pub fn renewal_due(not_after: i64, now: i64) -> bool {
    let fine = RENEW_WITHIN_DAYS * DAY..=(CERT_LIFETIME_DAYS + 2) * DAY;
    !fine.contains(&(not_after - now))
}

fn key_from_der(der: &[u8]) -> Result<KeyPair, IdentityError> {
    let k = PrivatePkcs8KeyDer::from(der.to_vec());
    KeyPair::try_from(&k).map_err(IdentityError::from)
}

fn at(secs: i64) -> Result<time::OffsetDateTime, IdentityError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| IdentityError::Cert(format!("validity: {e}")))
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn node_params(name: &str, role: Role, validity: Validity) -> Result<CertificateParams, IdentityError> {
    let mut p = CertificateParams::new(vec![NODE_SAN.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    // The role travels in the certificate the CA signed, so any node can read what
    // a peer may do from the handshake alone.
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    // Random, not rcgen's hash of the key: a renewed certificate has the same key and
    // must not repeat the serial.
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.not_before = at(validity.not_before)?;
    p.not_after = at(validity.not_after)?;
    Ok(p)
}

impl CaMaterial {
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IdentityError> {
        let key = key_from_der(&self.key_der)?;
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.clone()), key).map_err(IdentityError::from)
    }

    /// Signs a node certificate for a public key.
    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        name: &str,
        role: Role,
        validity: Validity,
    ) -> Result<Vec<u8>, IdentityError> {
        let issuer = self.issuer()?;
        Ok(node_params(name, role, validity)?.signed_by(public_key, &issuer)?.der().to_vec())
    }

    /// Signs a node certificate for the key of `spki_der` (SubjectPublicKeyInfo DER)
    /// with the given name, role and validity.
    pub fn issue(&self, spki_der: &[u8], name: &str, role: Role, validity: Validity) -> Result<Vec<u8>, IdentityError> {
        let key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)?;
        self.sign(&key, name, role, validity)
    }

    /// A new certificate for the key, name and role of `cert_der`, valid for the
    /// standard lifetime from now.
    pub fn renew(&self, cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let info = super::cert_info(cert_der)?;
        self.issue(&super::spki_of_cert(cert_der)?, &info.name, info.role, Validity::standard(now_secs()))
    }

    /// Signs `message` with the CA key (ECDSA P-256, SHA-256, ASN.1 signature):
    /// removal and membership records.
    pub fn sign_record(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        Ok(key_from_der(&self.key_der)?.sign(message)?)
    }
}

/// Creates a new mesh: a CA and this node's identity (an admin) signed by it.
pub fn new_mesh(mesh_label: &str) -> Result<Identity, IdentityError> {
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("meshsync CA {mesh_label}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = now_secs();
    p.not_before = at(now - DAY)?;
    p.not_after = at(now + 30 * 365 * DAY)?;
    let ca_cert = p.self_signed(&ca_key)?;
    let ca = CaMaterial { cert_der: ca_cert.der().to_vec(), key_der: ca_key.serialize_der() };
    let node_key = KeyPair::generate()?;
    let cert_der = ca.sign(&node_key, mesh_label, Role::Admin, Validity::standard(now))?;
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

fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, IdentityError> {
    Ok(CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der.to_vec()))?)
}

/// The node id a certificate request's key would have; checks the request's
/// signature (proof that the requester holds the key).
pub fn csr_node_id(csr_der: &[u8]) -> Result<NodeId, IdentityError> {
    Ok(NodeId::from_spki(&parse_csr(csr_der)?.public_key.subject_public_key_info()))
}

/// Verifies a certificate request (proof of key possession) and signs it for
/// `name` with `role`, valid for the standard lifetime.
pub fn sign_csr(ca: &CaMaterial, csr_der: &[u8], name: &str, role: Role) -> Result<Vec<u8>, IdentityError> {
    ca.sign(&parse_csr(csr_der)?.public_key, name, role, Validity::standard(now_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_roundtrip_gives_matching_node_id_name_and_role() {
        let ident = new_mesh("a").unwrap();
        let ca = ident.ca().unwrap();
        let (key_der, csr) = make_csr("b").unwrap();
        let cert = sign_csr(&ca, &csr, "b", Role::NoInvite).unwrap();
        let key = key_from_der(&key_der).unwrap();
        let info = crate::identity::cert_info(&cert).unwrap();
        assert_eq!(info.id, NodeId::from_spki(&key.subject_public_key_info()));
        assert_eq!(csr_node_id(&csr).unwrap(), info.id);
        assert_eq!((info.name.as_str(), info.role), ("b", Role::NoInvite));
        let first = crate::identity::cert_info(&ident.cert_der).unwrap();
        assert_eq!(first.role, Role::Admin, "the node that made the mesh is its first admin");
        let days = (info.not_after - now_secs()) as f64 / DAY as f64;
        assert!((89.9..=90.1).contains(&days), "a node certificate lasts {CERT_LIFETIME_DAYS} days, not {days}");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ident = new_mesh("a").unwrap();
        assert!(sign_csr(&ident.ca().unwrap(), b"not a csr", "x", Role::Member).is_err());
        assert!(csr_node_id(b"not a csr").is_err());
    }

    #[test]
    fn renewal_keeps_key_name_and_role_and_gets_a_new_serial() {
        let ident = new_mesh("a").unwrap();
        let ca = ident.ca().unwrap();
        let (_, csr) = make_csr("b").unwrap();
        let now = now_secs();
        let short = Validity { not_before: now - DAY, not_after: now + 3 * DAY };
        let spki = crate::identity::spki_of_cert(&sign_csr(&ca, &csr, "b", Role::Member).unwrap()).unwrap();
        let old = ca.issue(&spki, "b", Role::Member, short).unwrap();
        let new = ca.renew(&old).unwrap();
        let (o, n) = (crate::identity::cert_info(&old).unwrap(), crate::identity::cert_info(&new).unwrap());
        assert_eq!((o.id, o.name, o.role), (n.id, n.name, n.role));
        assert!(n.not_after > o.not_after);
        assert_ne!(serial(&old), serial(&new));
    }

    fn serial(der: &[u8]) -> Vec<u8> {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        c.tbs_certificate.raw_serial().to_vec()
    }

    #[test]
    fn renewal_is_due_near_the_end_and_for_certificates_of_the_old_20_years() {
        let now = 1_000_000_000;
        assert!(!renewal_due(now + CERT_LIFETIME_DAYS * DAY, now), "a fresh certificate");
        assert!(!renewal_due(now + RENEW_WITHIN_DAYS * DAY + 1, now));
        assert!(renewal_due(now + RENEW_WITHIN_DAYS * DAY - 1, now), "fewer than 30 days left");
        assert!(renewal_due(now - 1, now), "expired");
        assert!(renewal_due(now + 20 * 365 * DAY, now), "issued before lifetimes were bounded");
    }
}
