//! Paths relative to a share root: the only way to name a file inside a share, so
//! holding one means it was checked (no `..`, not absolute, not in `.meshsync/`).
//! Imports nothing of the crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A path relative to a share root: `/`-separated, never empty, absolute or `..`.
///
/// The only way to build one is [`RelPath::parse`], so holding one means it was checked.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

/// Why a path from a peer (or the disk) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Empty string.
    #[error("empty path")]
    Empty,
    /// Starts with `/`.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// Has a `..`, `.` or empty component.
    #[error("path {0:?} has a `..`, `.` or empty component")]
    BadComponent(String),
    /// Has a NUL or backslash.
    #[error("path {0:?} has a NUL or backslash")]
    BadChar(String),
    /// Lies under the share's private `.meshsync/` folder.
    #[error("path {0:?} is inside the private .meshsync folder")]
    Private(String),
}

/// Name of the per-share private folder (temp files, never replicated).
pub const PRIVATE_DIR: &str = ".meshsync";

impl RelPath {
    /// Checks and wraps a relative path.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_string()));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(PathError::BadChar(s.to_string()));
        }
        for c in s.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(PathError::BadComponent(s.to_string()));
            }
        }
        if s == PRIVATE_DIR || s.starts_with(".meshsync/") {
            return Err(PathError::Private(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, if this is not at the root.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map(|(_, n)| n).unwrap_or(&self.0)
    }

    /// Number of components (used to order directory creation and removal).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// A sibling path with another final component.
    pub fn with_file_name(&self, name: &str) -> Result<RelPath, PathError> {
        match self.parent() {
            Some(p) => RelPath::parse(&format!("{}/{}", p.0, name)),
            None => RelPath::parse(name),
        }
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        RelPath::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when a relative symlink at `link` pointing to `target` resolves inside the share.
pub fn symlink_stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    // Depth of the directory holding the link, then walk the target lexically.
    // `..` is allowed only as a leading run: after a name, the name could be a
    // symlink and `..` would then climb from wherever that link points.
    let mut depth = link.depth() as i64 - 1;
    let mut descended = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if descended => return false,
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {
                descended = true;
                depth += 1;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relpath_refusals() {
        assert!(RelPath::parse("a/b c/ü.txt").is_ok());
        assert_eq!(RelPath::parse(""), Err(PathError::Empty));
        assert!(matches!(RelPath::parse("/etc/passwd"), Err(PathError::Absolute(_))));
        assert!(matches!(RelPath::parse("a/../../x"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse(".."), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a//b"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a/./b"), Err(PathError::BadComponent(_))));
        assert!(matches!(RelPath::parse("a\\..\\b"), Err(PathError::BadChar(_))));
        assert!(matches!(RelPath::parse(".meshsync/tmp"), Err(PathError::Private(_))));
        assert!(RelPath::parse(".meshsyncx").is_ok());
    }

    #[test]
    fn relpath_deserialize_refuses_escape() {
        let bad: Result<RelPath, _> = serde_json::from_str("\"../x\"");
        assert!(bad.is_err());
    }

    #[test]
    fn symlink_escape_rules() {
        let l = RelPath::parse("a/b/link").unwrap();
        assert!(symlink_stays_inside(&l, "target"));
        assert!(symlink_stays_inside(&l, "../../x"));
        assert!(!symlink_stays_inside(&l, "../../../x"));
        assert!(!symlink_stays_inside(&l, "/etc"));
        let top = RelPath::parse("link").unwrap();
        assert!(!symlink_stays_inside(&top, ".."));
        assert!(!symlink_stays_inside(&top, "d/../f"), "`..` after a name may climb through a link");
        assert!(!symlink_stays_inside(&l, "s/../../../x"));
    }
}
