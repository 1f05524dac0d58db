//! Joining a mesh: the inviter's side (a running daemon) and the joiner's side.

use super::Node;
use crate::config::Config;
use crate::home::Home;
use crate::identity::token::{self, JoinToken};
use crate::identity::{csr_node_id, make_csr, sign_csr, Identity, Role};
use crate::ids::NodeId;
use crate::index::{AddrOrigin, Index};
use crate::net;
use crate::net::admit::Place;
use crate::net::gate::{CLOSE_BAD_JOIN_REQUEST, CLOSE_LATE_JOIN_REQUEST};
use crate::proto::{self, CertWant, JoinReply, JoinRequest, JoinRole, PeerInfo};
use crate::stats::Counters;
use anyhow::{anyhow, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Answers one join connection, which holds `_place` (one of the few a stranger may
/// take) until answered: its request must have arrived by `deadline`.
pub async fn serve(node: Arc<Node>, conn: quinn::Connection, deadline: Instant, _place: Place) {
    let remote = conn.remote_address();
    let request = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let req: JoinRequest =
            proto::read_frame(&mut recv).await?.ok_or_else(|| anyhow!("closed before the join request"))?;
        anyhow::Ok((send, req))
    };
    let (mut send, req) = match tokio::time::timeout_at(deadline, request).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            Counters::add(&node.counters.connections_refused, 1);
            warn!(%remote, error = %e, "join connection failed");
            conn.close(CLOSE_BAD_JOIN_REQUEST.into(), b"bad join request");
            return;
        }
        Err(_) => {
            Counters::add(&node.counters.connections_refused, 1);
            debug!(%remote, "join request not received in time");
            conn.close(CLOSE_LATE_JOIN_REQUEST.into(), b"no join request in time");
            return;
        }
    };
    let reply = match accept(&node, &req, remote).await {
        Ok(r) => {
            info!(%remote, name = %req.name, "join accepted");
            r
        }
        Err(reason) => {
            warn!(%remote, name = %req.name, %reason, "join refused");
            JoinReply::Refused(reason)
        }
    };
    let answer = async {
        proto::write_frame(&mut send, &reply).await?;
        let _ = send.finish();
        // Let the joiner read the reply before the connection goes.
        let _ = conn.closed().await;
        anyhow::Ok(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(REPLY_TIME, answer).await {
        warn!(%remote, error = %e, "join reply failed");
    }
}

/// How long a joiner has to take its reply.
const REPLY_TIME: Duration = Duration::from_secs(5);

/// How long a member waits for a session with an admin (it may have just started)
/// before it tells the joiner that no admin is online.
const ADMIN_WAIT: Duration = Duration::from_secs(4);

/// Decides a join: the token first (nothing else the joiner sent is looked at
/// before it checks out), then the request; the certificate is signed here by an
/// admin, or asked of an admin over the mesh by a member. The token is spent only
/// once the certificate exists: a join that waits for an admin can be tried again.
async fn accept(node: &Node, req: &JoinRequest, remote: SocketAddr) -> Result<JoinReply, String> {
    let grant = token::check(&node.home, &req.token_id, &req.secret).map_err(|e| e.to_string())?;
    if req.name.trim().is_empty() || req.name.len() > proto::MAX_NAME {
        return Err(format!("node name must be 1 to {} characters", proto::MAX_NAME));
    }
    let new_id = csr_node_id(&req.csr_der).map_err(|e| format!("bad certificate request: {e}"))?;
    if node.trust.removed.contains(&new_id) {
        return Err("this key was removed from the mesh; join with a fresh key".into());
    }
    let ca = node.ident.ca();
    let cert = match (&ca, grant.role) {
        (Some(ca), role) => sign_csr(ca, &req.csr_der, &req.name, role).map_err(|e| e.to_string())?,
        (None, Role::Admin) => return Err("only an admin can make an admin; this node holds no CA key".into()),
        (None, role) => {
            let role = if role == Role::NoInvite { JoinRole::NoInvite } else { JoinRole::Member };
            let want = CertWant::Join { name: req.name.clone(), role, csr_der: req.csr_der.clone() };
            let cert = node.certs.ask_admins(want, ADMIN_WAIT).await.map_err(|e| {
                let until = time::OffsetDateTime::from_unix_timestamp(grant.expires as i64)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_else(|| format!("Unix time {}", grant.expires));
                format!("{e}; the token was not used and stays valid until {until}: join again when an admin runs")
            })?;
            let got = crate::identity::cert_info(&cert).map_err(|e| e.to_string())?;
            crate::net::tls::verify_node_cert(&node.ident.ca_cert_der, &cert).map_err(|e| e.to_string())?;
            if got.id != new_id {
                return Err("the admin signed a certificate for another key".into());
            }
            cert
        }
    };
    token::spend(&node.home, &req.token_id).map_err(|e| e.to_string())?;
    let peers: Vec<PeerInfo> =
        node.index.peers().unwrap_or_default().into_iter().filter(|p| p.id != new_id.0).map(Into::into).collect();
    // The joiner's word, and the address it came from at the port it listens on
    // (its join connection comes from a throwaway port).
    let mut addrs = req.addrs.clone();
    if let Some(port) = addrs.first().map(|a| a.port()) {
        let seen = SocketAddr::new(remote.ip(), port);
        if !addrs.contains(&seen) {
            addrs.push(seen);
        }
    }
    node.learn_peer(PeerInfo { id: new_id.0, name: req.name.clone(), addrs }, AddrOrigin::Itself);
    info!(name = %req.name, role = grant.role.as_str(), "certificate issued");
    Ok(JoinReply::Accepted {
        node_cert_der: cert,
        ca_cert_der: node.ident.ca_cert_der.clone(),
        ca_key_der: ca.filter(|_| grant.role == Role::Admin).map(|ca| ca.key_der),
        inviter: node.me(),
        peers,
    })
}

/// What a successful join set up.
#[derive(Debug)]
pub struct JoinOutcome {
    /// The new node's id.
    pub id: NodeId,
    /// What it may do.
    pub role: Role,
    /// The inviter's name.
    pub inviter: String,
    /// Peers learned (inviter included).
    pub peers: usize,
}

/// Why a join failed, by cause: each has its own exit status (README, "Exit status").
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// This home already holds a node.
    #[error("{0} already holds a node; use another --home")]
    HomeInUse(String),
    /// The token does not parse.
    #[error(transparent)]
    BadToken(#[from] token::TokenError),
    /// The token names only wildcard addresses (an inviter from before advertised addresses).
    #[error(
        "the token holds no address to reach the inviter at ({0}): the inviter listens on a wildcard address \
             and put it in the token. On the inviter, set `advertise = [\"<its IP>:<port>\"]` in config.toml (or \
             upgrade it), restart it and make a new token with `meshsync invite`"
    )]
    NoAddress(String),
    /// Nothing answered at any of the token's addresses.
    #[error(
        "no answer from the inviter at {0} (UDP) within {JOIN_TIMEOUT_SECS} s: its host is down or unreachable from \
             here, its daemon is not running (`meshsync run`), or a firewall drops UDP to that port"
    )]
    Unreachable(String),
    /// Something answered but the connection failed (another mesh, a broken peer).
    #[error(
        "the inviter at {0} answered but the connection failed: {1} (a node of another mesh answers there, or the \
             token was made for another address)"
    )]
    Handshake(String, String),
    /// The inviter refused the token or the request.
    #[error("the inviter refused to let this node join: {0}")]
    Refused(String),
    /// Writing this node's files failed.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

const JOIN_TIMEOUT_SECS: u64 = 10;

/// Dials every address at once and keeps the first connection that completes: a
/// token lists every address of the inviter, and some may not route from here.
async fn first_connection(fp: [u8; 32], addrs: &[SocketAddr]) -> Result<quinn::Connection, JoinError> {
    let mut dials = tokio::task::JoinSet::new();
    for addr in addrs.iter().copied() {
        dials.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(JOIN_TIMEOUT_SECS), net::connect_join(fp, addr)).await;
            (addr, r)
        });
    }
    let mut answered = None;
    while let Some(done) = dials.join_next().await {
        match done {
            Ok((_, Ok(Ok(conn)))) => return Ok(conn),
            Ok((addr, Ok(Err(e)))) => {
                answered.get_or_insert((addr, e.to_string()));
            }
            Ok((_, Err(_))) | Err(_) => {}
        }
    }
    let list = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    Err(match answered {
        Some((addr, e)) => JoinError::Handshake(addr.to_string(), e),
        None => JoinError::Unreachable(list),
    })
}

async fn ask(conn: &quinn::Connection, req: &JoinRequest) -> anyhow::Result<JoinReply> {
    let (mut send, mut recv) = conn.open_bi().await?;
    proto::write_frame(&mut send, req).await?;
    let _ = send.finish();
    let reply: JoinReply =
        proto::read_frame(&mut recv).await?.ok_or_else(|| anyhow!("inviter closed the connection"))?;
    conn.close(0u32.into(), b"done");
    Ok(reply)
}

/// Joins the mesh of a token: contacts the inviter, and on success writes this
/// node's identity, config and peer list into `home`. Writes nothing on failure.
pub async fn join(
    home: &Home,
    token_text: &str,
    name: &str,
    listen: SocketAddr,
    advertise: &[SocketAddr],
) -> Result<JoinOutcome, JoinError> {
    if home.config().exists() {
        return Err(JoinError::HomeInUse(home.dir().display().to_string()));
    }
    let token = JoinToken::decode(token_text)?;
    let reachable: Vec<SocketAddr> = token.addrs.iter().copied().filter(net::addrs::dialable).collect();
    if reachable.is_empty() {
        let list = token.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        return Err(JoinError::NoAddress(if list.is_empty() { "none".into() } else { list }));
    }
    let (key_der, csr_der) = make_csr(name).map_err(|e| JoinError::Local(e.into()))?;
    let req = JoinRequest {
        token_id: token.token_id,
        secret: token.secret,
        name: name.to_string(),
        addrs: net::addrs::advertised(listen, advertise),
        csr_der,
    };
    let conn = first_connection(token.ca_fingerprint, &reachable).await?;
    let inviter_addr = conn.remote_address();
    let reply = tokio::time::timeout(Duration::from_secs(JOIN_TIMEOUT_SECS), ask(&conn, &req))
        .await
        .map_err(|_| JoinError::Handshake(inviter_addr.to_string(), "no reply to the join request".into()))?
        .map_err(|e| JoinError::Handshake(inviter_addr.to_string(), format!("{e:#}")))?;
    let (node_cert_der, ca_cert_der, ca_key_der, inviter, peers) = match reply {
        JoinReply::Refused(why) => return Err(JoinError::Refused(why)),
        JoinReply::Accepted { node_cert_der, ca_cert_der, ca_key_der, inviter, peers } => {
            (node_cert_der, ca_cert_der, ca_key_der, inviter, peers)
        }
    };
    if blake3::hash(&ca_cert_der).as_bytes() != &token.ca_fingerprint {
        return Err(JoinError::Handshake(
            inviter_addr.to_string(),
            "the inviter sent a CA certificate that does not match the token".into(),
        ));
    }
    let id = crate::identity::node_id_of_cert(&node_cert_der).map_err(|e| {
        JoinError::Handshake(inviter_addr.to_string(), format!("the inviter sent a bad certificate: {e}"))
    })?;
    let ident = Identity { id, key_der, cert_der: node_cert_der, ca_cert_der, ca_key_der };
    // The address that answered is one the inviter surely listens on.
    let mut inviter = inviter;
    inviter.addrs.retain(net::addrs::dialable);
    if !inviter.addrs.contains(&inviter_addr) {
        inviter.addrs.insert(0, inviter_addr);
    }
    let config = Config::initial_text(name, listen, advertise);
    write_joined(home, ident, &config, inviter, peers).map_err(JoinError::Local)
}

/// Writes what a successful join brought: identity, peers, config.
fn write_joined(
    home: &Home,
    ident: Identity,
    config: &str,
    inviter: PeerInfo,
    peers: Vec<PeerInfo>,
) -> anyhow::Result<JoinOutcome> {
    let id = ident.id;
    let role = ident.role()?;
    std::fs::create_dir_all(home.dir()).with_context(|| format!("creating {}", home.dir().display()))?;
    ident.save(home)?;
    let index = Index::open(&home.index())?;
    let count = peers.len() + 1;
    let inviter_name = inviter.name.clone();
    index.put_peer(&inviter.into())?;
    for p in peers.iter().filter(|p| p.id != id.0) {
        index.put_peer(&p.clone().into())?;
    }
    index.flush()?;
    crate::home::write_atomic(&home.config(), config.as_bytes(), 0o644)?;
    Ok(JoinOutcome { id, role, inviter: inviter_name, peers: count })
}
