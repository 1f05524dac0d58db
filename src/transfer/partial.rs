//! Chunks of downloads that this node can already serve: verified pieces of its
//! temp files, relayed to peers before the file is complete. A download that
//! stopped for want of a source keeps its chunks here until it is tried again,
//! finishes, or its temp file is removed: its peers, just as stuck, may need them.

use crate::ids::ChunkHash;
use crate::util::read_vec_at;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a verified chunk sits: a temp file and an offset in it.
type Place = (Arc<File>, u64);

#[derive(Default)]
struct Inner {
    chunks: HashMap<ChunkHash, Vec<Place>>,
    /// The open temp file of each download, running or waiting for its next attempt.
    files: HashMap<PathBuf, Arc<File>>,
}

impl Inner {
    fn forget(&mut self, file: &Arc<File>) {
        self.chunks.retain(|_, v| {
            v.retain(|(f, _)| !Arc::ptr_eq(f, file));
            !v.is_empty()
        });
        self.files.retain(|_, f| !Arc::ptr_eq(f, file));
    }
}

/// Verified chunks in this node's temp files, servable before the file is complete.
#[derive(Default)]
pub struct PartialStore {
    inner: Mutex<Inner>,
}

impl PartialStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an attempt at the download whose temp file is `path`: what an earlier
    /// attempt registered is forgotten (this one registers what the file holds).
    pub fn open(&self, path: &Path, file: &Arc<File>) {
        let mut m = self.lock();
        if let Some(old) = m.files.get(path).cloned() {
            m.forget(&old);
        }
        m.files.insert(path.to_path_buf(), file.clone());
    }

    /// Records that `file` holds the verified chunk at `offset`.
    pub fn add(&self, hash: ChunkHash, file: &Arc<File>, offset: u64) {
        let mut m = self.lock();
        let v = m.chunks.entry(hash).or_default();
        if !v.iter().any(|(f, _)| Arc::ptr_eq(f, file)) {
            v.push((file.clone(), offset));
        }
    }

    /// Forgets every chunk of `file` (its download finished).
    pub fn remove_file(&self, file: &Arc<File>) {
        self.lock().forget(file);
    }

    /// The temp files of the downloads it holds.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().files.keys().cloned().collect()
    }

    /// Forgets the downloads whose temp file `keep` refuses; returns their paths.
    pub fn retain(&self, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let mut m = self.lock();
        let gone: Vec<(PathBuf, Arc<File>)> =
            m.files.iter().filter(|(p, _)| !keep(p)).map(|(p, f)| (p.clone(), f.clone())).collect();
        for (_, f) in &gone {
            m.forget(f);
        }
        gone.into_iter().map(|g| g.0).collect()
    }

    /// True if a download holds this chunk.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.lock().chunks.contains_key(hash)
    }

    /// Reads a chunk from a temp file. Not hashed again: only verified chunks are
    /// added, only this node writes its temp files, and the requester verifies.
    pub fn read(&self, hash: &ChunkHash, len: u32) -> Option<Vec<u8>> {
        let places = self.lock().chunks.get(hash).cloned()?;
        for (f, off) in places {
            if let Ok(buf) = read_vec_at(&f, len as usize, off) {
                return Some(buf);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_store_serves_verified_chunks_until_the_file_is_done() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(
            File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("t")).unwrap(),
        );
        f.write_all_at(b"helloworld", 0).unwrap();
        let s = PartialStore::default();
        let h = ChunkHash::of(b"world");
        s.add(h, &f, 5);
        assert_eq!(s.read(&h, 5).as_deref(), Some(&b"world"[..]));
        assert_eq!(s.read(&ChunkHash::of(b"hello"), 5), None, "only registered chunks");
        // Only verified chunks are added, so reads are not hashed again; a place the
        // file does not reach serves nothing.
        s.add(ChunkHash::of(b"past the end"), &f, 8);
        assert_eq!(s.read(&ChunkHash::of(b"past the end"), 5), None, "short read");
        s.remove_file(&f);
        assert_eq!(s.read(&h, 5), None);
    }

    #[test]
    fn a_waiting_download_serves_until_its_next_attempt_or_until_dropped() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.part");
        let open =
            || Arc::new(File::options().read(true).write(true).create(true).truncate(false).open(&path).unwrap());
        let s = PartialStore::default();
        let first = open();
        first.write_all_at(b"helloworld", 0).unwrap();
        s.open(&path, &first);
        let h = ChunkHash::of(b"hello");
        s.add(h, &first, 0);
        // The attempt ended without a source: nothing is removed, it still serves.
        assert_eq!(s.read(&h, 5).as_deref(), Some(&b"hello"[..]));
        // The next attempt opens the file again and registers what it finds.
        let second = open();
        s.open(&path, &second);
        assert!(!s.contains(&h), "the first attempt's registration is gone");
        s.add(h, &second, 0);
        assert_eq!(s.read(&h, 5).as_deref(), Some(&b"hello"[..]));
        assert!(s.retain(|p| p == path).is_empty(), "a download still planned is kept");
        assert_eq!(s.retain(|_| false), vec![path.clone()]);
        assert!(!s.contains(&h), "a download no longer planned is forgotten");
    }
}
