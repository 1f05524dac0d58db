//! Live counters and download progress, read by `status` and the tests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Monotonic counters of one node since it started.
#[derive(Default, Debug)]
pub struct Counters {
    /// Chunk payload bytes received from peers.
    pub chunk_bytes_received: AtomicU64,
    /// Chunk payload bytes sent to peers.
    pub chunk_bytes_sent: AtomicU64,
    /// Chunks served to peers.
    pub chunks_sent: AtomicU64,
    /// Bytes of chunks found locally instead of fetched (renames, copies, edits).
    pub chunk_bytes_reused: AtomicU64,
    /// Chunks that failed verification.
    pub chunks_corrupt: AtomicU64,
    /// Chunk requests answered `Busy` (sent to another peer just before).
    pub chunks_busy: AtomicU64,
    /// Chunk requests answered `Busy` because this node already served its maximum of peers.
    pub requests_full: AtomicU64,
    /// Index entries received from peers.
    pub entries_received: AtomicU64,
    /// Index entries sent to peers.
    pub entries_sent: AtomicU64,
    /// Files written from remote versions.
    pub files_applied: AtomicU64,
    /// Conflict copies made.
    pub conflicts: AtomicU64,
    /// Entries or paths refused from peers (bad paths, escaping symlinks).
    pub refused: AtomicU64,
}

/// A snapshot of [`Counters`], as shown by `status --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// See [`Counters::chunk_bytes_received`].
    pub chunk_bytes_received: u64,
    /// See [`Counters::chunk_bytes_sent`].
    pub chunk_bytes_sent: u64,
    /// See [`Counters::chunks_sent`].
    pub chunks_sent: u64,
    /// See [`Counters::chunk_bytes_reused`].
    pub chunk_bytes_reused: u64,
    /// See [`Counters::chunks_corrupt`].
    pub chunks_corrupt: u64,
    /// See [`Counters::chunks_busy`].
    #[serde(default)]
    pub chunks_busy: u64,
    /// See [`Counters::requests_full`].
    #[serde(default)]
    pub requests_full: u64,
    /// See [`Counters::entries_received`].
    pub entries_received: u64,
    /// See [`Counters::entries_sent`].
    pub entries_sent: u64,
    /// See [`Counters::files_applied`].
    pub files_applied: u64,
    /// See [`Counters::conflicts`].
    pub conflicts: u64,
    /// See [`Counters::refused`].
    pub refused: u64,
}

impl Counters {
    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            chunk_bytes_received: g(&self.chunk_bytes_received),
            chunk_bytes_sent: g(&self.chunk_bytes_sent),
            chunks_sent: g(&self.chunks_sent),
            chunk_bytes_reused: g(&self.chunk_bytes_reused),
            chunks_corrupt: g(&self.chunks_corrupt),
            chunks_busy: g(&self.chunks_busy),
            requests_full: g(&self.requests_full),
            entries_received: g(&self.entries_received),
            entries_sent: g(&self.entries_sent),
            files_applied: g(&self.files_applied),
            conflicts: g(&self.conflicts),
            refused: g(&self.refused),
        }
    }
}

/// One download in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Share name.
    pub share: String,
    /// Path in the share.
    pub path: String,
    /// Bytes in place so far.
    pub done: u64,
    /// File size.
    pub total: u64,
}

/// Downloads in progress, keyed by (share, path).
#[derive(Default, Debug)]
pub struct Progress {
    inner: Mutex<BTreeMap<(String, String), Transfer>>,
}

impl Progress {
    /// Starts or updates a transfer.
    pub fn set(&self, share: &str, path: &str, done: u64, total: u64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(
            (share.to_string(), path.to_string()),
            Transfer { share: share.to_string(), path: path.to_string(), done, total },
        );
    }

    /// Ends a transfer.
    pub fn finish(&self, share: &str, path: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&(share.to_string(), path.to_string()));
    }

    /// All transfers now.
    pub fn list(&self) -> Vec<Transfer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}
