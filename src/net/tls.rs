//! rustls configuration: TLS 1.3 only, ring provider, certificates pinned to the mesh CA.

use crate::identity::Identity;
use crate::ids::NodeId;
use crate::proto::{ALPN_JOIN, ALPN_MESH};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the material.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificate is unusable as a trust anchor.
    #[error("mesh CA certificate unusable: {0}")]
    Anchor(String),
    /// quinn refused the rustls config.
    #[error("quic crypto: {0}")]
    Quic(String),
}

pub use crate::identity::NODE_NAME;

/// Nodes an admin removed from the mesh: their certificates fail every handshake,
/// either side. Shared by the endpoint's verifiers and the daemon, which adds to it
/// as removal records arrive.
#[derive(Clone, Debug, Default)]
pub struct Removed(Arc<RwLock<HashSet<NodeId>>>);

impl Removed {
    /// A set holding `ids`.
    pub fn of(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Self(Arc::new(RwLock::new(ids.into_iter().collect())))
    }

    /// Refuses `id` from now on.
    pub fn insert(&self, id: NodeId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(id);
    }

    /// True if `id` was removed.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// Fails for the certificate of a removed node.
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let id = crate::identity::node_id_of_cert(end_entity.as_ref())
            .map_err(|e| rustls::Error::General(format!("peer certificate: {e}")))?;
        if self.contains(&id) {
            return Err(rustls::Error::General(format!("node {id} was removed from the mesh by an admin")));
        }
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    provider_with(aes_in_hardware())
}

fn provider_with(aes_hw: bool) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = cipher_order(aes_hw);
    Arc::new(p)
}

/// The TLS 1.3 suites in order of preference (a server with AES instructions takes
/// the client's order, one without its own). ring's default puts AES-256-GCM first; AES-128-GCM is the same
/// construction with 10 rounds instead of 14, and every byte a mesh moves goes
/// through it twice (sealed, opened). A CPU without AES instructions (many ARM
/// boards that serve as NAS boxes) runs ChaCha20-Poly1305 several times faster
/// than constant-time software AES, so it is offered first there.
fn cipher_order(aes_hw: bool) -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    if aes_hw {
        vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256]
    } else {
        // AES-128-GCM stays offered: QUIC's initial packets use it whatever is chosen.
        vec![TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384]
    }
}

/// True if this CPU has AES and carry-less multiply instructions (what AES-GCM needs
/// to be fast).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(ca_der.to_vec())).map_err(|e| TlsError::Anchor(e.to_string()))?;
    Ok(Arc::new(r))
}

fn chain_and_key(ident: &Identity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = vec![CertificateDer::from(ident.cert_der.clone()), CertificateDer::from(ident.ca_cert_der.clone())];
    (chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ident.key_der.clone())))
}

/// Server side for both ALPNs. A client certificate is optional at the TLS layer
/// (a joining node has none yet) but, when present, must chain to the mesh CA and
/// not be a removed node's; mesh-ALPN connections without one are closed right
/// after the handshake.
pub fn server_config(ident: &Identity, removed: &Removed) -> Result<rustls::ServerConfig, TlsError> {
    server_with(ident, removed, aes_in_hardware())
}

fn server_with(ident: &Identity, removed: &Removed, aes_hw: bool) -> Result<rustls::ServerConfig, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(&ident.ca_cert_der)?, provider_with(aes_hw))
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    let verifier = Arc::new(MeshClientVerifier { inner, removed: removed.clone() });
    let (chain, key) = chain_and_key(ident);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider_with(aes_hw))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    // Which side dials is chance (both do, one duplicate is dropped), so a server
    // without AES instructions picks by its own order (ChaCha20 first): ChaCha20 is
    // then used whenever either side lacks them.
    cfg.ignore_client_order = !aes_hw;
    cfg.alpn_protocols = vec![ALPN_MESH.to_vec(), ALPN_JOIN.to_vec()];
    Ok(cfg)
}

/// Client side of mesh connections: presents this node's certificate, accepts only
/// servers whose certificate chains to the mesh CA and is not a removed node's.
pub fn mesh_client_config(ident: &Identity, removed: &Removed) -> Result<rustls::ClientConfig, TlsError> {
    mesh_client_with(ident, removed, provider())
}

fn mesh_client_with(
    ident: &Identity,
    removed: &Removed,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsError> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(&ident.ca_cert_der)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    let verifier = Arc::new(MeshServerVerifier { inner, removed: removed.clone() });
    let (chain, key) = chain_and_key(ident);
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![ALPN_MESH.to_vec()];
    Ok(cfg)
}

/// Client side of a join: no certificate yet; the server must present a chain whose
/// CA has the fingerprint from the token.
pub fn join_client_config(ca_fingerprint: [u8; 32]) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(JoinServerVerifier { fingerprint: ca_fingerprint });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    Ok(cfg)
}

/// The signature checks of a verifier that wraps another (`inner`): TLS 1.2
/// refused, TLS 1.3 signatures and schemes as the wrapped verifier has them.
macro_rules! signatures_as_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            _m: &[u8],
            _c: &CertificateDer<'_>,
            _d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// Verifies a server certificate against the mesh CA held in the root store, and
/// refuses removed nodes.
#[derive(Debug)]
struct MeshServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    removed: Removed,
}

/// Verifies a client certificate, when there is one, against the mesh CA, and
/// refuses removed nodes.
#[derive(Debug)]
struct MeshClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    removed: Removed,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.removed.check(end_entity)?;
        Ok(ok)
    }
    signatures_as_inner!();
}

/// Verifies the inviter during a join: only the CA's fingerprint is known, so the CA
/// must come in the presented chain and hash to that fingerprint.
#[derive(Debug)]
struct JoinServerVerifier {
    fingerprint: [u8; 32],
}

fn verify_with_fingerprint(
    fingerprint: &[u8; 32],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let ca = intermediates.iter().find(|c| blake3::hash(c.as_ref()).as_bytes() == fingerprint).ok_or_else(|| {
        rustls::Error::General(
            "inviter's certificate is not from the mesh named in the token (CA fingerprint mismatch)".into(),
        )
    })?;
    let v = WebPkiServerVerifier::builder_with_provider(
        roots(ca.as_ref()).map_err(|e| rustls::Error::General(e.to_string()))?,
        provider(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    v.verify_server_cert(end_entity, &[], server_name, &[], now)
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| rustls::Error::General(format!("peer certificate is not valid in this mesh: {e}")))?;
        self.removed.check(end_entity)?;
        Ok(ok)
    }
    signatures_as_inner!();
}

impl ServerCertVerifier for JoinServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_with_fingerprint(&self.fingerprint, end_entity, intermediates, server_name, now)
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &provider().signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Checks that `cert_der` is a node certificate of the mesh of `ca_der`, valid now
/// (what a peer would check in a handshake): a certificate an admin sent back
/// before this node hands it on or starts using it.
pub fn verify_node_cert(ca_der: &[u8], cert_der: &[u8]) -> Result<(), TlsError> {
    let v = WebPkiServerVerifier::builder_with_provider(roots(ca_der)?, provider())
        .build()
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    let name = ServerName::try_from(NODE_NAME).map_err(|e| TlsError::Anchor(e.to_string()))?;
    v.verify_server_cert(&CertificateDer::from(cert_der.to_vec()), &[], &name, &[], UnixTime::now())?;
    Ok(())
}

/// The node id of the peer's certificate, if it presented one.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    crate::identity::node_id_of_cert(&peer_cert(conn)?).ok()
}

/// The peer's certificate (DER), if it presented one.
pub fn peer_cert(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    Some(certs.first()?.as_ref().to_vec())
}

/// The negotiated ALPN.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a TLS handshake in memory and returns the suite both sides settled on.
    fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> rustls::SupportedCipherSuite {
        try_handshake(client, server).unwrap()
    }

    /// Runs a TLS handshake in memory: the suite, or the first side's error.
    fn try_handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<rustls::SupportedCipherSuite, rustls::Error> {
        let name = ServerName::try_from(NODE_NAME).unwrap().to_owned();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "the handshake did not finish");
        let suite = c.negotiated_cipher_suite().unwrap();
        assert_eq!(Some(suite), s.negotiated_cipher_suite());
        Ok(suite)
    }

    #[test]
    fn a_removed_node_fails_the_handshake_whichever_side_it_is() {
        let admin = crate::identity::new_mesh("t").unwrap();
        let ca = admin.ca().unwrap();
        let (key_der, csr) = crate::identity::make_csr("b").unwrap();
        let cert_der = crate::identity::sign_csr(&ca, &csr, "b", crate::identity::Role::Member).unwrap();
        let b =
            Identity { id: crate::identity::node_id_of_cert(&cert_der).unwrap(), key_der, cert_der, ..admin.clone() };
        let (none, gone) = (Removed::default(), Removed::of([b.id]));
        assert!(try_handshake(mesh_client_config(&b, &none).unwrap(), server_config(&admin, &none).unwrap()).is_ok());
        let e = try_handshake(mesh_client_config(&b, &none).unwrap(), server_config(&admin, &gone).unwrap());
        assert!(e.as_ref().is_err_and(|e| e.to_string().contains("removed from the mesh")), "{e:?}");
        let e = try_handshake(mesh_client_config(&admin, &gone).unwrap(), server_config(&b, &none).unwrap());
        assert!(e.as_ref().is_err_and(|e| e.to_string().contains("removed from the mesh")), "{e:?}");
        // Removing one node leaves the others alone.
        assert!(
            try_handshake(mesh_client_config(&admin, &gone).unwrap(), server_config(&admin, &gone).unwrap()).is_ok()
        );
    }

    #[test]
    fn two_nodes_settle_on_the_suite_this_cpu_runs_fastest() {
        let ident = crate::identity::new_mesh("t").unwrap();
        let none = Removed::default();
        let got = handshake(mesh_client_config(&ident, &none).unwrap(), server_config(&ident, &none).unwrap());
        let want = if aes_in_hardware() { "TLS13_AES_128_GCM_SHA256" } else { "TLS13_CHACHA20_POLY1305_SHA256" };
        assert_eq!(format!("{:?}", got.suite()), want);
    }

    /// The suite a client and a server settle on, given which of them has AES
    /// instructions.
    fn suite(client_aes: bool, server_aes: bool) -> String {
        let ident = crate::identity::new_mesh("t").unwrap();
        let none = Removed::default();
        let client = mesh_client_with(&ident, &none, provider_with(client_aes)).unwrap();
        format!("{:?}", handshake(client, server_with(&ident, &none, server_aes).unwrap()).suite())
    }

    #[test]
    fn chacha_whenever_one_side_lacks_aes_hardware_and_aes_128_when_both_have_it() {
        const CHACHA: &str = "TLS13_CHACHA20_POLY1305_SHA256";
        assert_eq!(suite(false, true), CHACHA, "client without AES, server with");
        assert_eq!(suite(true, false), CHACHA, "server without AES, client with");
        assert_eq!(suite(false, false), CHACHA);
        assert_eq!(suite(true, true), "TLS13_AES_128_GCM_SHA256");
    }

    #[test]
    fn quic_accepts_either_order() {
        // QUIC protects its initial packets with AES-128-GCM whatever suite follows:
        // quinn refuses a config that does not offer it.
        for aes_hw in [true, false] {
            let cfg = rustls::ClientConfig::builder_with_provider(provider_with(aes_hw))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(JoinServerVerifier { fingerprint: [0; 32] }))
                .with_no_client_auth();
            assert!(quinn::crypto::rustls::QuicClientConfig::try_from(cfg).is_ok(), "aes_hw = {aes_hw}");
        }
    }
}
