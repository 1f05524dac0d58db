//! Live counters and download progress, read by `status` and the tests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Monotonic counters of one node since it started.
#[derive(Default, Debug)]
pub struct Counters {
    /// Chunk payload bytes received from peers.
    pub chunk_bytes_received: AtomicU64,
    /// Chunk payload bytes sent to peers.
    pub chunk_bytes_sent: AtomicU64,
    /// Bytes of chunk replies' payloads received from peers, as they crossed the
    /// wire (compressed or not, duplicates and refused ones included).
    pub chunk_wire_bytes_received: AtomicU64,
    /// Bytes of chunk replies' payloads sent to peers, as they crossed the wire:
    /// below `chunk_bytes_sent` by what compression saved.
    pub chunk_wire_bytes_sent: AtomicU64,
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
    /// Chunk requests this node gave up on: not answered by their deadline, asked elsewhere.
    pub requests_timed_out: AtomicU64,
    /// Index entries received from peers.
    pub entries_received: AtomicU64,
    /// Index entries sent to peers.
    pub entries_sent: AtomicU64,
    /// Index batches sent to peers (each one frame of at most `MAX_BATCH_ENTRIES` entries).
    pub index_batches_sent: AtomicU64,
    /// Bytes of index batches sent to peers, framing included.
    pub index_bytes_sent: AtomicU64,
    /// Index batches received from peers.
    pub index_batches_received: AtomicU64,
    /// Bytes of index batches received from peers, framing included.
    pub index_bytes_received: AtomicU64,
    /// Files written from remote versions.
    pub files_applied: AtomicU64,
    /// Conflict copies made.
    pub conflicts: AtomicU64,
    /// Entries or paths refused from peers (bad paths, escaping symlinks).
    pub refused: AtomicU64,
    /// Connections refused before they proved anything: no place left for a
    /// stranger, a handshake or join request past its deadline, an unknown protocol.
    pub connections_refused: AtomicU64,
}

/// A snapshot of [`Counters`], as shown by `status --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// See [`Counters::chunk_bytes_received`].
    pub chunk_bytes_received: u64,
    /// See [`Counters::chunk_bytes_sent`].
    pub chunk_bytes_sent: u64,
    /// See [`Counters::chunk_wire_bytes_received`].
    #[serde(default)]
    pub chunk_wire_bytes_received: u64,
    /// See [`Counters::chunk_wire_bytes_sent`].
    #[serde(default)]
    pub chunk_wire_bytes_sent: u64,
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
    /// See [`Counters::requests_timed_out`].
    #[serde(default)]
    pub requests_timed_out: u64,
    /// See [`Counters::entries_received`].
    pub entries_received: u64,
    /// See [`Counters::entries_sent`].
    pub entries_sent: u64,
    /// See [`Counters::index_batches_sent`].
    #[serde(default)]
    pub index_batches_sent: u64,
    /// See [`Counters::index_bytes_sent`].
    #[serde(default)]
    pub index_bytes_sent: u64,
    /// See [`Counters::index_batches_received`].
    #[serde(default)]
    pub index_batches_received: u64,
    /// See [`Counters::index_bytes_received`].
    #[serde(default)]
    pub index_bytes_received: u64,
    /// See [`Counters::files_applied`].
    pub files_applied: u64,
    /// See [`Counters::conflicts`].
    pub conflicts: u64,
    /// See [`Counters::refused`].
    pub refused: u64,
    /// See [`Counters::connections_refused`].
    #[serde(default)]
    pub connections_refused: u64,
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
            chunk_wire_bytes_received: g(&self.chunk_wire_bytes_received),
            chunk_wire_bytes_sent: g(&self.chunk_wire_bytes_sent),
            chunks_sent: g(&self.chunks_sent),
            chunk_bytes_reused: g(&self.chunk_bytes_reused),
            chunks_corrupt: g(&self.chunks_corrupt),
            chunks_busy: g(&self.chunks_busy),
            requests_full: g(&self.requests_full),
            requests_timed_out: g(&self.requests_timed_out),
            entries_received: g(&self.entries_received),
            entries_sent: g(&self.entries_sent),
            index_batches_sent: g(&self.index_batches_sent),
            index_bytes_sent: g(&self.index_bytes_sent),
            index_batches_received: g(&self.index_batches_received),
            index_bytes_received: g(&self.index_bytes_received),
            files_applied: g(&self.files_applied),
            conflicts: g(&self.conflicts),
            refused: g(&self.refused),
            connections_refused: g(&self.connections_refused),
        }
    }
}

/// One download in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Share name.
    pub share: String,
    /// Path in the share.
    pub path: String,
    /// Bytes in place so far.
    pub done: u64,
    /// File size.
    pub total: u64,
    /// Recent download rate in bytes per second (0 while nothing arrives; none
    /// before the first second).
    #[serde(default)]
    pub bytes_per_sec: Option<f64>,
    /// Seconds left at that rate.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

/// The rate is sampled over at least this long.
const RATE_EVERY: Duration = Duration::from_secs(1);
/// No bytes for this long and the rate reads 0 ("stalled"), whatever it was.
const STALLED_AFTER: Duration = Duration::from_secs(3);

/// One transfer and the samples behind its rate.
#[derive(Debug)]
struct Tracked {
    t: Transfer,
    sample_at: Instant,
    sample_done: u64,
    last_bytes_at: Instant,
}

/// Downloads in progress, keyed by (share, path).
#[derive(Default, Debug)]
pub struct Progress {
    inner: Mutex<BTreeMap<(String, String), Tracked>>,
}

impl Progress {
    /// Starts or updates a transfer.
    pub fn set(&self, share: &str, path: &str, done: u64, total: u64) {
        self.set_at(share, path, done, total, Instant::now());
    }

    /// [`Progress::set`] at a given time.
    pub fn set_at(&self, share: &str, path: &str, done: u64, total: u64, now: Instant) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (share.to_string(), path.to_string());
        match m.get_mut(&key) {
            // The same download going on (a new version or a restart starts over).
            Some(tr) if tr.t.total == total && done >= tr.t.done => {
                if done > tr.t.done {
                    tr.last_bytes_at = now;
                }
                tr.t.done = done;
                let span = now.saturating_duration_since(tr.sample_at);
                if span >= RATE_EVERY {
                    let r = (done - tr.sample_done) as f64 / span.as_secs_f64();
                    // Smoothed over a few seconds: a swarm's rate moves as peers join.
                    tr.t.bytes_per_sec = Some(tr.t.bytes_per_sec.map_or(r, |old| 0.5 * old + 0.5 * r));
                    tr.sample_at = now;
                    tr.sample_done = done;
                }
            }
            _ => {
                let t = Transfer {
                    share: share.to_string(),
                    path: path.to_string(),
                    done,
                    total,
                    bytes_per_sec: None,
                    eta_secs: None,
                };
                m.insert(key, Tracked { t, sample_at: now, sample_done: done, last_bytes_at: now });
            }
        }
    }

    /// Ends a transfer.
    pub fn finish(&self, share: &str, path: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&(share.to_string(), path.to_string()));
    }

    /// Ends every transfer of a share (removed while they ran).
    pub fn finish_share(&self, share: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).retain(|(s, _), _| s != share);
    }

    /// All transfers now, with their rate and time left.
    pub fn list(&self) -> Vec<Transfer> {
        self.list_at(Instant::now())
    }

    /// [`Progress::list`] at a given time.
    pub fn list_at(&self, now: Instant) -> Vec<Transfer> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.values()
            .map(|tr| {
                let mut t = tr.t.clone();
                if now.saturating_duration_since(tr.last_bytes_at) >= STALLED_AFTER {
                    t.bytes_per_sec = Some(0.0);
                }
                t.eta_secs = t.bytes_per_sec.filter(|r| *r > 0.0).map(|r| t.total.saturating_sub(t.done) as f64 / r);
                t
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_follow_the_bytes() {
        let p = Progress::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        p.set_at("s", "f", 0, 100 << 20, at(0));
        assert_eq!(p.list_at(at(0))[0].bytes_per_sec, None, "no rate before a second of samples");
        p.set_at("s", "f", 10 << 20, 100 << 20, at(1000));
        let t = &p.list_at(at(1000))[0];
        assert_eq!(t.bytes_per_sec, Some((10 << 20) as f64));
        assert_eq!(t.eta_secs, Some(9.0), "90 MiB left at 10 MiB/s");
        p.set_at("s", "f", 40 << 20, 100 << 20, at(2000));
        assert_eq!(p.list_at(at(2000))[0].bytes_per_sec, Some((20 << 20) as f64), "smoothed: 10 then 30 MiB/s");
    }

    #[test]
    fn a_transfer_with_no_bytes_for_a_while_reads_stalled() {
        let p = Progress::default();
        let t0 = Instant::now();
        p.set_at("s", "f", 0, 100, t0);
        p.set_at("s", "f", 50, 100, t0 + RATE_EVERY);
        let later = t0 + RATE_EVERY + STALLED_AFTER;
        let t = &p.list_at(later)[0];
        assert_eq!(t.bytes_per_sec, Some(0.0));
        assert_eq!(t.eta_secs, None, "no time left to tell");
    }

    #[test]
    fn a_new_version_starts_its_own_count() {
        let p = Progress::default();
        let t0 = Instant::now();
        p.set_at("s", "f", 0, 100, t0);
        p.set_at("s", "f", 80, 100, t0 + RATE_EVERY);
        p.set_at("s", "f", 0, 200, t0 + 2 * RATE_EVERY);
        let t = &p.list_at(t0 + 2 * RATE_EVERY)[0];
        assert_eq!((t.done, t.total, t.bytes_per_sec), (0, 200, None));
        p.finish("s", "f");
        assert!(p.list().is_empty());
    }
}
