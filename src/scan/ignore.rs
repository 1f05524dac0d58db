//! Which paths are never replicated: partial downloads, editor swap files, the
//! private `.meshsync/` folder, and the share's configured patterns.

use globset::{GlobSet, GlobSetBuilder};

/// Names of files still being written by common tools (SFTP clients, browsers, editors).
pub const PARTIAL_PATTERNS: &[&str] = &["*.filepart", "*.part", "*.crdownload", "*.tmp", "~$*", ".*.swp", ".*.swx"];

/// A compiled set of ignore patterns.
#[derive(Clone, Debug)]
pub struct Ignore {
    set: GlobSet,
}

impl Ignore {
    /// Builds from the built-in partial patterns plus `extra`.
    pub fn new(extra: &[String]) -> Result<Self, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for p in PARTIAL_PATTERNS.iter().copied().chain(extra.iter().map(|s| s.as_str())) {
            b.add(crate::config::ignore_glob(p)?);
        }
        Ok(Self { set: b.build()? })
    }

    /// True when the path or a directory it is in is ignored: the walker never
    /// enters an ignored directory, and the watcher must not pick its contents up.
    pub fn covers(&self, rel: &str) -> bool {
        rel.match_indices('/').any(|(i, _)| self.is_ignored(&rel[..i])) || self.is_ignored(rel)
    }

    /// True when a relative path (or its file name) matches.
    pub fn is_ignored(&self, rel: &str) -> bool {
        if rel == ".meshsync" || rel.starts_with(".meshsync/") {
            return true;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.set.is_match(rel) || self.set.is_match(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_and_custom() {
        let i = Ignore::new(&["cache".into(), "*.log".into(), "build/out/*".into()]).unwrap();
        for p in [
            "a/report.pdf.filepart",
            "x.part",
            "d/f.crdownload",
            "t.tmp",
            "~$doc.docx",
            ".f.txt.swp",
            ".meshsync/tmp/x",
            "cache",
            "a/b.log",
            "build/out/x",
        ] {
            assert!(i.is_ignored(p), "{p}");
        }
        for p in ["report.pdf", "a/partial.txt", "d/cache.txt", "build/x"] {
            assert!(!i.is_ignored(p), "{p}");
        }
    }

    #[test]
    fn a_trailing_slash_means_the_directory_unless_escaped() {
        let i = Ignore::new(&["build/".into(), "odd\\\\/".into()]).unwrap();
        assert!(i.covers("build/x") && i.covers("a/build"));
        assert!(i.covers("odd\\/f"), "an escaped backslash before the slash stays a backslash");
        // Was "dangling '\\'" after the slash was cut, for a pattern the config had accepted.
        let escaped = Ignore::new(&["a\\/".into()]).unwrap();
        assert!(!escaped.covers("a") && !escaped.covers("a/x"), "`a\\/` names a file `a/`, which cannot exist");
    }
}
