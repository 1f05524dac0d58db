//! Every version ever written, and which of them a user knowingly replaced or
//! deleted, so that a test can count the writes a mesh lost.
//!
//! Each write has unique content (a label line, then filler derived from it). A
//! modify swaps the new file in with `renameat2(RENAME_EXCHANGE)` and a delete
//! moves the file out with `rename`, so the harness holds exactly the content it
//! replaced, even when a daemon changed the file an instant before: that content,
//! and only that, is "replaced on purpose". Every other version must survive
//! somewhere: as the content of a path, as a conflict copy, or in the share's
//! `.meshsync/versions/` once the daemon keeps one.

use super::tree::{self, Tree};
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One version written by the test.
#[derive(Clone, Debug)]
pub struct Written {
    /// Who wrote it, e.g. "seed 7 op 3 n1".
    pub label: String,
    /// Where it was written.
    pub path: String,
    /// Its content's blake3.
    pub hash: blake3::Hash,
    /// The operation that replaced or deleted it knowingly, if one did.
    pub replaced_by: Option<String>,
}

/// What [`Ledger::audit`] found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Versions written.
    pub written: usize,
    /// Of those, knowingly replaced or deleted.
    pub replaced: usize,
    /// Of the rest, found as a file (path or conflict copy).
    pub present: usize,
    /// Found only in `.meshsync/versions/`.
    pub in_versions: usize,
    /// Neither replaced nor found anywhere: lost writes.
    pub lost: Vec<Written>,
    /// Files whose content no write made (a mix of versions, a torn file).
    pub unknown: Vec<String>,
}

/// The record of a test's writes.
#[derive(Default)]
pub struct Ledger {
    writes: Vec<Written>,
    by_hash: HashMap<blake3::Hash, usize>,
    /// Content replaced or deleted that no write made.
    strange: Vec<String>,
}

/// The content of the write labelled `label`: the label, a newline, then `len`
/// bytes of filler from a generator seeded with the label.
pub fn body(label: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{label}\n").into_bytes();
    let at = v.len();
    v.resize(at + len, 0);
    let seed = blake3::hash(label.as_bytes());
    rand::rngs::StdRng::from_seed(*seed.as_bytes()).fill_bytes(&mut v[at..]);
    v
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (f, t) = (cpath(from)?, cpath(to)?);
    // SAFETY: two NUL-terminated paths that live across the call; AT_FDCWD bases.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn parent_dirs(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(p)
}

fn gone(e: &io::Error) -> bool {
    // ENOENT: the path (or a folder above it) is not there; ENOTDIR: a folder became a file.
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

impl Ledger {
    fn record(&mut self, label: &str, path: &str, content: &[u8]) {
        let hash = blake3::hash(content);
        self.by_hash.insert(hash, self.writes.len());
        self.writes.push(Written { label: label.into(), path: path.into(), hash, replaced_by: None });
    }

    /// Marks the content at `held` (moved out of a share by `op`) as knowingly
    /// replaced, then removes it.
    fn retire(&mut self, held: &Path, op: &str) -> io::Result<()> {
        let content = std::fs::read(held)?;
        std::fs::remove_file(held)?;
        match self.by_hash.get(&blake3::hash(&content)) {
            Some(&i) => {
                self.writes[i].replaced_by.get_or_insert_with(|| op.to_string());
            }
            None => self.strange.push(format!(
                "{op} replaced content no write made: {} bytes, starting {:?}",
                content.len(),
                String::from_utf8_lossy(&content[..content.len().min(60)])
            )),
        }
        Ok(())
    }

    /// Creates `rel` under `root` with new content (through `scratch`, on the same
    /// filesystem). False, and nothing written, if the path exists.
    pub fn create(&mut self, root: &Path, scratch: &Path, rel: &str, label: &str, len: usize) -> io::Result<bool> {
        let content = body(label, len);
        let tmp = scratch.join("new");
        std::fs::write(&tmp, &content)?;
        let to = parent_dirs(root, rel)?;
        match renameat2(&tmp, &to, libc::RENAME_NOREPLACE) {
            Ok(()) => {
                self.record(label, rel, &content);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) || gone(&e) => {
                std::fs::remove_file(&tmp)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the file at `rel` with new content in one atomic swap. False, and
    /// nothing written, if there is no file there.
    pub fn modify(&mut self, root: &Path, scratch: &Path, rel: &str, label: &str, len: usize) -> io::Result<bool> {
        self.swap_in(root, scratch, rel, label, &body(label, len))
    }

    /// Changes a little of the file at `rel`: the label line replaces its first
    /// line and 4 KiB of filler from the label replace 4 KiB at a place the label
    /// picks, the rest stays (a big file's new entry goes to peers as runs of the
    /// version they hold). Swapped in as [`Ledger::modify`] does. False, and nothing
    /// written, if there is no file there.
    pub fn patch(&mut self, root: &Path, scratch: &Path, rel: &str, label: &str) -> io::Result<bool> {
        let old = match std::fs::read(root.join(rel)) {
            Ok(b) => b,
            Err(e) if gone(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(false),
            Err(e) => return Err(e),
        };
        let rest = old.iter().position(|b| *b == b'\n').map_or(&old[..], |i| &old[i + 1..]);
        let mut content = format!("{label}\n").into_bytes();
        let head = content.len();
        content.extend_from_slice(rest);
        let fill = body(label, 4096);
        let seed = blake3::hash(label.as_bytes());
        let at = head
            + (u64::from_le_bytes(seed.as_bytes()[..8].try_into().unwrap_or_default()) as usize) % rest.len().max(1);
        let end = (at + 4096).min(content.len());
        content[at..end].copy_from_slice(&fill[fill.len() - (end - at)..]);
        self.swap_in(root, scratch, rel, label, &content)
    }

    /// Swaps `content` in at `rel` (if a file is there) and retires what it replaced.
    fn swap_in(&mut self, root: &Path, scratch: &Path, rel: &str, label: &str, content: &[u8]) -> io::Result<bool> {
        let tmp = scratch.join("new");
        std::fs::write(&tmp, content)?;
        let at = root.join(rel);
        if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&tmp)?;
            return Ok(false);
        }
        match renameat2(&tmp, &at, libc::RENAME_EXCHANGE) {
            Ok(()) => {
                self.record(label, rel, content);
                self.retire(&tmp, label)?;
                Ok(true)
            }
            Err(e) if gone(&e) => {
                std::fs::remove_file(&tmp)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the file at `rel` (moved out to `scratch`, then removed). False if
    /// there was none.
    pub fn delete(&mut self, root: &Path, scratch: &Path, rel: &str, op: &str) -> io::Result<bool> {
        let held = scratch.join("deleted");
        match std::fs::rename(root.join(rel), &held) {
            Ok(()) => {
                if std::fs::symlink_metadata(&held)?.is_dir() {
                    // Never asked for (only files are picked), but a folder can take a
                    // file's place between the pick and the rename: put it back.
                    std::fs::rename(&held, root.join(rel))?;
                    return Ok(false);
                }
                self.retire(&held, op)?;
                Ok(true)
            }
            Err(e) if gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves `from` to `to` (which must not exist). False if `from` is gone or `to` exists.
    pub fn rename(&mut self, root: &Path, from: &str, to: &str) -> io::Result<bool> {
        let dst = parent_dirs(root, to)?;
        match renameat2(&root.join(from), &dst, libc::RENAME_NOREPLACE) {
            Ok(()) => Ok(true),
            Err(e) if gone(&e) || e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Versions written so far.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True before the first write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Looks for every version in the final trees (`trees`) and the daemons'
    /// kept versions (`versions`, the `.meshsync/versions/` folders).
    pub fn audit(&self, trees: &[Tree], versions: &[Tree]) -> Audit {
        let mut a = Audit { written: self.writes.len(), unknown: self.strange.clone(), ..Audit::default() };
        let mut seen = vec![false; self.writes.len()];
        for t in trees {
            for (p, h) in tree::files(t) {
                match self.by_hash.get(h) {
                    Some(&i) => seen[i] = true,
                    None => a.unknown.push(format!("{p}: content no write made")),
                }
            }
        }
        let kept: std::collections::HashSet<blake3::Hash> =
            versions.iter().flat_map(|t| tree::files(t).map(|(_, h)| *h)).collect();
        for (i, w) in self.writes.iter().enumerate() {
            if w.replaced_by.is_some() {
                a.replaced += 1;
            } else if seen[i] {
                a.present += 1;
            } else if kept.contains(&w.hash) {
                a.in_versions += 1;
            } else {
                a.lost.push(w.clone());
            }
        }
        a.unknown.sort();
        a.unknown.dedup();
        a
    }
}
