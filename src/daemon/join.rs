//! Joining a mesh: the inviter's side (a running daemon) and the joiner's side.

use super::Node;
use crate::config::Config;
use crate::home::Home;
use crate::identity::token::{self, InviteRight, JoinToken};
use crate::identity::{make_csr, sign_csr, Identity, NodeId};
use crate::index::Index;
use crate::net;
use crate::proto::{self, JoinReply, JoinRequest, PeerInfo};
use anyhow::{anyhow, bail, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Answers one join connection.
pub async fn serve(node: Arc<Node>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let r = async {
        let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await??;
        let req: JoinRequest =
            proto::read_frame(&mut recv).await?.ok_or_else(|| anyhow!("closed before the join request"))?;
        let reply = match accept(&node, &req) {
            Ok(r) => {
                info!(%remote, name = %req.name, "join accepted");
                r
            }
            Err(reason) => {
                warn!(%remote, name = %req.name, %reason, "join refused");
                JoinReply::Refused(reason)
            }
        };
        proto::write_frame(&mut send, &reply).await?;
        let _ = send.finish();
        // Let the joiner read the reply before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        anyhow::Ok(())
    };
    if let Err(e) = r.await {
        warn!(%remote, error = %e, "join connection failed");
    }
}

fn accept(node: &Node, req: &JoinRequest) -> Result<JoinReply, String> {
    let ca = node.ident.ca().ok_or("this node has no CA key (it joined with --no-invite) and cannot invite")?;
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err("node name must be 1 to 128 characters".into());
    }
    // Check the request before spending the token.
    let cert = sign_csr(&ca, &req.csr_der, &req.name).map_err(|e| format!("bad certificate request: {e}"))?;
    let new_id = NodeId::from_cert_der(&cert).map_err(|e| e.to_string())?;
    let right = token::redeem(&node.home, &req.token_id, &req.secret).map_err(|e| e.to_string())?;
    let peers: Vec<PeerInfo> =
        node.index.peers().unwrap_or_default().into_iter().filter(|p| p.id != new_id.0).collect();
    node.learn_peer(PeerInfo { id: new_id.0, name: req.name.clone(), addrs: req.addrs.clone() });
    Ok(JoinReply::Accepted {
        node_cert_der: cert,
        ca_cert_der: node.ident.ca_cert_der.clone(),
        ca_key_der: (right == InviteRight::CanInvite).then(|| ca.key_der.clone()),
        inviter: node.me(),
        peers,
    })
}

/// What a successful join set up.
#[derive(Debug)]
pub struct JoinOutcome {
    /// The new node's id.
    pub id: NodeId,
    /// The inviter's name.
    pub inviter: String,
    /// Peers learned (inviter included).
    pub peers: usize,
}

async fn ask(fp: [u8; 32], addr: SocketAddr, req: &JoinRequest) -> anyhow::Result<JoinReply> {
    let conn = net::connect_join(fp, addr).await?;
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
pub async fn join(home: &Home, token_text: &str, name: &str, listen: SocketAddr) -> anyhow::Result<JoinOutcome> {
    if home.config().exists() {
        bail!("{} already holds a node; use another --home", home.dir().display());
    }
    let token = JoinToken::decode(token_text)?;
    let (key_der, csr_der) = make_csr(name)?;
    let req = JoinRequest {
        token_id: token.token_id,
        secret: token.secret,
        name: name.to_string(),
        addrs: vec![listen],
        csr_der,
    };
    let mut errors = Vec::new();
    let mut reply = None;
    for addr in &token.addrs {
        match tokio::time::timeout(Duration::from_secs(10), ask(token.ca_fingerprint, *addr, &req)).await {
            Ok(Ok(r)) => {
                reply = Some(r);
                break;
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e:#}")),
            Err(_) => errors.push(format!("{addr}: no answer within 10 s")),
        }
    }
    let Some(reply) = reply else {
        bail!("inviter unreachable ({}); is its daemon running (`meshsync run`)?", errors.join("; "));
    };
    let (node_cert_der, ca_cert_der, ca_key_der, inviter, peers) = match reply {
        JoinReply::Refused(why) => bail!("the inviter refused to let this node join: {why}"),
        JoinReply::Accepted { node_cert_der, ca_cert_der, ca_key_der, inviter, peers } => {
            (node_cert_der, ca_cert_der, ca_key_der, inviter, peers)
        }
    };
    if blake3::hash(&ca_cert_der).as_bytes() != &token.ca_fingerprint {
        bail!("the inviter sent a CA certificate that does not match the token");
    }
    let id = NodeId::from_cert_der(&node_cert_der)?;
    std::fs::create_dir_all(home.dir()).with_context(|| format!("creating {}", home.dir().display()))?;
    Identity { id, key_der, cert_der: node_cert_der, ca_cert_der, ca_key_der }.save(home)?;
    let index = Index::open(&home.index())?;
    let count = peers.len() + 1;
    let inviter_name = inviter.name.clone();
    index.put_peer(&inviter)?;
    for p in peers.iter().filter(|p| p.id != id.0) {
        index.put_peer(p)?;
    }
    index.flush()?;
    crate::home::write_atomic(&home.config(), Config::initial_text(name, listen).as_bytes(), 0o644)?;
    Ok(JoinOutcome { id, inviter: inviter_name, peers: count })
}
