//! This node's records one directory at a time: what the scanner compares a
//! directory's listing with, without holding the whole share's records at once.

use super::{codec, Entry, IndexError, LocalRecord, ShareIndex};
use crate::ids::NodeId;
use crate::relpath::RelPath;
use std::collections::HashMap;

/// What the index holds of one name directly below a directory.
#[derive(Debug, Default)]
pub struct Child {
    /// This node's record of the name itself, if any.
    pub record: Option<LocalRecord>,
    /// Records lie below the name (it is, or was, a directory).
    pub below: bool,
}

impl ShareIndex {
    /// The names directly below directory `dir` (`""`: the share's root) that the
    /// index knows, with their records. Records deeper down are not read: past the
    /// first one below a name, the listing jumps over the rest of them.
    pub fn children(&self, dir: &str) -> Result<HashMap<String, Child>, IndexError> {
        let prefix = if dir.is_empty() { Vec::new() } else { format!("{dir}/").into_bytes() };
        let mut out: HashMap<String, Child> = HashMap::new();
        let mut from = prefix.clone();
        'seek: loop {
            for kv in self.inner.local.range(from.as_slice()..) {
                let (k, v) = kv?;
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else { break 'seek };
                let (name, deeper) = match rest.iter().position(|&b| b == b'/') {
                    Some(i) => (&rest[..i], true),
                    None => (rest, false),
                };
                // Keys are paths, always UTF-8.
                let Ok(name) = std::str::from_utf8(name) else { continue };
                let child = out.entry(name.to_string()).or_default();
                if deeper {
                    child.below = true;
                    // Everything below `name/` sorts before `name0` ('0' follows '/').
                    from = [prefix.as_slice(), name.as_bytes(), b"0"].concat();
                    continue 'seek;
                }
                child.record = Some(codec::decode(&v)?);
            }
            break;
        }
        Ok(out)
    }

    /// Every record of this node, in path order, read as it goes.
    pub fn local_records(&self) -> impl Iterator<Item = Result<LocalRecord, IndexError>> + '_ {
        self.inner.local.iter().values().map(|v| Ok(codec::decode(&v?)?))
    }

    /// Every peer's entry, in path order (then by peer), read as it goes.
    pub fn remote_entries(&self) -> impl Iterator<Item = Result<(NodeId, Entry), IndexError>> + '_ {
        self.inner.remote.iter().filter_map(|kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            // The path, a 0 byte and the peer's id.
            if k.len() < 33 {
                return None;
            }
            let id: [u8; 32] = k[k.len() - 32..].try_into().ok()?;
            Some(codec::decode(&v).map(|e| (NodeId(id), e)).map_err(Into::into))
        })
    }

    /// Up to `limit` paths that peers hold entries of, in order, after `after`
    /// (from the first if `None`): a walk over every peer's paths a page at a time.
    pub fn remote_paths(&self, after: Option<&RelPath>, limit: usize) -> Result<Vec<RelPath>, IndexError> {
        // Keys are the path, a 0 byte and the peer's id: past every key of `after`.
        let from = after.map_or_else(Vec::new, |p| [p.as_str().as_bytes(), &[1]].concat());
        let mut out: Vec<RelPath> = Vec::new();
        for k in self.inner.remote.range(from..).keys() {
            let k = k?;
            let Some(path) = k.len().checked_sub(33).and_then(|n| std::str::from_utf8(&k[..n]).ok()) else { continue };
            if out.last().is_some_and(|l| l.as_str() == path) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            if let Ok(p) = RelPath::parse(path) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::ShortId;
    use crate::index::{Entry, EntryKind, Index, Mtime, VersionVector};
    use crate::relpath::RelPath;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::parse(path).unwrap(),
            kind,
            size: 0,
            mode: 0o644,
            mtime: Mtime::default(),
            version: VersionVector::new().bump(ShortId(1)).unwrap(),
            modified_by: ShortId(1),
            deleted: false,
            blocks: vec![],
        }
    }

    #[test]
    fn children_are_the_names_one_level_down_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = Index::open(dir.path()).unwrap().share("s").unwrap();
        // "a-1" and "a.txt" sort between "a" and "a/...".
        for (p, k) in [
            ("a", EntryKind::Dir),
            ("a-1", EntryKind::File),
            ("a.txt", EntryKind::File),
            ("a/x", EntryKind::File),
            ("a/y/z", EntryKind::File),
            ("b/deep/file", EntryKind::File),
            ("c", EntryKind::File),
        ] {
            s.put(entry(p, k), 1, false).unwrap();
        }
        let root = s.children("").unwrap();
        let mut names: Vec<(&str, bool, bool)> =
            root.iter().map(|(n, c)| (n.as_str(), c.record.is_some(), c.below)).collect();
        names.sort();
        let want =
            [("a", true, true), ("a-1", true, false), ("a.txt", true, false), ("b", false, true), ("c", true, false)];
        assert_eq!(names, want, "b has no record of its own, only records below it");
        assert_eq!(root["a.txt"].record.as_ref().unwrap().entry.path.as_str(), "a.txt");
        let a = s.children("a").unwrap();
        let mut names: Vec<(&str, bool, bool)> =
            a.iter().map(|(n, c)| (n.as_str(), c.record.is_some(), c.below)).collect();
        names.sort();
        assert_eq!(names, [("x", true, false), ("y", false, true)]);
        assert!(s.children("c").unwrap().is_empty());
        assert!(s.children("nothing").unwrap().is_empty());
    }

    #[test]
    fn remote_paths_come_a_page_at_a_time_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Index::open(dir.path()).unwrap().share("s").unwrap();
        let (p, q) = (crate::ids::NodeId([1; 32]), crate::ids::NodeId([2; 32]));
        let names = ["a", "a-1", "a/b", "b", "c"];
        let entries: Vec<Entry> = names.iter().map(|n| entry(n, EntryKind::File)).collect();
        s.apply_remote(&p, 1, &entries, 5).unwrap();
        s.apply_remote(&q, 1, &entries[..3], 3).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s.remote_paths(after.as_ref(), 2).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().cloned();
            seen.extend(page.into_iter().map(|p| p.as_str().to_string()));
        }
        assert_eq!(seen, names);
        let all: Vec<(String, u8)> =
            s.remote_entries().map(|r| r.unwrap()).map(|(id, e)| (e.path.as_str().to_string(), id.0[0])).collect();
        assert_eq!(all.len(), 8);
        assert_eq!(all[..2], [("a".to_string(), 1), ("a".to_string(), 2)], "in path order, then by peer");
    }
}
