//! A share folder as the user sees it (the daemon's `.meshsync/` left out), to compare
//! nodes' copies.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The daemon's private folder in a share's root.
pub const PRIVATE: &str = ".meshsync";

/// One path of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A directory.
    Dir,
    /// A regular file: its content's blake3, length and permission bits.
    File { hash: blake3::Hash, len: u64, mode: u32 },
    /// A symbolic link and its target.
    Link(String),
}

/// Relative `/`-separated path -> what is there.
pub type Tree = BTreeMap<String, Item>;

/// Reads the tree below `root`, leaving out `root/.meshsync`. Fails if something
/// moves under it (a daemon writing): callers poll again.
pub fn snapshot(root: &Path) -> io::Result<Tree> {
    let mut out = Tree::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

/// Like [`snapshot`], for a folder that may not exist (empty then).
pub fn snapshot_if_any(root: &Path) -> io::Result<Tree> {
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tree::new()),
        _ => snapshot(root),
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Tree) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if prefix.is_empty() && name == PRIVATE {
            continue;
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let ft = e.file_type()?;
        let p = e.path();
        if ft.is_dir() {
            out.insert(rel.clone(), Item::Dir);
            walk(&p, &rel, out)?;
        } else if ft.is_symlink() {
            out.insert(rel, Item::Link(std::fs::read_link(&p)?.to_string_lossy().to_string()));
        } else {
            let meta = e.metadata()?;
            let mut h = blake3::Hasher::new();
            h.update_reader(std::fs::File::open(&p)?)?;
            out.insert(
                rel,
                Item::File { hash: h.finalize(), len: meta.len(), mode: meta.permissions().mode() & 0o7777 },
            );
        }
    }
    Ok(())
}

/// What differs between two trees, one line per path (at most 20 lines).
pub fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => out.push(format!("{p}: only on the first ({x:?})")),
            Some(y) if y != x => out.push(format!("{p}: {x:?} against {y:?}")),
            _ => {}
        }
    }
    for (p, y) in b {
        if !a.contains_key(p) {
            out.push(format!("{p}: only on the second ({y:?})"));
        }
    }
    if out.len() > 20 {
        let n = out.len();
        out.truncate(20);
        out.push(format!("... {} more", n - 20));
    }
    out
}

/// Regular files of a tree.
pub fn files(t: &Tree) -> impl Iterator<Item = (&String, &blake3::Hash)> {
    t.iter().filter_map(|(p, i)| match i {
        Item::File { hash, .. } => Some((p, hash)),
        _ => None,
    })
}

/// True for the name the daemon gives a losing version.
pub fn is_conflict_copy(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|n| n.contains(".sync-conflict-"))
}
