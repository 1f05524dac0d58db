//! Trash-can versioning: what a peer's change replaces or deletes is kept in the
//! share's `.meshsync/versions/`, under its path with the time it was set aside
//! (`dir/report~20261204-201500.txt`), for `keep_days`; `meshsync versions` lists
//! them and `meshsync restore` puts one back, as a local edit that replicates.

use crate::relpath::{RelPath, PRIVATE_DIR};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The folder of kept versions in a share.
pub fn versions_dir(root: &Path) -> PathBuf {
    root.join(PRIVATE_DIR).join("versions")
}

const STAMP: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]-[hour][minute][second]");

/// The name a version of `rel` set aside at `at` is kept under, relative to the
/// versions folder: the stamp goes before the extension, so the file still opens
/// with the right program.
pub fn version_name(rel: &RelPath, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let stamp = t.format(&STAMP).unwrap_or_else(|_| "00000000-000000".into());
    let name = rel.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let file = format!("{stem}~{stamp}{ext}");
    match rel.parent() {
        Some(dir) => format!("{dir}/{file}"),
        None => file,
    }
}

/// One kept version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The path it was at in the share.
    pub path: String,
    /// When it was set aside (UTC).
    pub at: SystemTime,
    /// Where it is kept.
    pub file: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Reads a kept file's name back: the share path and when it was set aside.
fn parse(rel_in_versions: &str) -> Option<(String, SystemTime)> {
    let (dir, name) = match rel_in_versions.rfind('/') {
        Some(i) => (Some(&rel_in_versions[..i]), &rel_in_versions[i + 1..]),
        None => (None, rel_in_versions),
    };
    let tilde = name.rfind('~')?;
    let (stem, rest) = (&name[..tilde], &name[tilde + 1..]);
    let (stamp, ext) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
    let t = time::PrimitiveDateTime::parse(stamp, &STAMP).ok()?.assume_utc();
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?);
    let file = format!("{stem}{ext}");
    Some((dir.map_or(file.clone(), |d| format!("{d}/{file}")), at))
}

/// Keeps what is at `abs` (share path `rel`) as a version before a peer's change
/// replaces it: a hard link, so the data is not copied and the caller's atomic
/// rename over `abs` still replaces the file in one step.
pub fn keep_before_replace(root: &Path, rel: &RelPath, abs: &Path) -> std::io::Result<()> {
    let to = fresh_path(root, rel)?;
    match std::fs::hard_link(abs, &to) {
        Ok(()) => Ok(()),
        // A file system without hard links: a copy (the data is read once more).
        Err(_) => std::fs::copy(abs, &to).map(drop),
    }
}

/// Moves what is at `abs` (share path `rel`) into the versions instead of deleting it.
pub fn keep_instead_of_delete(root: &Path, rel: &RelPath, abs: &Path) -> std::io::Result<()> {
    let to = fresh_path(root, rel)?;
    std::fs::rename(abs, to)
}

/// A free path for a version of `rel` set aside now, its folders made.
fn fresh_path(root: &Path, rel: &RelPath) -> std::io::Result<PathBuf> {
    let base = versions_dir(root).join(version_name(rel, SystemTime::now()));
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut p = base.clone();
    let mut n = 1;
    // Two versions set aside within one second.
    while p.symlink_metadata().is_ok() {
        p = base.with_file_name(format!("{}-{n}", base.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()));
        n += 1;
    }
    Ok(p)
}

/// Every kept version (of `path` only, if given), oldest first.
pub fn list(root: &Path, path: Option<&str>) -> std::io::Result<Vec<Version>> {
    let dir = versions_dir(root);
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for ent in rd.flatten() {
            let p = ent.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            let Some(rel) = p.strip_prefix(&dir).ok().and_then(|r| r.to_str()) else { continue };
            // A second version within one second ends in `-N`: drop it to parse.
            let base = rel.rsplit_once('-').filter(|(_, n)| n.parse::<u32>().is_ok()).map_or(rel, |(b, _)| b);
            let Some((orig, at)) = parse(base).or_else(|| parse(rel)) else { continue };
            if path.is_none_or(|want| want == orig) {
                out.push(Version { path: orig, at, file: p, size: meta.len() });
            }
        }
    }
    // Within one second, `name-1` was set aside after `name`.
    out.sort_by(|a, b| (a.at, &a.path, &a.file).cmp(&(b.at, &b.path, &b.file)));
    Ok(out)
}

/// Removes versions set aside before `now - keep`; returns how many.
pub fn clean(root: &Path, keep: Duration, now: SystemTime) -> std::io::Result<usize> {
    let mut n = 0;
    for v in list(root, None)? {
        if now.duration_since(v.at).unwrap_or_default() > keep {
            std::fs::remove_file(&v.file)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Why a version could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Nothing kept of that path (at or before that time).
    #[error("no kept version of {0}{1}; `meshsync versions` lists what is kept")]
    NotFound(String, String),
    /// The path is not a share path.
    #[error(transparent)]
    Path(#[from] crate::relpath::PathError),
    /// The copy failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Puts the newest version of `path` kept at or before `at` (the newest of all
/// without) back at its path, through a temp file and a rename: the share's watch
/// sees a new file there, which replicates like any local edit. Returns it.
pub fn restore(root: &Path, path: &str, at: Option<SystemTime>) -> Result<Version, RestoreError> {
    let rel = RelPath::parse(path)?;
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| RestoreError::Io(p, e)
    };
    let found = list(root, Some(rel.as_str()))
        .map_err(io(&versions_dir(root)))?
        .into_iter()
        .rfind(|v| at.is_none_or(|t| v.at <= t));
    let Some(v) = found else {
        let when = at.map(|_| " at or before that time".to_string()).unwrap_or_default();
        return Err(RestoreError::NotFound(path.to_string(), when));
    };
    let dest = crate::util::safe_join(root, &rel).map_err(io(root))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = root.join(PRIVATE_DIR).join("tmp").join(format!("restore-{:016x}.part", rand::random::<u64>()));
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(&v.file, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn names_keep_the_extension_and_read_back() {
        let rel = RelPath::parse("dir/report.txt").unwrap();
        let n = version_name(&rel, at(1_700_000_000));
        assert_eq!(n, "dir/report~20231114-221320.txt");
        assert_eq!(parse(&n), Some(("dir/report.txt".into(), at(1_700_000_000))));
        let bare = RelPath::parse("Makefile").unwrap();
        assert_eq!(parse(&version_name(&bare, at(60))), Some(("Makefile".into(), at(60))));
        assert_eq!(parse("no-stamp.txt"), None);
    }

    #[test]
    fn kept_versions_are_listed_restored_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        let rel = RelPath::parse("d/f.txt").unwrap();
        let abs = root.join("d/f.txt");
        std::fs::write(&abs, b"one").unwrap();
        keep_before_replace(root, &rel, &abs).unwrap();
        std::fs::write(root.join("d/new"), b"two").unwrap();
        std::fs::rename(root.join("d/new"), &abs).unwrap();
        keep_instead_of_delete(root, &rel, &abs).unwrap();
        assert!(!abs.exists());
        let kept = list(root, Some("d/f.txt")).unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(list(root, Some("other")).unwrap().is_empty());
        // The newest comes back: "two", the one deleted.
        let v = restore(root, "d/f.txt", None).unwrap();
        assert_eq!(std::fs::read(&abs).unwrap(), b"two");
        assert_eq!(v.size, 3);
        assert!(matches!(restore(root, "d/f.txt", Some(at(1))), Err(RestoreError::NotFound(..))));
        assert!(matches!(restore(root, "../x", None), Err(RestoreError::Path(_))));
        assert_eq!(clean(root, Duration::from_secs(3600), SystemTime::now()).unwrap(), 0, "young");
        let later = SystemTime::now() + Duration::from_secs(7200);
        assert_eq!(clean(root, Duration::from_secs(3600), later).unwrap(), 2);
        assert!(list(root, None).unwrap().is_empty());
    }
}
