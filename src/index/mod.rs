//! The node's index: entries, sequence numbers, remote indexes, chunk locations and
//! known peers, in sled. Nothing outside this module touches sled.

mod entry;
mod forget;
mod listing;
mod many;
mod peers;
mod tombstones;
mod trust;
mod vv;
mod wanted;

#[cfg(test)]
pub(crate) use entry::sample_file;
pub use entry::{conflict_name, pick_winner, Block, Entry, EntryError, EntryKind, FileStamp, Mtime};
pub use listing::Child;
pub use peers::{AddrOrigin, KnownPeer};
pub use tombstones::{unix_now, Member};
pub use trust::{Members, Removal, ShareMembers};
pub use vv::{CounterExhausted, VersionVector, VvOrder, MAX_COUNTER};

use crate::codec::{self, CodecError};
use crate::ids::{ChunkHash, NodeId};
use crate::relpath::RelPath;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Index failures.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database failed (disk, corruption, locked by another process).
    #[error("index database: {0}")]
    Db(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("index record: {0}")]
    Codec(#[from] CodecError),
    /// A blocking index task failed to run.
    #[error("index task: {0}")]
    Task(String),
    /// A path's version cannot count another change.
    #[error(transparent)]
    Counter(#[from] CounterExhausted),
}

/// This node's record of one path of a share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The entry as announced (or, for a receive-only local change, as found on disk).
    pub entry: Entry,
    /// Local sequence number of the last change.
    pub seq: u64,
    /// Inode of the file when it was scanned or written (change detection).
    pub ino: u64,
    /// A change made on a receive-only share: recorded, never announced.
    pub local_change: bool,
}

impl LocalRecord {
    /// The stamp of the live file this record describes; `None` for anything else.
    pub fn file_stamp(&self) -> Option<FileStamp> {
        let e = &self.entry;
        (!e.deleted && e.kind == EntryKind::File).then_some(FileStamp { size: e.size, mtime: e.mtime, ino: self.ino })
    }
}

/// What this node noted of a share's root the last time it was right: which marker
/// it held and which filesystem it was on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    /// The marker's id.
    pub marker_id: String,
    /// The root's filesystem (see `scan::marker::filesystem_of`).
    pub filesystem: String,
}

/// MiB of index pages kept in memory unless configured (`index_cache_mib`); the
/// database keeps about 3 times this resident. At a million files (bigtree,
/// release, one node, load 1.5-2): 64 MiB indexed in 44.6 s and stayed at 276 MiB
/// resident; 128 MiB 42.2 s, 353 MiB; the database's own default of 1024 MiB
/// 33.8 s, 826 MiB.
pub const DEFAULT_CACHE_MIB: u64 = 64;

/// The open index of one node.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    peers: sled::Tree,
    /// Ids of peers whose addresses came from the peer itself: a third party's
    /// word never replaces those.
    peers_direct: sled::Tree,
    /// Removal records by node id.
    removed: sled::Tree,
    /// Share membership records by share name.
    members: sled::Tree,
}

impl Index {
    /// Opens (or creates) the index in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_MIB << 20)
    }

    /// Opens the index keeping up to `cache_bytes` of its pages in memory (the
    /// database holds about 3 times that resident).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, IndexError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).flush_every_ms(Some(500)).open()?;
        let peers = db.open_tree("peers")?;
        let peers_direct = db.open_tree("peers_direct")?;
        let removed = db.open_tree("trust_removed")?;
        let members = db.open_tree("trust_members")?;
        Ok(Self { db, peers, peers_direct, removed, members })
    }

    /// The trees of one share.
    pub fn share(&self, name: &str) -> Result<ShareIndex, IndexError> {
        let t = |kind: &str| self.db.open_tree(format!("share/{name}/{kind}"));
        let s = ShareIndex {
            inner: Arc::new(ShareTrees {
                local: t("local")?,
                by_seq: t("seq")?,
                remote: t("remote")?,
                remote_state: t("remote_state")?,
                chunks: t("chunks")?,
                meta: t("meta")?,
                deleted_at: t("deleted_at")?,
                contact: t("contact")?,
                wanted: t("wanted")?,
                seq_lock: Mutex::new(()),
                remote_gen: Default::default(),
            }),
        };
        if s.inner.meta.get("index_id")?.is_none() {
            s.inner.meta.insert("index_id", &rand::random::<u64>().to_be_bytes())?;
            self.carry_counter_floor(name, &s)?;
        }
        Ok(s)
    }

    /// Deletes every tree of a share (a finished bench blob).
    pub fn drop_share(&self, name: &str) -> Result<(), IndexError> {
        for kind in ["local", "seq", "remote", "remote_state", "chunks", "meta", "deleted_at", "contact", "wanted"] {
            self.db.drop_tree(format!("share/{name}/{kind}"))?;
        }
        Ok(())
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }
}

struct ShareTrees {
    local: sled::Tree,
    by_seq: sled::Tree,
    remote: sled::Tree,
    remote_state: sled::Tree,
    chunks: sled::Tree,
    meta: sled::Tree,
    /// Path -> when this node recorded the path deleted (Unix seconds).
    deleted_at: sled::Tree,
    /// Peer -> when this node last heard from it about the share (Unix seconds).
    contact: sled::Tree,
    /// (path, peer) -> nothing: the peer's entry for the path came as a delta of a
    /// version this node no longer held, and is to be asked for whole.
    wanted: sled::Tree,
    seq_lock: Mutex<()>,
    /// Bumped by every change to peers' entries (also by one that failed half-way),
    /// so a download can tell cheaply whether to look for new sources and status
    /// whether its summary still holds. Per handle: the daemon opens one per share.
    remote_gen: std::sync::atomic::AtomicU64,
}

/// Bytes after which a batch of entries ends: well under the frame limit, however
/// large the files.
pub const BATCH_CUT: usize = codec::MAX_FRAME / 4;

/// About what `e` takes in a batch on the wire (its blocks, 36 bytes each, and the rest).
pub fn batch_cost(e: &Entry) -> usize {
    64 + e.blocks.len() * 36
}

/// What a peer's index batch brings besides the sequence it reaches.
#[derive(Clone, Copy, Default)]
pub struct RemoteBatch<'a> {
    /// Its entries.
    pub entries: &'a [Entry],
    /// Paths where it holds this node's version.
    pub same: &'a [(RelPath, VersionVector)],
    /// Paths whose entries it sent as deltas this node could not read.
    pub wanted: &'a [RelPath],
}

/// One share's part of the index.
#[derive(Clone)]
pub struct ShareIndex {
    inner: Arc<ShareTrees>,
}

fn u64_at(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    u64::from_be_bytes(b)
}

fn remote_key(path: &RelPath, peer: &NodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.as_str().len() + 33);
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&peer.0);
    k
}

/// Where a chunk lies: a file of the share, an offset, and the file's size and
/// mtime when it was indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The file.
    pub path: RelPath,
    /// Offset of the chunk in it.
    pub offset: u64,
    /// The file's stamp at indexing (absent in indexes written before stamps held
    /// the inode): while it still matches, the bytes are what was hashed, as far as
    /// the scanner can tell.
    pub file: Option<FileStamp>,
}

impl ChunkLocation {
    /// offset, then size, mtime seconds and nanoseconds, inode, big-endian.
    fn value(&self) -> Vec<u8> {
        let mut v = self.offset.to_be_bytes().to_vec();
        if let Some(f) = self.file {
            v.extend_from_slice(&f.size.to_be_bytes());
            v.extend_from_slice(&f.mtime.secs.to_be_bytes());
            v.extend_from_slice(&f.mtime.nanos.to_be_bytes());
            v.extend_from_slice(&f.ino.to_be_bytes());
        }
        v
    }

    fn from_value(path: RelPath, v: &[u8]) -> Self {
        let file = (v.len() >= 36).then(|| {
            let secs = i64::from_be_bytes(v[16..24].try_into().unwrap_or_default());
            let nanos = u32::from_be_bytes(v[24..28].try_into().unwrap_or_default());
            FileStamp { size: u64_at(&v[8..16]), mtime: Mtime { secs, nanos }, ino: u64_at(&v[28..36]) }
        });
        Self { path, offset: u64_at(v), file }
    }
}

fn chunk_key(hash: &ChunkHash, path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + path.as_str().len());
    k.extend_from_slice(&hash.0);
    k.extend_from_slice(path.as_str().as_bytes());
    k
}

impl ShareIndex {
    /// Random id of this index; a new one means peers must resend everything.
    pub fn index_id(&self) -> Result<u64, IndexError> {
        Ok(self.inner.meta.get("index_id")?.map(|v| u64_at(&v)).unwrap_or(0))
    }

    /// What this node noted of the share's root, if it ever saw it right.
    pub fn root_record(&self) -> Result<Option<RootRecord>, IndexError> {
        match self.inner.meta.get("root")? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Writes everything to disk (the whole database: its trees share one log).
    pub fn flush(&self) -> Result<(), IndexError> {
        self.inner.meta.flush()?;
        Ok(())
    }

    /// Notes the share's root as right.
    pub fn set_root_record(&self, r: &RootRecord) -> Result<(), IndexError> {
        self.inner.meta.insert("root", codec::encode(r)?)?;
        self.inner.meta.flush()?;
        Ok(())
    }

    /// True if no live entry is recorded: nothing a scan could take for deleted.
    pub fn has_no_live_entries(&self) -> Result<bool, IndexError> {
        for v in self.inner.local.iter().values() {
            let rec: LocalRecord = codec::decode(&v?)?;
            if !rec.entry.deleted {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Newest local sequence number.
    pub fn max_seq(&self) -> Result<u64, IndexError> {
        Ok(self.inner.meta.get("max_seq")?.map(|v| u64_at(&v)).unwrap_or(0))
    }

    /// This node's record of a path.
    pub fn get(&self, path: &RelPath) -> Result<Option<LocalRecord>, IndexError> {
        match self.inner.local.get(path.as_str())? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records a local change under the next sequence number and returns it.
    pub fn put(&self, entry: Entry, ino: u64, local_change: bool) -> Result<u64, IndexError> {
        let _guard = self.inner.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.get(&entry.path)?;
        let seq = self.max_seq()? + 1;
        // Before the record: see `put_many`.
        self.inner.meta.insert("max_seq", &seq.to_be_bytes())?;
        if let Some(old) = &old {
            self.inner.by_seq.remove(old.seq.to_be_bytes())?;
            if old.entry.blocks != entry.blocks || entry.deleted {
                for b in &old.entry.blocks {
                    self.inner.chunks.remove(chunk_key(&b.hash, &old.entry.path))?;
                }
            }
        }
        if !entry.deleted {
            // Rewritten even when the blocks did not change: the value carries the
            // file's size and mtime, which a touch changes.
            for (off, b) in entry.block_offsets() {
                let file = Some(FileStamp { size: entry.size, mtime: entry.mtime, ino });
                let loc = ChunkLocation { path: entry.path.clone(), offset: off, file };
                self.inner.chunks.insert(chunk_key(&b.hash, &entry.path), loc.value())?;
            }
        }
        let path = entry.path.clone();
        tombstones::note_put(&self.inner, &entry)?;
        let rec = LocalRecord { entry, seq, ino, local_change };
        self.inner.local.insert(path.as_str(), codec::encode(&rec)?)?;
        self.inner.by_seq.insert(seq.to_be_bytes(), path.as_str())?;
        Ok(seq)
    }

    /// Updates the inode of a record without a new sequence (nothing a peer needs).
    pub fn set_ino(&self, path: &RelPath, ino: u64) -> Result<(), IndexError> {
        let _guard = self.inner.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut rec) = self.get(path)? {
            rec.ino = ino;
            self.inner.local.insert(path.as_str(), codec::encode(&rec)?)?;
        }
        Ok(())
    }

    /// Local records changed after `seq` up to `upto`, in sequence order, at most `limit`.
    pub fn since(&self, seq: u64, upto: u64, limit: usize) -> Result<Vec<LocalRecord>, IndexError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if upto <= seq {
            return Ok(out);
        }
        for kv in self.inner.by_seq.range((seq + 1).to_be_bytes()..=upto.to_be_bytes()) {
            let (k, path) = kv?;
            let Some(rec) = self.inner.local.get(&path)? else {
                continue;
            };
            let rec: LocalRecord = codec::decode(&rec)?;
            // A stale sequence key (crash between writes) points at a newer record.
            if rec.seq != u64_at(&k) {
                continue;
            }
            bytes += batch_cost(&rec.entry);
            out.push(rec);
            if out.len() >= limit || bytes >= BATCH_CUT {
                break;
            }
        }
        Ok(out)
    }

    /// How many live (not deleted) entries this node records.
    pub fn live_count(&self) -> Result<usize, IndexError> {
        let mut n = 0;
        for rec in self.local_records() {
            n += usize::from(!rec?.entry.deleted);
        }
        Ok(n)
    }

    /// Every local record.
    pub fn all(&self) -> Result<Vec<LocalRecord>, IndexError> {
        self.local_records().collect()
    }

    /// This node's records of everything below directory `dir`.
    pub fn under(&self, dir: &RelPath) -> Result<Vec<LocalRecord>, IndexError> {
        let prefix = format!("{dir}/");
        self.inner.local.scan_prefix(prefix.as_bytes()).values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Where a chunk lies in this share's files.
    pub fn chunk_locations(&self, hash: &ChunkHash) -> Result<Vec<ChunkLocation>, IndexError> {
        let mut out = Vec::new();
        for kv in self.inner.chunks.scan_prefix(hash.0) {
            let (k, v) = kv?;
            if let Ok(p) = std::str::from_utf8(&k[32..]).map_err(|_| ()).and_then(|s| RelPath::parse(s).map_err(|_| ()))
            {
                out.push(ChunkLocation::from_value(p, &v));
            }
        }
        Ok(out)
    }

    /// What we hold of a peer's index: (its index id, last sequence received).
    pub fn remote_state(&self, peer: &NodeId) -> Result<Option<(u64, u64)>, IndexError> {
        Ok(self.inner.remote_state.get(peer.0)?.map(|v| (u64_at(&v[..8]), u64_at(&v[8..]))))
    }

    /// Stores a batch of a peer's entries and the sequence it reaches.
    ///
    /// A batch under a different index id than before replaces everything of that peer.
    pub fn apply_remote(&self, peer: &NodeId, index_id: u64, entries: &[Entry], upto: u64) -> Result<(), IndexError> {
        self.apply_remote_batch(peer, index_id, &RemoteBatch { entries, same: &[], wanted: &[] }, upto)
    }

    /// Like [`ShareIndex::apply_remote`], with paths where the peer holds exactly
    /// this node's version (this node's own entry is stored as the peer's; one that
    /// this node has changed since is left as it was: the peer will say again) and
    /// paths whose entries are to be asked for whole (see [`ShareIndex::wanted`]).
    pub fn apply_remote_batch(
        &self,
        peer: &NodeId,
        index_id: u64,
        batch: &RemoteBatch<'_>,
        upto: u64,
    ) -> Result<(), IndexError> {
        let RemoteBatch { entries, same, wanted } = *batch;
        self.changing_remote(|| {
            if let Some((old_id, _)) = self.remote_state(peer)? {
                if old_id != index_id {
                    self.forget_peer(peer)?;
                }
            }
            let mut batch = sled::Batch::default();
            for e in entries {
                batch.insert(remote_key(&e.path, peer), codec::encode(e)?);
            }
            for (path, version) in same {
                if let Some(mine) = self.get(path)?.filter(|r| &r.entry.version == version) {
                    batch.insert(remote_key(path, peer), codec::encode(&mine.entry)?);
                }
            }
            self.inner.remote.apply_batch(batch)?;
            // Before the sequence moves past them: a crash in between asks again.
            self.want(peer, wanted, entries.iter().map(|e| &e.path))?;
            let mut st = index_id.to_be_bytes().to_vec();
            st.extend_from_slice(&upto.to_be_bytes());
            self.inner.remote_state.insert(peer.0, st)?;
            Ok(())
        })
    }

    /// Runs a change to peers' entries, then bumps the generation whatever the
    /// outcome: part of a failed change may have been written.
    fn changing_remote(&self, change: impl FnOnce() -> Result<(), IndexError>) -> Result<(), IndexError> {
        let done = change();
        self.inner.remote_gen.fetch_add(1, std::sync::atomic::Ordering::Release);
        done
    }

    /// Changes when peers' entries change (a counter, not persisted).
    pub fn remote_generation(&self) -> u64 {
        self.inner.remote_gen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drops everything known of a peer's index.
    pub fn forget_peer(&self, peer: &NodeId) -> Result<(), IndexError> {
        self.changing_remote(|| {
            for k in self.inner.remote.iter().keys() {
                let k = k?;
                if k.len() > 33 && k[k.len() - 32..] == peer.0 {
                    self.inner.remote.remove(k)?;
                }
            }
            self.inner.remote_state.remove(peer.0)?;
            self.unwant_all(peer)?;
            Ok(())
        })
    }

    /// Every peer's entry for one path.
    pub fn remote_for(&self, path: &RelPath) -> Result<Vec<(NodeId, Entry)>, IndexError> {
        let mut prefix = path.as_str().as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.inner.remote.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[k.len() - 32..]);
            out.push((NodeId(id), codec::decode(&v)?));
        }
        Ok(out)
    }

    /// The entry `peer` announced for `path`, if any.
    pub fn remote_entry(&self, path: &RelPath, peer: &NodeId) -> Result<Option<Entry>, IndexError> {
        match self.inner.remote.get(remote_key(path, peer))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Every (peer, entry) pair known, in path order.
    pub fn all_remote(&self) -> Result<Vec<(NodeId, Entry)>, IndexError> {
        self.remote_entries().collect()
    }
}

#[cfg(test)]
mod tests;
