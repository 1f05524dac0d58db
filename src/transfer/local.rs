//! Reading chunks from the share's own files, where the index says they lie.

use crate::ids::ChunkHash;
use crate::index::{FileStamp, IndexError, ShareIndex};
use crate::relpath::RelPath;
use crate::util::{read_vec_at, safe_join};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

/// When a chunk read from a local file is hashed before it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Always: the bytes go into a file here and nothing checks them later.
    Always,
    /// Only if the file's size or mtime differs from what the index recorded: the
    /// bytes go to a peer, which verifies them anyway, and the scanner trusts size
    /// and mtime the same way. Saves a hash pass over everything a node uploads.
    IfChanged,
}

/// Reads chunks of one share, keeping each file it opened open for the next read
/// (a piece is usually many chunks of one file).
pub struct LocalChunks<'a> {
    root: &'a Path,
    index: &'a ShareIndex,
    verify: Verify,
    /// `None` where the file could not be opened.
    files: HashMap<RelPath, Option<Opened>>,
}

/// An open file and its size and mtime when opened.
struct Opened {
    file: File,
    stamp: FileStamp,
}

impl<'a> LocalChunks<'a> {
    /// A reader over the share at `root`.
    pub fn new(root: &'a Path, index: &'a ShareIndex, verify: Verify) -> Self {
        Self { root, index, verify, files: HashMap::new() }
    }

    /// The chunk's bytes from any file that holds it, or `None`.
    pub fn read(&mut self, hash: &ChunkHash, len: u32) -> Result<Option<Vec<u8>>, IndexError> {
        for loc in self.index.chunk_locations(hash)? {
            let (root, files) = (self.root, &mut self.files);
            let opened = files.entry(loc.path.clone()).or_insert_with(|| {
                let f = File::open(safe_join(root, &loc.path).ok()?).ok()?;
                let m = f.metadata().ok()?;
                Some(Opened { stamp: FileStamp::of(&m), file: f })
            });
            let Some(o) = opened else { continue };
            let Ok(buf) = read_vec_at(&o.file, len as usize, loc.offset) else {
                continue;
            };
            let trusted = self.verify == Verify::IfChanged && loc.file == Some(o.stamp);
            if trusted || ChunkHash::of(&buf) == *hash {
                return Ok(Some(buf));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShortId;
    use crate::index::{Block, Entry, EntryKind, Index, VersionVector};

    #[test]
    fn a_changed_file_is_verified_and_an_unchanged_one_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir(&root).unwrap();
        let idx = Index::open(&dir.path().join("idx")).unwrap();
        let s = idx.share("s").unwrap();
        std::fs::write(root.join("f"), b"hello world").unwrap();
        let m = std::fs::metadata(root.join("f")).unwrap();
        let hash = ChunkHash::of(b"hello");
        let entry = Entry {
            path: RelPath::parse("f").unwrap(),
            kind: EntryKind::File,
            size: 11,
            mode: 0o644,
            mtime: crate::index::Mtime::of(&m),
            version: VersionVector::new().bump(ShortId(1)).unwrap(),
            modified_by: ShortId(1),
            deleted: false,
            blocks: vec![Block { hash, len: 5 }, Block { hash: ChunkHash::of(b" world"), len: 6 }],
        };
        use std::os::unix::fs::MetadataExt;
        s.put(entry, m.ino(), false).unwrap();
        let read = |v| LocalChunks::new(&root, &s, v).read(&hash, 5).unwrap();
        assert_eq!(read(Verify::Always).as_deref(), Some(&b"hello"[..]));
        assert_eq!(read(Verify::IfChanged).as_deref(), Some(&b"hello"[..]));
        // Rewritten in place with the same size and mtime: the scanner would not
        // notice either, so a peer gets the bytes and its own check refuses them.
        std::fs::write(root.join("f"), b"HELLO world").unwrap();
        let f = File::options().write(true).open(root.join("f")).unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
        assert_eq!(read(Verify::Always), None);
        assert_eq!(read(Verify::IfChanged).as_deref(), Some(&b"HELLO"[..]));
        // A new mtime: verified, and refused.
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(read(Verify::IfChanged), None);
    }
}
