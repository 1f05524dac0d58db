//! Certificates over the mesh. An admin signs for its peers: a node joining
//! through a member (the member asks, the joiner's request inside), and renewals.
//! A member asks its connected admins; while none is online the mesh keeps
//! syncing and only joins (and renewals) wait. Every node renews its own
//! certificate before it runs out (`identity::renewal_due`).

use super::Node;
use crate::identity::{cert_info, csr_node_id, now_secs, renewal_due, sign_csr, Identity, Role};
use crate::ids::NodeId;
use crate::proto::{CertReply, CertWant, Control, JoinRole, MAX_NAME, MAX_TRUST_BLOB};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

/// How long one admin has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How often the renewal check runs without a reason to run sooner.
const RENEW_CHECK: Duration = Duration::from_secs(3600);
/// After admins answered without a certificate, when to ask again at the earliest.
const RENEW_RETRY: Duration = Duration::from_secs(600);
const DAY: i64 = 86_400;

/// A session that can carry certificate requests.
#[derive(Clone)]
pub(crate) struct Link {
    /// The peer's role, from its certificate.
    pub(crate) role: Role,
    /// The connection's id: a newer session replaces an older one.
    pub(crate) conn: usize,
    /// The session's control stream.
    pub(crate) tx: mpsc::Sender<Control>,
}

/// Certificate requests in and out, and this node's own certificate.
pub(crate) struct Certs {
    links: Mutex<HashMap<NodeId, Link>>,
    waiting: Mutex<HashMap<u64, (NodeId, oneshot::Sender<CertReply>)>>,
    next_id: AtomicU64,
    /// This node's certificate now (renewals replace it).
    cert: RwLock<Vec<u8>>,
    /// Wakes the renewal check (a session that may reach an admin opened).
    renew_now: Notify,
}

/// Why no admin signed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AskError {
    /// No admin answered: none is online (connected to this node).
    #[error(
        "no admin of the mesh is online to sign the certificate (a member asks an admin, a node holding the \
         mesh CA key); the mesh keeps syncing meanwhile"
    )]
    NoAdmin,
    /// Admins answered, without a certificate.
    #[error("refused by the admin: {0}")]
    Refused(String),
}

impl Certs {
    /// No sessions yet; `cert_der` is this node's certificate.
    pub(crate) fn new(cert_der: Vec<u8>) -> Self {
        Self {
            links: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            cert: RwLock::new(cert_der),
            renew_now: Notify::new(),
        }
    }

    /// Unix seconds after which this node's certificate is no longer valid.
    pub(crate) fn not_after(&self) -> i64 {
        cert_info(&self.cert.read().unwrap_or_else(|e| e.into_inner())).map_or(0, |i| i.not_after)
    }

    /// A session of protocol minor 2 or later started: it can carry requests.
    pub(crate) fn link(&self, peer: NodeId, link: Link) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, link);
        self.renew_now.notify_one();
    }

    /// The session on connection `conn` ended.
    pub(crate) fn unlink(&self, peer: &NodeId, conn: usize) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(peer).is_some_and(|l| l.conn == conn) {
            links.remove(peer);
        }
    }

    /// An answer came: handed to the request waiting for it, if `from` is the node asked.
    pub(crate) fn answered(&self, from: NodeId, id: u64, reply: CertReply) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.get(&id).is_some_and(|(asked, _)| *asked == from) {
            if let Some((_, tx)) = waiting.remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Linked peers not asked yet, admins first.
    fn candidates(&self, asked: &HashSet<NodeId>) -> Vec<(NodeId, Link)> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let mut c: Vec<(NodeId, Link)> =
            links.iter().filter(|(id, _)| !asked.contains(id)).map(|(id, l)| (*id, l.clone())).collect();
        c.sort_by_key(|(_, l)| l.role != Role::Admin);
        c
    }

    async fn ask_one(&self, peer: NodeId, link: &Link, want: CertWant) -> Option<CertReply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (peer, tx));
        let answer = async {
            link.tx.send(Control::CertRequest { id, want }).await.ok()?;
            tokio::time::timeout(ANSWER_WITHIN, rx).await.ok()?.ok()
        }
        .await;
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        answer
    }

    /// Asks connected peers, admins first, to sign `want` until one does; waits up
    /// to `wait_for_admin` for a first session (this node may have just started).
    pub(crate) async fn ask_admins(&self, want: CertWant, wait_for_admin: Duration) -> Result<Vec<u8>, AskError> {
        let until = Instant::now() + wait_for_admin;
        let mut asked = HashSet::new();
        let mut refusals = Vec::new();
        loop {
            for (peer, link) in self.candidates(&asked) {
                asked.insert(peer);
                match self.ask_one(peer, &link, want.clone()).await {
                    Some(CertReply::Signed(der)) => return Ok(der),
                    Some(CertReply::Refused(why)) => refusals.push(why),
                    Some(CertReply::NotAdmin) | None => {}
                }
            }
            if !refusals.is_empty() {
                return Err(AskError::Refused(refusals.join("; ")));
            }
            if Instant::now() >= until {
                return Err(AskError::NoAdmin);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Node {
    /// An admin's answer to a peer's certificate request. `peer_cert` is the
    /// certificate the peer proved in this connection's handshake.
    pub(crate) fn answer_cert(&self, peer: NodeId, peer_cert: Option<&[u8]>, want: CertWant) -> CertReply {
        let Some(ca) = self.ident.ca() else { return CertReply::NotAdmin };
        let refuse = |why: String| {
            warn!(peer = ?peer, %why, "refused to sign a certificate");
            CertReply::Refused(why)
        };
        let Some((cert, asker)) = peer_cert.and_then(|c| Some((c, cert_info(c).ok()?))) else {
            return refuse("the asking node's certificate cannot be read".into());
        };
        if self.trust.removed.contains(&peer) {
            return refuse(format!("{} was removed from the mesh", asker.name));
        }
        let signed = match want {
            CertWant::Join { name, role, csr_der } => {
                if !asker.role.may_invite() {
                    return refuse(format!("{} was invited with --no-invite and may not invite", asker.name));
                }
                if name.trim().is_empty() || name.len() > MAX_NAME || csr_der.len() > MAX_TRUST_BLOB {
                    return refuse(format!("node name must be 1 to {MAX_NAME} characters"));
                }
                match csr_node_id(&csr_der) {
                    Ok(id) if self.trust.removed.contains(&id) => {
                        return refuse("that key was removed from the mesh".into());
                    }
                    Ok(_) => {}
                    Err(e) => return refuse(format!("bad certificate request: {e}")),
                }
                let role = match role {
                    JoinRole::Member => Role::Member,
                    JoinRole::NoInvite => Role::NoInvite,
                };
                info!(%name, role = role.as_str(), invited_by = %asker.name, "signing a certificate for a node joining through a member");
                sign_csr(&ca, &csr_der, &name, role)
            }
            CertWant::Renew => {
                info!(name = %asker.name, "renewing a peer's certificate");
                ca.renew(cert)
            }
        };
        match signed {
            Ok(der) => CertReply::Signed(der),
            Err(e) => refuse(format!("signing failed: {e}")),
        }
    }

    /// A new certificate for this node's key, from its own CA key or from an
    /// admin, checked and put to use (files, and the endpoint's next handshakes).
    async fn renew(&self) -> anyhow::Result<i64> {
        let current = self.certs.cert.read().unwrap_or_else(|e| e.into_inner()).clone();
        let new = match self.ident.ca() {
            Some(ca) => ca.renew(&current)?,
            None => self.certs.ask_admins(CertWant::Renew, Duration::ZERO).await?,
        };
        crate::net::tls::verify_node_cert(&self.ident.ca_cert_der, &new)?;
        let info = cert_info(&new)?;
        anyhow::ensure!(info.id == self.ident.id, "the admin sent a certificate for another key");
        let ident = Identity { cert_der: new.clone(), ..self.ident.clone() };
        ident.save_cert(&self.home)?;
        self.net.set_identity(&ident)?;
        *self.certs.cert.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(info.not_after)
    }
}

/// Renews this node's certificate when it is due: checked at start, hourly, and
/// whenever a session opens (an admin may be reachable now).
pub(super) async fn renew_loop(node: Arc<Node>) {
    let mut backoff_until: Option<Instant> = None;
    loop {
        let not_after = node.certs.not_after();
        let now = now_secs();
        if renewal_due(not_after, now) && backoff_until.is_none_or(|t| Instant::now() >= t) {
            match node.renew().await {
                Ok(until) => {
                    info!(valid_days = (until - now) / DAY, "certificate renewed");
                    backoff_until = None;
                }
                Err(e) => {
                    let days = (not_after - now) / DAY;
                    if e.downcast_ref::<AskError>().is_some_and(|a| matches!(a, AskError::NoAdmin)) {
                        // Asked nobody: any session that opens may reach an admin.
                        backoff_until = None;
                    } else {
                        backoff_until = Some(Instant::now() + RENEW_RETRY);
                    }
                    if not_after <= now {
                        warn!(error = %format!("{e:#}"), "this node's certificate has expired and peers refuse it: \
                              join the mesh again with a new invite");
                    } else if days < 7 {
                        warn!(days_left = days, error = %format!("{e:#}"), "certificate not renewed yet; an admin must be online before it runs out");
                    } else {
                        info!(days_left = days, error = %format!("{e:#}"), "certificate not renewed yet; trying again when an admin is online");
                    }
                }
            }
        }
        tokio::select! {
            _ = node.cancel.cancelled() => return,
            _ = node.certs.renew_now.notified() => {}
            _ = tokio::time::sleep(RENEW_CHECK) => {}
        }
    }
}
