//! Disk space for a download: what a file version needs on disk (its data, not the
//! all-zero chunks, which stay holes), what its temp file already has, and
//! reserving exactly that, so a download never claims more than it will write.

use super::{ApplyError, ShareCtx};
use crate::ids::ChunkHash;
use crate::index::Entry;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Characters of a download temp file's name before `.part` (hex of a hash).
const TEMP_NAME_LEN: usize = 32;
/// Folders the temp files are spread over (`.meshsync/tmp/0` to `f`, by the
/// name's first hex digit). Creating a file takes its folder's lock: with every
/// temp file in one folder, the eight batches of small files placed at once
/// spent a fifth of the receiver's CPU spinning on that lock (`perf record -a -g`,
/// 20,000 x 4 KiB: `rwsem_spin_on_owner` under `openat`).
const TEMP_DIRS: usize = 16;

impl ShareCtx {
    /// The temp file a download of `target` is assembled in: the same for every
    /// attempt at that version, so an attempt resumes from the last one.
    pub fn temp_path(&self, target: &Entry) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(target.path.as_str().as_bytes());
        for b in &target.blocks {
            h.update(&b.hash.0);
        }
        let hex = h.finalize().to_hex();
        self.private_dir().join(&hex[..1]).join(format!("{}.part", &hex[..TEMP_NAME_LEN]))
    }

    /// The folders temp files are spread over (see [`TEMP_DIRS`]).
    fn temp_dirs(&self) -> impl Iterator<Item = PathBuf> {
        let dir = self.private_dir();
        (0..TEMP_DIRS).map(move |i| dir.join(format!("{i:x}")))
    }

    /// Makes every folder temp files go in (a batch writes into any of them); the
    /// share's folder itself is never made (see `create_below_root`).
    pub(super) fn make_temp_dirs(&self) -> Result<(), ApplyError> {
        self.temp_dirs().filter(|d| !d.is_dir()).try_for_each(|d| self.create_below_root(&d))
    }

    /// The download temp files there are now: those on disk and those a kept
    /// download holds open. Usually none, and then no plan is needed to know which
    /// to keep.
    pub fn temp_files(&self) -> std::io::Result<HashSet<PathBuf>> {
        let mut found: HashSet<PathBuf> = self.partial.paths().into_iter().collect();
        // The spread folders, and the folder itself (where older versions put them).
        for d in std::iter::once(self.private_dir()).chain(self.temp_dirs()) {
            found.extend(temp_files_in(&d)?);
        }
        Ok(found)
    }

    /// Removes the temp files of `present` (see [`Self::temp_files`]) that are not
    /// in `planned` (those of a download the share would start now), and forgets
    /// what they served: versions replaced or deleted since, or no longer wanted
    /// here. Run while no download of the share runs. Returns the count and bytes
    /// removed.
    pub fn remove_stale_temp(
        &self,
        present: &HashSet<PathBuf>,
        planned: &HashSet<PathBuf>,
    ) -> std::io::Result<(usize, u64)> {
        self.partial.retain(|p| planned.contains(p));
        let (mut count, mut bytes) = (0, 0);
        for path in present.difference(planned) {
            let size = allocated(path);
            match std::fs::remove_file(path) {
                Ok(()) => (count, bytes) = (count + 1, bytes + size),
                // A kept download's file that is gone already.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok((count, bytes))
    }
}

/// The download temp files in `dir` (none if it is not there).
fn temp_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        // Only download temp files: a restore's copy in progress is named otherwise.
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".part"))
            .is_some_and(|stem| stem.len() == TEMP_NAME_LEN && stem.bytes().all(|b| b.is_ascii_hexdigit()));
        if ours {
            out.push(path);
        }
    }
    Ok(out)
}

/// The byte ranges (offset, length) of `target` that hold data, in file order,
/// adjacent ones merged. A chunk counts as zeros (a hole: `write_chunk` skips it)
/// when it occurs more than once in the file and hashes as zeros of its length, as
/// runs of zeros in a sparse file do; one that occurs once counts as data, since
/// hashing a zero buffer for every chunk length would cost a pass over the file.
pub(super) fn data_runs(target: &Entry) -> Vec<(u64, u64)> {
    let mut seen: HashMap<ChunkHash, (u32, u32)> = HashMap::new();
    for b in &target.blocks {
        seen.entry(b.hash).or_insert((b.len, 0)).1 += 1;
    }
    let zeros: HashSet<ChunkHash> = seen
        .into_iter()
        .filter(|(hash, (len, count))| *count > 1 && ChunkHash::of(&vec![0u8; *len as usize]) == *hash)
        .map(|(hash, _)| hash)
        .collect();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (off, b) in target.block_offsets().filter(|(_, b)| !zeros.contains(&b.hash)) {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == off => *len += b.len as u64,
            _ => runs.push((off, b.len as u64)),
        }
    }
    runs
}

/// Bytes of disk a file has allocated (0 if there is none).
pub(super) fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.blocks().saturating_mul(512)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShortId;
    use crate::index::{Block, EntryKind, Mtime, VersionVector};
    use crate::relpath::RelPath;

    fn entry(blocks: Vec<Block>) -> Entry {
        Entry {
            path: RelPath::parse("f").unwrap(),
            kind: EntryKind::File,
            size: blocks.iter().map(|b| b.len as u64).sum(),
            mode: 0o644,
            mtime: Mtime::default(),
            version: VersionVector::from_pairs([(ShortId(1), 1)]),
            modified_by: ShortId(1),
            deleted: false,
            blocks,
        }
    }

    fn block(data: &[u8]) -> Block {
        Block { hash: ChunkHash::of(data), len: data.len() as u32 }
    }

    #[test]
    fn runs_of_zeros_are_holes_and_data_is_merged() {
        let zeros = block(&[0u8; 4096]);
        let (a, b, c) = (block(b"first"), block(b"second"), block(b"third"));
        let e = entry(vec![a, b, zeros, zeros, zeros, c, zeros]);
        assert_eq!(data_runs(&e), vec![(0, 11), (11 + 3 * 4096, 5)]);
        // A single zero chunk is not worth a hash of its own: counted as data.
        let once = entry(vec![a, zeros]);
        assert_eq!(data_runs(&once), vec![(0, 5 + 4096)]);
        // A chunk that repeats but is not zeros is data at every place.
        let twice = entry(vec![a, a]);
        assert_eq!(data_runs(&twice), vec![(0, 10)]);
        assert!(data_runs(&entry(vec![])).is_empty());
    }

    #[test]
    fn only_download_temp_files_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(temp_files_in(&dir.path().join("absent")).unwrap().is_empty());
        let ours = dir.path().join(format!("{}.part", "0a".repeat(TEMP_NAME_LEN / 2)));
        for name in [
            ours.file_name().unwrap().to_str().unwrap(),
            "restore-copy.part",
            "0123456789abcdef0123456789abcdeg.part",
            "0123456789abcdef0123456789abcdef.tmp",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(temp_files_in(dir.path()).unwrap(), vec![ours]);
    }
}
