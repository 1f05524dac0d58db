//! One authenticated connection to a peer: Hello, index exchange both ways,
//! gossip, and serving chunk requests.

use super::exchange::{self, Exchange};
use super::{bench, certs, membership, Node, NodeEvent};
use crate::gossip;
use crate::identity::{cert_info, Role};
use crate::ids::NodeId;
use crate::index::AddrOrigin;
use crate::net::budget::PeerBudget;
use crate::net::{NetError, PeerConn};
use crate::proto::{
    self, CodecError, Control, Hello, BENCH_SHARE_PREFIX, MINOR_MEMBERSHIP, MINOR_TRUST, PROTOCOL_MINOR,
};
use crate::stats::Counters;
use crate::transfer::serve::ShareAccess;
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
    // The handshake refuses removed nodes; this catches one removed while its
    // handshake was under way.
    if node.trust.removed.contains(&peer) {
        conn.close(6u32.into(), b"removed from the mesh");
        return;
    }
    if node.index.has_left(&peer.0).unwrap_or(false) {
        conn.close(proto::CLOSE_LEFT.into(), b"this node left the mesh");
        return;
    }
    crate::net::trust(&conn);
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
            ack_frames = st.frame_tx.acks,
            lost_packets = st.path.lost_packets,
            congestion_events = st.path.congestion_events,
            sent_mib = st.udp_tx.bytes >> 20,
            datagrams_per_send = %format_args!("{:.1}", st.udp_tx.datagrams as f64 / st.udp_tx.ios.max(1) as f64),
            "path figures"
        );
        node.peers.unregister(&peer, &conn);
        node.certs.unlink(&peer, conn.stable_id());
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
    // Records on a channel of their own: the busy one of progress maps may lag.
    let mut records = node.trust.events.subscribe();
    // A share the peer is not a member of is not named to it.
    // `whole`: the shares whose whole index this node asks of the peer (deletes it
    // may have forgotten while this node was away, see `Share::asks_whole_index`).
    let mut whole = std::collections::HashSet::new();
    let shares = exchange::hello_shares(node, &peer, &mut whole)?;
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
    let trust = theirs_minor >= MINOR_TRUST;
    let peer_cert = crate::net::peer_cert(conn);
    let peer_role = peer_cert.as_deref().and_then(|c| cert_info(c).ok()).map_or(Role::Member, |i| i.role);

    let (tx, mut rx) = mpsc::channel::<Control>(16);
    let mut tasks = tokio::task::JoinSet::new();
    let writer_node = node.clone();
    tasks.spawn(async move {
        while let Some(msg) = rx.recv().await {
            // The one place every frame passes: nothing of a share the peer is not
            // a member of goes out, whatever raced with a membership change.
            if !exchange::may_send(&writer_node, &peer, &msg) {
                continue;
            }
            let index_entries = match &msg {
                Control::Index { entries, .. }
                | Control::IndexBatch { entries, .. }
                | Control::EntriesReply { entries, .. } => Some(entries.len() as u64),
                Control::IndexDelta { entries, deltas, .. } => Some((entries.len() + deltas.len()) as u64),
                _ => None,
            };
            match proto::write_frame_sized(&mut send, &msg).await {
                Ok(bytes) => {
                    if let Some(n) = index_entries {
                        let c = &writer_node.counters;
                        Counters::add(&c.entries_sent, n);
                        Counters::add(&c.index_batches_sent, 1);
                        Counters::add(&c.index_bytes_sent, bytes as u64);
                    }
                }
                // Not sent, as the peer would refuse it; the session goes on.
                Err(e @ CodecError::TooLarge { .. }) => warn!(error = %e, "message not sent"),
                Err(_) => break,
            }
        }
    });
    if trust {
        // Removals and membership first: a node that was offline acts on them
        // before anything else arrives.
        for record in node.records_for(&peer, peer_role == Role::Admin) {
            let _ = tx.send(record).await;
        }
        node.certs.link(peer, certs::Link { role: peer_role, conn: conn.stable_id(), tx: tx.clone() });
    }
    let mut gossip: Vec<proto::PeerInfo> = node.index.peers().unwrap_or_default().into_iter().map(Into::into).collect();
    gossip.push(node.me());
    for piece in gossip.chunks(proto::MAX_GOSSIP_PEERS) {
        let _ = tx.send(Control::Peers(piece.to_vec())).await;
    }

    let mut shares = Exchange::new(node.clone(), peer, theirs_minor, tx.clone(), theirs.shares, whole)?;
    shares.start_senders(&mut tasks);
    shares.ask_all_wanted().await?;
    // In the peer's span, like everything else of the session: a log line of a
    // served request says whom it served.
    let lookup_node = node.clone();
    let lookup: crate::transfer::serve::ShareLookup = Arc::new(move |name| match lookup_node.share(name) {
        None => ShareAccess::Unknown,
        Some(_) if !lookup_node.admits(name, &peer) => ShareAccess::Refused,
        Some(s) => ShareAccess::Serve(s.ctx.clone()),
    });
    // Everything this node holds for the peer's messages is charged to one budget.
    let budget = PeerBudget::default();
    tasks.spawn(
        node.server
            .clone()
            .serve_requests(conn.clone(), (peer, theirs_minor), budget.clone(), lookup)
            .in_current_span(),
    );
    // Frames are read in a task of their own: `read_frame` is not cancel-safe, and
    // as a `select!` branch it lost the bytes it had read whenever another branch
    // (a progress map to send) won, desynchronising the stream (seen in the lab as
    // "frame of 942384889 bytes" and a reconnect).
    let (in_tx, mut incoming) = mpsc::channel(1);
    tasks.spawn(crate::net::budget::read_frames::<_, Control>(recv, budget, node.control_memory.clone(), in_tx));

    let result = loop {
        tokio::select! {
            _ = node.cancel.cancelled() => break Ok(()),
            event = events.recv() => match event {
                Ok(NodeEvent::ShareAdded(name)) => shares.we_added(&name, &mut tasks).await?,
                Ok(NodeEvent::ShareRemoved(name)) => {
                    shares.we_removed(&name);
                    if theirs_minor >= MINOR_MEMBERSHIP {
                        let _ = tx.send(Control::ShareRemoved { share: name }).await;
                    }
                }
                Ok(NodeEvent::Leaving(ack)) => membership::tell_leaving(conn, peer, theirs_minor, &tx, ack).await,
                Err(_) => {}
            },
            rec = records.recv() => {
                use tokio::sync::broadcast::error::RecvError;
                match rec {
                    Ok(Control::Removed(r)) if r.node == peer.0 => {
                        conn.close(6u32.into(), b"removed from the mesh");
                        break Ok(());
                    }
                    Ok(m @ Control::Removed(_)) if trust => {
                        let _ = tx.send(m).await;
                    }
                    Ok(Control::Members(m)) => {
                        // Checked when it was taken in. It goes to the share's members,
                        // to admins, and to a peer that was exchanging the share until
                        // now (so it stops waiting for it): never to one that did not
                        // know of the share.
                        let name = m.share.clone();
                        let member = node.trust.members_of(&name).is_none_or(|r| r.admits(&peer));
                        if trust && (member || peer_role == Role::Admin || shares.takes_part(&name)) {
                            let _ = tx.send(Control::Members(m)).await;
                        }
                        shares.reconsider(&name, &mut tasks).await?;
                    }
                    // Missed records: everything again (the peer drops what it holds).
                    Err(RecvError::Lagged(_)) => {
                        let again = if trust { node.records_for(&peer, peer_role == Role::Admin) } else { Vec::new() };
                        for record in again {
                            let _ = tx.send(record).await;
                        }
                        for share in node.share_list() {
                            shares.reconsider(&share.cfg.name, &mut tasks).await?;
                        }
                    }
                    Ok(_) | Err(RecvError::Closed) => {}
                }
            }
            ann = announcements.recv() => {
                match ann {
                    Ok(Control::Have(m)) if shares.takes_part(&m.share) || m.share.starts_with(BENCH_SHARE_PREFIX) => {
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
                // The charge is held until the message is dealt with, and the next
                // frame is read only then.
                let (msg, _charge, wire_len) = match msg {
                    Some(Ok(Some(m))) => {
                        let len = m.wire_len() as u64;
                        let (msg, charge) = m.into_parts();
                        (msg, charge, len)
                    }
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
                if matches!(
                    msg,
                    Control::Index { .. }
                        | Control::IndexBatch { .. }
                        | Control::IndexDelta { .. }
                        | Control::EntriesReply { .. }
                ) {
                    Counters::add(&node.counters.index_batches_received, 1);
                    Counters::add(&node.counters.index_bytes_received, wire_len);
                }
                match msg {
                    Control::Index { share, index_id, entries, upto_seq } => {
                        let batch =
                            gossip::index::Batch { index_id, entries, same: Vec::new(), deltas: Vec::new(), upto: upto_seq };
                        receive_index(node, peer, &share, batch).await?;
                        shares.received(&share, upto_seq).await?;
                    }
                    Control::IndexBatch { share, index_id, entries, same, upto_seq } => {
                        let batch = gossip::index::Batch { index_id, entries, same, deltas: Vec::new(), upto: upto_seq };
                        receive_index(node, peer, &share, batch).await?;
                        shares.received(&share, upto_seq).await?;
                    }
                    Control::IndexDelta { share, index_id, entries, same, deltas, upto_seq } => {
                        let batch = gossip::index::Batch { index_id, entries, same, deltas, upto: upto_seq };
                        if receive_index(node, peer, &share, batch).await? {
                            shares.ask_wanted(&share).await?;
                        }
                        shares.received(&share, upto_seq).await?;
                    }
                    Control::EntriesWanted { share, index_id, paths } => {
                        if !shares.answer_wanted(&share, index_id, paths).await? {
                            Counters::add(&node.counters.refused, 1);
                            debug!(share, "refused an ask for entries of a share not exchanged, or of too many");
                        }
                    }
                    Control::EntriesReply { share, index_id, entries, absent } => {
                        if receive_answer(node, peer, &share, (index_id, entries, absent)).await? {
                            shares.ask_wanted(&share).await?;
                        }
                    }
                    Control::Removed(r) => {
                        if let Err(e) = node.take_removal(r).await {
                            Counters::add(&node.counters.refused, 1);
                            warn!(error = %e, "refused a removal record");
                        }
                    }
                    Control::Members(m) => {
                        if let Err(e) = node.take_members(m) {
                            Counters::add(&node.counters.refused, 1);
                            warn!(error = %e, "refused a share membership record");
                        }
                    }
                    Control::CertRequest { id, want } => {
                        let reply = node.answer_cert(peer, peer_cert.as_deref(), want);
                        let _ = tx.send(Control::CertReply { id, reply }).await;
                    }
                    Control::CertReply { id, reply } => node.certs.answered(peer, id, reply),
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
                        if !shares.peer_added(sh, &mut tasks) {
                            debug!("the peer takes part in a share it is not a member of; not exchanged");
                        }
                    }
                    Control::ShareRemoved { share } => shares.peer_removed(&share),
                    Control::Leaving => {
                        membership::on_leaving(node, conn, peer, &theirs.name).await;
                        break Ok(());
                    }
                    Control::BenchOffer { id, entry } => bench::on_offer(node, peer, id, entry, tx.clone()),
                    Control::BenchDone { id, ok } => bench::on_done(node, peer, id, ok),
                    Control::BenchEnd { id } => bench::on_end(node, id),
                    Control::Have(map) if !node.admits(&map.share, &peer) => {
                        Counters::add(&node.counters.refused, 1);
                    }
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

/// This node's `share`, if it has it and the peer is a member of it; index
/// messages of a share the peer is not a member of are refused (counted).
fn admitted(node: &Node, peer: NodeId, share: &str) -> Option<Arc<super::Share>> {
    let sh = node.share(share)?;
    if !node.admits(share, &peer) {
        Counters::add(&node.counters.refused, 1);
        debug!(share, "refused index entries of a share the peer is not a member of");
        return None;
    }
    Some(sh)
}

/// Stores a peer's index batch of one share (if this node has the share and the
/// peer is a member of it) and plans its paths again. True if entries are now
/// wanted whole (deltas this node could not read).
async fn receive_index(
    node: &Node,
    peer: NodeId,
    share: &str,
    batch: gossip::index::Batch,
) -> Result<bool, SessionError> {
    let Some(sh) = admitted(node, peer, share) else { return Ok(false) };
    debug!(
        share,
        entries = batch.entries.len(),
        deltas = batch.deltas.len(),
        upto = batch.upto,
        "index batch received"
    );
    let got = gossip::index::receive(sh.ctx.index.clone(), &node.counters, peer, share, batch).await?;
    sh.ctx.index.note_contact(&peer, crate::index::unix_now())?;
    sh.mark_dirty(got.paths);
    Ok(got.wanted)
}

/// Stores a peer's answer to this node's ask for entries whole, like
/// [`receive_index`]. True if the rest is to be asked for.
async fn receive_answer(
    node: &Node,
    peer: NodeId,
    share: &str,
    answer: (u64, Vec<proto::WireEntry>, Vec<crate::relpath::RelPath>),
) -> Result<bool, SessionError> {
    let Some(sh) = admitted(node, peer, share) else { return Ok(false) };
    let got = gossip::index::receive_answer(sh.ctx.index.clone(), &node.counters, peer, share, answer).await?;
    sh.mark_dirty(got.paths);
    Ok(got.wanted)
}
