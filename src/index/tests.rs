//! The index's storage rules: sequences, chunk locations, peers' indexes.

use super::*;
use crate::ids::ShortId;

fn entry(path: &str, blocks: Vec<Block>) -> Entry {
    Entry {
        path: RelPath::parse(path).unwrap(),
        kind: EntryKind::File,
        size: blocks.iter().map(|b| b.len as u64).sum(),
        mode: 0o644,
        mtime: Mtime::default(),
        version: VersionVector::new().bump(ShortId(1)).unwrap(),
        modified_by: ShortId(1),
        deleted: false,
        blocks,
    }
}

#[test]
fn sequences_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path()).unwrap();
    let s = idx.share("docs").unwrap();
    let b1 = Block { hash: ChunkHash::of(b"one"), len: 3 };
    let b2 = Block { hash: ChunkHash::of(b"two"), len: 3 };
    assert_eq!(s.put(entry("a", vec![b1, b2]), 1, false).unwrap(), 1);
    assert_eq!(s.put(entry("b", vec![b2]), 2, false).unwrap(), 2);
    assert_eq!(s.put(entry("a", vec![b1]), 1, false).unwrap(), 3);
    let since: Vec<_> = s.since(0, u64::MAX, 100).unwrap().into_iter().map(|r| r.seq).collect();
    assert_eq!(since, vec![2, 3]);
    assert_eq!(s.since(2, u64::MAX, 100).unwrap().len(), 1);
    assert_eq!(s.since(0, 2, 100).unwrap().len(), 1, "only what is durable: up to 2");
    let locs = s.chunk_locations(&b2.hash).unwrap();
    assert_eq!(locs.iter().map(|l| (l.path.as_str(), l.offset)).collect::<Vec<_>>(), vec![("b", 0)]);
    assert_eq!(locs[0].file, Some(FileStamp { size: 3, mtime: Mtime::default(), ino: 2 }));
    assert_eq!(s.chunk_locations(&b1.hash).unwrap().len(), 1);
    // A touch (same blocks, new mtime) updates what the location remembers.
    let mut touched = entry("b", vec![b2]);
    touched.mtime = Mtime { secs: 7, nanos: 9 };
    s.put(touched, 2, false).unwrap();
    let stamp = FileStamp { size: 3, mtime: Mtime { secs: 7, nanos: 9 }, ino: 2 };
    assert_eq!(s.chunk_locations(&b2.hash).unwrap()[0].file, Some(stamp));
    // A location written before stamps held the inode (or anything) reads as unknown.
    let old = ChunkLocation::from_value(RelPath::parse("b").unwrap(), &5u64.to_be_bytes());
    assert_eq!((old.offset, old.file), (5, None));
    let v = ChunkLocation { path: RelPath::parse("b").unwrap(), offset: 5, file: Some(stamp) }.value();
    let older = ChunkLocation::from_value(RelPath::parse("b").unwrap(), &v[..28]);
    assert_eq!(older.file, None, "size and mtime without the inode");
    let id = s.index_id().unwrap();
    drop(s);
    assert_eq!(idx.share("docs").unwrap().index_id().unwrap(), id);
}

/// A share index in a temporary directory (kept alive by the returned guard).
fn share_index() -> (tempfile::TempDir, ShareIndex) {
    let dir = tempfile::tempdir().unwrap();
    let s = Index::open(dir.path()).unwrap().share("docs").unwrap();
    (dir, s)
}

#[test]
fn every_change_moves_the_sequence_or_the_remote_generation() {
    let (_dir, s) = share_index();
    let p = NodeId([7; 32]);
    let (seq0, gen0) = (s.max_seq().unwrap(), s.remote_generation());
    s.put(entry("a", vec![]), 1, false).unwrap();
    assert!(s.max_seq().unwrap() > seq0, "a local change");
    s.apply_remote(&p, 1, &[entry("x", vec![])], 1).unwrap();
    let gen1 = s.remote_generation();
    assert!(gen1 > gen0, "a peer's batch");
    s.apply_remote(&p, 1, &[], 1).unwrap();
    assert!(s.remote_generation() > gen1, "even an empty batch (its state changed)");
    let gen2 = s.remote_generation();
    s.forget_peer(&p).unwrap();
    assert!(s.remote_generation() > gen2, "forgetting a peer");
}

#[test]
fn remote_reset_on_new_index_id() {
    let (_dir, s) = share_index();
    let p = NodeId([7; 32]);
    s.apply_remote(&p, 11, &[entry("x", vec![]), entry("y", vec![])], 2).unwrap();
    assert_eq!(s.remote_state(&p).unwrap(), Some((11, 2)));
    assert_eq!(s.remote_for(&RelPath::parse("x").unwrap()).unwrap().len(), 1);
    s.apply_remote(&p, 12, &[entry("z", vec![])], 1).unwrap();
    assert_eq!(s.all_remote().unwrap().len(), 1);
    assert_eq!(s.remote_state(&p).unwrap(), Some((12, 1)));
}
