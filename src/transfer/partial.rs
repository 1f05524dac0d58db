//! Chunks of running downloads that this node can already serve: verified pieces
//! of its temp files, relayed to peers before the file is complete.

use crate::ids::ChunkHash;
use crate::util::read_vec_at;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

/// Where a verified chunk sits: a temp file and an offset in it.
type Place = (Arc<File>, u64);

/// Verified chunks in this node's temp files, servable before the file is complete.
#[derive(Default)]
pub struct PartialStore {
    chunks: Mutex<HashMap<ChunkHash, Vec<Place>>>,
}

impl PartialStore {
    /// Records that `file` holds the verified chunk at `offset`.
    pub fn add(&self, hash: ChunkHash, file: &Arc<File>, offset: u64) {
        let mut m = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        let v = m.entry(hash).or_default();
        if !v.iter().any(|(f, _)| Arc::ptr_eq(f, file)) {
            v.push((file.clone(), offset));
        }
    }

    /// Forgets every chunk of `file` (its download ended).
    pub fn remove_file(&self, file: &Arc<File>) {
        let mut m = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| {
            v.retain(|(f, _)| !Arc::ptr_eq(f, file));
            !v.is_empty()
        });
    }

    /// True if a running download holds this chunk.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner()).contains_key(hash)
    }

    /// Reads a chunk from a temp file. Not hashed again: only verified chunks are
    /// added, only this node writes its temp files, and the requester verifies.
    pub fn read(&self, hash: &ChunkHash, len: u32) -> Option<Vec<u8>> {
        let places = self.chunks.lock().unwrap_or_else(|e| e.into_inner()).get(hash).cloned()?;
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
}
