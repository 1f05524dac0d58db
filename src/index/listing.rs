//! This node's records one directory at a time: what the scanner compares a
//! directory's listing with, without holding the whole share's records at once.

use super::{codec, IndexError, LocalRecord, ShareIndex};
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
}
