//! One authenticated connection to a peer: Hello, index exchange both ways,
//! gossip, and serving chunk requests.

use super::{bench, membership, Node, NodeEvent, Share};
use crate::gossip;
use crate::ids::NodeId;
use crate::index::AddrOrigin;
use crate::net::{NetError, PeerConn};
use crate::proto::{
    self, CodecError, Control, Hello, ShareHello, BENCH_SHARE_PREFIX, MINOR_MEMBERSHIP, PROTOCOL_MINOR,
};
use crate::stats::Counters;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

/// Why a session ended other than by its connection closing.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The connection or a stream failed, or the peer broke the protocol.
    #[error(transparent)]
    Net(#[from] NetError),
    /// This node's index failed while serving the session.
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
}

impl From<quinn::ConnectionError> for SessionError {
    fn from(e: quinn::ConnectionError) -> Self {
        SessionError::Net(e.into())
    }
}

impl From<proto::CodecError> for SessionError {
    fn from(e: proto::CodecError) -> Self {
        SessionError::Net(e.into())
    }
}

/// Runs a session until the connection ends.
pub async fn run(node: Arc<Node>, conn: quinn::Connection, dialed: bool) {
    let Some(peer) = crate::net::peer_node_id(&conn) else {
        warn!(remote = %conn.remote_address(), "refused mesh connection without a certificate");
        conn.close(3u32.into(), b"certificate required");
        return;
    };
    if peer == node.ident.id {
        conn.close(4u32.into(), b"connected to self");
        return;
    }
    if node.index.has_left(&peer.0).unwrap_or(false) {
        conn.close(proto::CLOSE_LEFT.into(), b"this node left the mesh");
        return;
    }
    let span = tracing::info_span!("peer", peer = ?peer, addr = %conn.remote_address());
    async {
        match session(&node, &conn, peer, dialed).await {
            Ok(()) => info!("disconnected"),
            Err(SessionError::Net(NetError::Connection(e))) => info!(reason = %e, "disconnected"),
            // A stream that failed because its connection ended (the peer closed the
            // duplicate of a connection both sides dialed, or went away) reports the
            // connection's reason, not a protocol error.
            Err(e) => match conn.close_reason() {
                Some(reason) => info!(%reason, "disconnected"),
                None => {
                    warn!(error = %e, "session closed on a protocol error");
                    conn.close(5u32.into(), b"protocol error");
                }
            },
        }
        // Counts over the session's life, RTT and MTU as they ended: the figures to
        // read first when a transfer was slower than the link (loss, congestion, a
        // small MTU).
        let st = conn.stats();
        info!(
            rtt_ms = %format_args!("{:.1}", st.path.rtt.as_secs_f64() * 1000.0),
            mtu = st.path.current_mtu,
            sent_packets = st.path.sent_packets,
            lost_packets = st.path.lost_packets,
            congestion_events = st.path.congestion_events,
            sent_mib = st.udp_tx.bytes >> 20,
            datagrams_per_send = %format_args!("{:.1}", st.udp_tx.datagrams as f64 / st.udp_tx.ios.max(1) as f64),
            "path figures"
        );
        node.peers.unregister(&peer, &conn);
        if !node.peers.is_connected(&peer) {
            for share in node.share_list() {
                share.ctx.announced.forget_peer(&peer);
            }
            // Dialed again at once: it may be back already, or this was a duplicate.
            node.dialer().disconnected(peer, node.clock.elapsed());
            node.dial_now.notify_one();
        }
    }
    .instrument(span)
    .await
}

/// What this node tells `peer` of a share; `have` is `None` (send everything) for
/// a peer whose whole index it wants again (see `Share::asks_whole_index`).
fn share_hello(
    node: &Node,
    share: &Share,
    peer: &NodeId,
    whole: &mut HashSet<String>,
) -> Result<ShareHello, crate::index::IndexError> {
    let idx = &share.ctx.index;
    let have = if share.asks_whole_index(peer, node.config.node.tombstone_days)? {
        whole.insert(share.cfg.name.clone());
        None
    } else {
        idx.remote_state(peer)?
    };
    Ok(ShareHello { name: share.cfg.name.clone(), index_id: idx.index_id()?, max_seq: idx.max_seq()?, have })
}

async fn session(node: &Arc<Node>, conn: &quinn::Connection, peer: NodeId, dialed: bool) -> Result<(), SessionError> {
    let (mut send, mut recv) = if dialed {
        conn.open_bi().await?
    } else {
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
            .await
            .map_err(|_| NetError::Protocol("no control stream within 10 s".into()))??
    };
    // Announcements and index updates must not queue behind chunk data.
    let _ = send.set_priority(crate::net::URGENT);
    let mut events = node.events.subscribe();
    let mut announcements = node.announce.subscribe();
    // Shares whose whole index this node asked of the peer.
    let mut whole: HashSet<String> = HashSet::new();
    let shares =
        node.share_list().iter().map(|s| share_hello(node, s, &peer, &mut whole)).collect::<Result<Vec<_>, _>>()?;
    let hello = Hello { minor: PROTOCOL_MINOR, name: node.config.node.name.clone(), addrs: node.advertised(), shares };
    proto::write_frame(&mut send, &hello).await?;
    let theirs: Hello =
        proto::read_frame(&mut recv).await?.ok_or_else(|| NetError::Protocol("closed before Hello".into()))?;
    // What the peer says of itself, and the address its packets come from: with one
    // UDP socket per node, that is where it listens too.
    let mut addrs = theirs.addrs.clone();
    if !addrs.contains(&conn.remote_address()) {
        addrs.push(conn.remote_address());
    }
    node.learn_peer(proto::PeerInfo { id: peer.0, name: theirs.name.clone(), addrs }, AddrOrigin::Itself);
    let registered = node.peers.register(PeerConn {
        id: peer,
        name: theirs.name.clone(),
        addr: conn.remote_address(),
        conn: conn.clone(),
        dialed_by_us: dialed,
    });
    if !registered {
        debug!(dialed, "duplicate connection; keeping the other one");
        conn.close(0u32.into(), b"duplicate connection");
        return Ok(());
    }
    info!(name = %theirs.name, their_minor = theirs.minor, dialed, "connected");
    if node.dialer().connected(peer) == Some(crate::sync::dial::Change::Back) {
        info!(name = %theirs.name, "peer reachable again");
    }
    let theirs_minor = theirs.minor;

    let (tx, mut rx) = mpsc::channel::<Control>(16);
    let mut tasks = tokio::task::JoinSet::new();
    let writer_counters = node.counters.clone();
    tasks.spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Control::Index { entries, .. } | Control::IndexBatch { entries, .. } = &msg {
                Counters::add(&writer_counters.entries_sent, entries.len() as u64);
            }
            if proto::write_frame(&mut send, &msg).await.is_err() {
                break;
            }
        }
    });
    let mut gossip: Vec<proto::PeerInfo> = node.index.peers().unwrap_or_default().into_iter().map(Into::into).collect();
    gossip.push(node.me());
    for piece in gossip.chunks(proto::MAX_GOSSIP_PEERS) {
        let _ = tx.send(Control::Peers(piece.to_vec())).await;
    }

    let mut peer_shares: HashMap<String, ShareHello> = theirs.shares.into_iter().map(|s| (s.name.clone(), s)).collect();
    // Each Hello says afresh which shares the peer has (it may have removed one).
    let now = crate::index::unix_now();
    for share in node.share_list() {
        let takes_part = peer_shares.contains_key(&share.cfg.name);
        share.set_participant(peer, takes_part);
        if takes_part {
            share.ctx.index.note_contact(&peer, now)?;
        }
    }
    // The index sender of each share, stopped when either side removes the share.
    let mut sending: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let start_senders = |peer_shares: &HashMap<String, ShareHello>,
                         sending: &mut HashMap<String, tokio::task::AbortHandle>,
                         tasks: &mut tokio::task::JoinSet<()>| {
        for (name, sh) in peer_shares {
            let Some(share) = node.share(name) else {
                continue;
            };
            if sending.contains_key(name) {
                continue;
            }
            let our_id = share.ctx.index.index_id().unwrap_or(0);
            let start = match sh.have {
                Some((id, seq)) if id == our_id => seq,
                _ => 0,
            };
            let send = gossip::index::send(
                name.clone(),
                share.ctx.index.clone(),
                (peer, theirs_minor, sh.index_id),
                share.seq.subscribe(),
                tx.clone(),
                start,
            );
            let sender = tasks.spawn(send.instrument(tracing::info_span!("share", share = %name)));
            sending.insert(name.clone(), sender);
        }
    };
    start_senders(&peer_shares, &mut sending, &mut tasks);
    // In the peer's span, like everything else of the session: a log line of a
    // served request says whom it served.
    let shares = node.clone();
    let lookup: crate::transfer::serve::ShareLookup = Arc::new(move |name| shares.share(name).map(|s| s.ctx.clone()));
    tasks.spawn(node.server.clone().serve_requests(conn.clone(), peer, lookup).in_current_span());
    // Frames are read in a task of their own: `read_frame` is not cancel-safe, and
    // as a `select!` branch it lost the bytes it had read whenever another branch
    // (a progress map to send) won, desynchronising the stream (seen in the lab as
    // "frame of 942384889 bytes" and a reconnect).
    let (in_tx, mut incoming) = mpsc::channel(16);
    tasks.spawn(async move {
        loop {
            let frame = proto::read_frame::<_, Control>(&mut recv).await;
            let last = !matches!(frame, Ok(Some(_)));
            if in_tx.send(frame).await.is_err() || last {
                break;
            }
        }
    });

    let result = loop {
        tokio::select! {
            _ = node.cancel.cancelled() => break Ok(()),
            event = events.recv() => match event {
                Ok(NodeEvent::ShareAdded(name)) => {
                    if let Some(share) = node.share(&name) {
                        // The peer named it in its Hello already, or will send ShareAdded.
                        share.set_participant(peer, peer_shares.contains_key(&name));
                        let _ = tx.send(Control::ShareAdded(share_hello(node, &share, &peer, &mut whole)?)).await;
                    }
                    start_senders(&peer_shares, &mut sending, &mut tasks);
                }
                Ok(NodeEvent::ShareRemoved(name)) => {
                    if let Some(sender) = sending.remove(&name) {
                        sender.abort();
                    }
                    if theirs_minor >= MINOR_MEMBERSHIP {
                        let _ = tx.send(Control::ShareRemoved { share: name }).await;
                    }
                }
                Ok(NodeEvent::Leaving(ack)) => membership::tell_leaving(conn, peer, theirs_minor, &tx, ack).await,
                Err(_) => {}
            },
            ann = announcements.recv() => {
                match ann {
                    Ok(Control::Have(m))
                        if peer_shares.contains_key(&m.share) || m.share.starts_with(BENCH_SHARE_PREFIX) =>
                    {
                        let _ = tx.send(Control::Have(m)).await;
                    }
                    Ok(m @ (Control::BenchOffer { .. } | Control::BenchEnd { .. } | Control::Peers(_))) => {
                        let _ = tx.send(m).await;
                    }
                    // Maps are periodic and complete: a lagged receiver just waits for the next.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                }
            }
            msg = incoming.recv() => {
                let msg = match msg {
                    Some(Ok(Some(m))) => m,
                    Some(Ok(None)) | None => break Ok(()),
                    // The connection went away (closed, a duplicate dropped, shutdown):
                    // not something the peer sent.
                    Some(Err(CodecError::Io(e))) => {
                        info!(reason = %e, "control stream ended");
                        break Ok(());
                    }
                    Some(Err(e)) => {
                        Counters::add(&node.counters.refused, 1);
                        break Err(SessionError::Net(NetError::from(e)));
                    }
                };
                match msg {
                    Control::Index { share, index_id, entries, upto_seq } => {
                        let batch = gossip::index::Batch { index_id, entries, same: Vec::new(), upto: upto_seq };
                        receive_index(node, peer, &share, batch, (peer_shares.get(&share), &mut whole)).await?;
                    }
                    Control::IndexBatch { share, index_id, entries, same, upto_seq } => {
                        let batch = gossip::index::Batch { index_id, entries, same, upto: upto_seq };
                        receive_index(node, peer, &share, batch, (peer_shares.get(&share), &mut whole)).await?;
                    }
                    Control::Peers(list) if list.len() > proto::MAX_GOSSIP_PEERS => {
                        Counters::add(&node.counters.refused, 1);
                        warn!(peers = list.len(), "refused a peer list longer than {}", proto::MAX_GOSSIP_PEERS);
                    }
                    Control::Peers(list) => {
                        for mut p in list {
                            if p.name.len() > proto::MAX_NAME {
                                Counters::add(&node.counters.refused, 1);
                                continue;
                            }
                            p.addrs.truncate(proto::MAX_PEER_ADDRS);
                            let origin = if p.id == peer.0 { AddrOrigin::Itself } else { AddrOrigin::Gossip };
                            node.learn_peer(p, origin);
                        }
                    }
                    Control::ShareAdded(sh) => {
                        if let Some(share) = node.share(&sh.name) {
                            share.set_participant(peer, true);
                            share.ctx.index.note_contact(&peer, crate::index::unix_now())?;
                        }
                        peer_shares.insert(sh.name.clone(), sh);
                        start_senders(&peer_shares, &mut sending, &mut tasks);
                    }
                    Control::ShareRemoved { share } => {
                        if let Some(share) = node.share(&share) {
                            share.set_participant(peer, false);
                        }
                        peer_shares.remove(&share);
                        if let Some(sender) = sending.remove(&share) {
                            sender.abort();
                        }
                    }
                    Control::Leaving => {
                        membership::on_leaving(node, conn, peer, &theirs.name).await;
                        break Ok(());
                    }
                    Control::BenchOffer { id, entry } => bench::on_offer(node, peer, id, entry, tx.clone()),
                    Control::BenchDone { id, ok } => bench::on_done(node, peer, id, ok),
                    Control::BenchEnd { id } => bench::on_end(node, id),
                    Control::Have(map) => {
                        if let Some(share) = node.share(&map.share) {
                            let path = map.path.clone();
                            if !share.ctx.announced.record(peer, map) {
                                Counters::add(&node.counters.refused, 1);
                                warn!(share = %share.cfg.name, %path, "refused malformed progress map");
                            }
                        }
                    }
                }
            }
        }
    };
    tasks.abort_all();
    result
}

/// Stores a peer's index batch of one share (if this node has the share) and
/// plans its paths again. `theirs` is what the peer said of the share; `whole`
/// the shares whose whole index this node asked of it: once that has all come,
/// this node's re-check after a long absence settles with what the peer knows.
async fn receive_index(
    node: &Node,
    peer: NodeId,
    share: &str,
    batch: gossip::index::Batch,
    (theirs, whole): (Option<&ShareHello>, &mut HashSet<String>),
) -> Result<(), SessionError> {
    let Some(sh) = node.share(share) else { return Ok(()) };
    let upto = batch.upto;
    let paths = gossip::index::receive(sh.ctx.index.clone(), &node.counters, peer, share, batch).await?;
    sh.ctx.index.note_contact(&peer, crate::index::unix_now())?;
    sh.mark_dirty(paths);
    let Some(theirs) = theirs.filter(|t| whole.contains(share) && upto >= t.max_seq) else { return Ok(()) };
    whole.remove(share);
    // What the peer had received of this node's index, if it is of this index.
    let ours = sh.ctx.index.index_id()?;
    if let Some((_, ack)) = theirs.have.filter(|h| h.0 == ours) {
        let s2 = sh.clone();
        tokio::task::spawn_blocking(move || s2.settle_recheck(ack))
            .await
            .map_err(|e| crate::index::IndexError::Task(e.to_string()))??;
    }
    Ok(())
}
