//! Which shares one session exchanges with its peer, and the index sender of each.
//! A share is exchanged when both nodes take part in it and an admin's membership
//! record (if any) admits both: a peer outside a share's members is not told it
//! exists, gets none of its index, and what it sends of it is refused. A record
//! that changes while connected starts or stops the exchange at once.

use super::{Node, Share};
use crate::gossip;
use crate::ids::NodeId;
use crate::index::IndexError;
use crate::proto::{Control, ShareHello, MAX_BATCH_ENTRIES, MINOR_DELTA};
use crate::relpath::RelPath;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

/// Where this node stands with `share` for `peer`, as sent in Hello and ShareAdded;
/// `have` is `None` (send everything) for a peer whose whole index this node wants
/// again (see `Share::asks_whole_index`), and the share goes into `whole`.
pub(super) fn share_hello(
    node: &Node,
    share: &Share,
    peer: &NodeId,
    whole: &mut HashSet<String>,
) -> Result<ShareHello, IndexError> {
    let idx = &share.ctx.index;
    let have = if share.asks_whole_index(peer, node.config.node.tombstone_days)? {
        whole.insert(share.cfg.name.clone());
        None
    } else {
        idx.remote_state(peer)?
    };
    Ok(ShareHello { name: share.cfg.name.clone(), index_id: idx.index_id()?, max_seq: idx.max_seq()?, have })
}

/// The shares this node tells `peer` of in its Hello: those the peer is admitted to.
pub(super) fn hello_shares(
    node: &Node,
    peer: &NodeId,
    whole: &mut HashSet<String>,
) -> Result<Vec<ShareHello>, IndexError> {
    let list = node.share_list();
    list.iter().filter(|s| node.admits(&s.cfg.name, peer)).map(|s| share_hello(node, s, peer, whole)).collect()
}

/// One session's share exchange.
pub(super) struct Exchange {
    node: Arc<Node>,
    peer: NodeId,
    minor: u32,
    tx: mpsc::Sender<Control>,
    /// What the peer said of the shares it takes part in (Hello, ShareAdded), for
    /// those it is admitted to.
    theirs: HashMap<String, ShareHello>,
    /// What it said of shares it is not admitted to: used if an admin admits it.
    held: HashMap<String, ShareHello>,
    /// Index senders running, by share.
    sending: HashMap<String, AbortHandle>,
    /// Shares this node holds that the peer is not admitted to, as last decided.
    excluded: HashSet<String>,
    /// Shares whose whole index this node asked of the peer, until it has come.
    whole: HashSet<String>,
}

impl Exchange {
    /// Starts from the peer's Hello.
    pub(super) fn new(
        node: Arc<Node>,
        peer: NodeId,
        minor: u32,
        tx: mpsc::Sender<Control>,
        hello: Vec<ShareHello>,
        whole: HashSet<String>,
    ) -> Result<Self, IndexError> {
        let (theirs, held): (HashMap<String, ShareHello>, HashMap<String, ShareHello>) =
            hello.into_iter().map(|s| (s.name.clone(), s)).partition(|(name, _)| node.admits(name, &peer));
        let mut excluded = HashSet::new();
        // Each Hello says afresh which shares the peer has (it may have removed one).
        let now = crate::index::unix_now();
        for share in node.share_list() {
            let admitted = node.admits(&share.cfg.name, &peer);
            let takes_part = admitted && theirs.contains_key(&share.cfg.name);
            share.set_participant(peer, takes_part);
            if takes_part {
                share.ctx.index.note_contact(&peer, now)?;
            }
            if !admitted {
                excluded.insert(share.cfg.name.clone());
            }
        }
        Ok(Self { node, peer, minor, tx, theirs, held, sending: HashMap::new(), excluded, whole })
    }

    /// True if the peer takes part in `share` with this node (progress maps go to it).
    pub(super) fn takes_part(&self, share: &str) -> bool {
        self.theirs.contains_key(share)
    }

    /// Starts an index sender for every share both take part in that has none yet.
    pub(super) fn start_senders(&mut self, tasks: &mut JoinSet<()>) {
        for (name, sh) in &self.theirs {
            let Some(share) = self.node.share(name) else { continue };
            if self.sending.contains_key(name) || !self.node.admits(name, &self.peer) {
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
                (self.peer, self.minor, sh.index_id),
                share.durable.subscribe(),
                self.tx.clone(),
                start,
            );
            let handle = tasks.spawn(send.instrument(tracing::info_span!("share", share = %name)));
            self.sending.insert(name.clone(), handle);
        }
    }

    /// The peer started taking part in a share (`Control::ShareAdded`), or says
    /// again where it stands (it was admitted again and forgot this node's index):
    /// the sender starts over from there. False if it is not admitted (refused).
    pub(super) fn peer_added(&mut self, sh: ShareHello, tasks: &mut JoinSet<()>) -> bool {
        if !self.node.admits(&sh.name, &self.peer) {
            self.held.insert(sh.name.clone(), sh);
            return false;
        }
        if let Some(share) = self.node.share(&sh.name) {
            share.set_participant(self.peer, true);
            if let Err(e) = share.ctx.index.note_contact(&self.peer, crate::index::unix_now()) {
                tracing::warn!(share = %sh.name, error = %e, "cannot note the peer's contact");
            }
        }
        if let Some(h) = self.sending.remove(&sh.name) {
            h.abort();
        }
        self.theirs.insert(sh.name.clone(), sh);
        self.start_senders(tasks);
        true
    }

    /// An index batch of `name` up to `upto` came in: once the whole index this node
    /// asked for is in, its own records the mesh forgot become local changes
    /// (see `Share::settle_recheck`).
    pub(super) async fn received(&mut self, name: &str, upto: u64) -> Result<(), IndexError> {
        let Some(theirs) = self.theirs.get(name).filter(|t| self.whole.contains(name) && upto >= t.max_seq) else {
            return Ok(());
        };
        let have = theirs.have;
        self.whole.remove(name);
        let Some(sh) = self.node.share(name) else { return Ok(()) };
        // What the peer had received of this node's index, if it is of this index.
        let ours = sh.ctx.index.index_id()?;
        if let Some((_, ack)) = have.filter(|h| h.0 == ours) {
            tokio::task::spawn_blocking(move || sh.settle_recheck(ack))
                .await
                .map_err(|e| IndexError::Task(e.to_string()))??;
        }
        Ok(())
    }

    /// This node stopped taking part in `name` (`share remove` while running).
    pub(super) fn we_removed(&mut self, name: &str) {
        if let Some(h) = self.sending.remove(name) {
            h.abort();
        }
    }

    /// The peer stopped taking part in `name` (`Control::ShareRemoved`).
    pub(super) fn peer_removed(&mut self, name: &str) {
        if let Some(share) = self.node.share(name) {
            share.set_participant(self.peer, false);
        }
        self.theirs.remove(name);
        self.held.remove(name);
        self.we_removed(name);
    }

    /// This node started taking part in `name` (`share add` while running).
    pub(super) async fn we_added(&mut self, name: &str, tasks: &mut JoinSet<()>) -> Result<(), IndexError> {
        let Some(share) = self.node.share(name) else { return Ok(()) };
        if !self.node.admits(name, &self.peer) {
            self.excluded.insert(name.to_string());
            return Ok(());
        }
        // The peer named it in its Hello already, or will send ShareAdded.
        share.set_participant(self.peer, self.theirs.contains_key(name));
        let _ = self.tx.send(Control::ShareAdded(share_hello(&self.node, &share, &self.peer, &mut self.whole)?)).await;
        self.start_senders(tasks);
        Ok(())
    }

    /// `share`'s members changed: stop exchanging it with a peer no longer
    /// admitted (and forget what it sent), tell one newly admitted that this node
    /// has it.
    pub(super) async fn reconsider(&mut self, name: &str, tasks: &mut JoinSet<()>) -> Result<(), IndexError> {
        let Some(share) = self.node.share(name) else { return Ok(()) };
        let now = self.node.admits(name, &self.peer);
        let was = !self.excluded.contains(name);
        if was && !now {
            self.excluded.insert(name.to_string());
            if let Some(h) = self.sending.remove(name) {
                h.abort();
            }
            if let Some(sh) = self.theirs.remove(name) {
                self.held.insert(name.to_string(), sh);
            }
            share.forget_peer(self.peer).await;
        } else if now && !was {
            self.excluded.remove(name);
            // This node forgot the peer's index of it: the peer starts over from
            // this ShareAdded; a peer that forgot this node's sends one too.
            let _ =
                self.tx.send(Control::ShareAdded(share_hello(&self.node, &share, &self.peer, &mut self.whole)?)).await;
            if let Some(sh) = self.held.remove(name) {
                share.set_participant(self.peer, true);
                self.theirs.insert(name.to_string(), sh);
                self.start_senders(tasks);
            }
        }
        Ok(())
    }

    /// Asks the peer for the entries of `name` that came as deltas this node could
    /// not read (protocol minor 5), if any, and if what this node holds of the
    /// peer's index is of its index of now (else all of it comes again anyway).
    pub(super) async fn ask_wanted(&self, name: &str) -> Result<(), IndexError> {
        let (Some(share), Some(theirs)) = (self.node.share(name), self.theirs.get(name)) else { return Ok(()) };
        if self.minor < MINOR_DELTA {
            return Ok(());
        }
        let (idx, peer, their_id) = (share.ctx.index.clone(), self.peer, theirs.index_id);
        let paths = tokio::task::spawn_blocking(move || match idx.remote_state(&peer)? {
            Some((id, _)) if id == their_id => idx.wanted(&peer, MAX_BATCH_ENTRIES),
            _ => Ok(Vec::new()),
        })
        .await
        .map_err(|e| IndexError::Task(e.to_string()))??;
        if !paths.is_empty() {
            tracing::debug!(share = name, paths = paths.len(), "asking for entries whole");
            let _ = self.tx.send(Control::EntriesWanted { share: name.to_string(), index_id: their_id, paths }).await;
        }
        Ok(())
    }

    /// [`Exchange::ask_wanted`] for every share exchanged (at the session's start:
    /// asks left over from an earlier one).
    pub(super) async fn ask_all_wanted(&self) -> Result<(), IndexError> {
        let names: Vec<String> = self.theirs.keys().cloned().collect();
        for name in names {
            self.ask_wanted(&name).await?;
        }
        Ok(())
    }

    /// Answers the peer's ask for entries of `name` whole, if it takes part in the
    /// share and asks of this node's index of now. False if the ask is refused.
    pub(super) async fn answer_wanted(
        &self,
        name: &str,
        index_id: u64,
        paths: Vec<RelPath>,
    ) -> Result<bool, IndexError> {
        let Some(share) = self.node.share(name).filter(|_| self.takes_part(name)) else { return Ok(false) };
        if paths.len() > MAX_BATCH_ENTRIES {
            return Ok(false);
        }
        let idx = share.ctx.index.clone();
        if idx.index_id()? != index_id {
            // Asked of an index this node has replaced: the peer reads it all again.
            return Ok(true);
        }
        let name = name.to_string();
        let reply = tokio::task::spawn_blocking(move || gossip::index::answer_wanted(&idx, name, paths))
            .await
            .map_err(|e| IndexError::Task(e.to_string()))??;
        let _ = self.tx.send(reply).await;
        Ok(true)
    }
}

/// True if a frame may go to `peer`: nothing of a share it is not admitted to,
/// whatever raced with a membership change.
pub(super) fn may_send(node: &Node, peer: &NodeId, msg: &Control) -> bool {
    match msg {
        Control::Index { share, .. }
        | Control::IndexBatch { share, .. }
        | Control::IndexDelta { share, .. }
        | Control::EntriesWanted { share, .. }
        | Control::EntriesReply { share, .. } => node.admits(share, peer),
        Control::ShareAdded(sh) => node.admits(&sh.name, peer),
        Control::Have(m) => node.admits(&m.share, peer),
        _ => true,
    }
}
