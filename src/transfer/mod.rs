//! The transfer engine around the pure cores of `sync`: carrying out planner
//! actions on disk (`assemble`), fetching what is missing from the swarm (`fetch`),
//! and the chunks a node can serve (`local`, `partial`).

mod assemble;
mod batch;
mod fetch;
pub mod local;
pub mod partial;
pub mod serve;
mod space;
pub mod versions;

pub use batch::Outcomes;
pub use fetch::{announce_every, FAST_ANNOUNCE_PEERS, REFRESH_EVERY};
pub use local::{LocalChunks, Verify};
pub use partial::PartialStore;

use crate::config::ShareMode;
use crate::gossip::announced::Announced;
use crate::index::{IndexError, ShareIndex};
use crate::net::Peers;
use crate::proto::Control;
use crate::relpath::{RelPath, PRIVATE_DIR};
use crate::stats::{Counters, Progress};
use crate::sync::Action;
use crate::util::safe_join;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Why an action was not carried out. None of these loses data.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not enough free space: the share pauses.
    #[error("disk full: need {need} bytes plus the configured minimum free, {free} available")]
    DiskFull {
        /// Bytes the file needs.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// No connected peer can serve some chunks now; retried later.
    #[error("{0}: no connected peer has the missing chunks")]
    NoSource(RelPath),
    /// The local file changed after the plan; the next scan turns it into a conflict.
    #[error("{0}: changed locally since the last scan, not overwritten")]
    LocalChanged(RelPath),
    /// A path refused for safety.
    #[error("refused: {0}")]
    Unsafe(String),
    /// Disk I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A blocking step of the work (disk I/O, hashing) did not run to its end.
    #[error("disk task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything the executor needs about one share.
#[derive(Clone)]
pub struct ShareCtx {
    /// Share name.
    pub name: String,
    /// Local root.
    pub root: PathBuf,
    /// The share's index.
    pub index: ShareIndex,
    /// Mode.
    pub mode: ShareMode,
    /// Free bytes to keep (the node's, which a reload changes).
    pub min_free: Arc<std::sync::atomic::AtomicU64>,
    /// The node's download cap, shared by every share (a reload changes it).
    pub download_limit: Arc<crate::net::limit::RateLimit>,
    /// Live connections.
    pub peers: Arc<Peers>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Download progress.
    pub progress: Arc<Progress>,
    /// Chunks of running downloads, servable to peers.
    pub partial: Arc<PartialStore>,
    /// Peers' download progress.
    pub announced: Arc<Announced>,
    /// Sends this node's progress maps to every session.
    pub announce: broadcast::Sender<Control>,
    /// The share's file watch, told of this node's own changes so it does not
    /// scan them again.
    pub watched: Arc<crate::watch::Pending>,
    /// Whether what a peer's change replaces or deletes is kept.
    pub versioning: crate::config::Versioning,
    /// Whether the chunks served of the share are compressed.
    pub compression: crate::config::Compression,
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> ApplyError + '_ {
    move |e| ApplyError::Io(p.display().to_string(), e)
}

impl ShareCtx {
    fn abs(&self, rel: &RelPath) -> Result<PathBuf, ApplyError> {
        safe_join(&self.root, rel).map_err(|e| ApplyError::Unsafe(e.to_string()))
    }

    fn private_dir(&self) -> PathBuf {
        self.root.join(PRIVATE_DIR).join("tmp")
    }

    /// Carries out one action.
    pub async fn execute(&self, action: Action) -> Result<(), ApplyError> {
        match action {
            Action::Fetch { target, sources, conflict } => {
                let path = target.path.clone();
                let res = self.fetch(target, sources, conflict).await;
                if res.is_err() {
                    // Retried later, or never if the plan changes: not a transfer now
                    // (it stayed in `status` for good when no peer had the chunks).
                    self.progress.finish(&self.name, path.as_str());
                }
                res
            }
            other => {
                let ctx = self.clone();
                tokio::task::spawn_blocking(move || ctx.execute_local(other)).await.map_err(ApplyError::Task)?
            }
        }
    }

    /// A reader of this share's own files.
    pub fn local_chunks(&self, verify: Verify) -> LocalChunks<'_> {
        LocalChunks::new(&self.root, &self.index, verify)
    }
}
