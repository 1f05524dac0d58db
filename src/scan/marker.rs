//! The share marker: `.meshsync/share.toml` in a share's root says "this folder is
//! share S of mesh M". A root without it (an unmounted disk shows an empty mount
//! point), with another share's marker, or on another filesystem than the one this
//! node recorded, is not scanned: read as it is, it would announce every file deleted.

use crate::index::RootRecord;
use crate::relpath::PRIVATE_DIR;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// File name of the marker inside the share's private folder.
pub const MARKER_FILE: &str = "share.toml";

/// What the marker file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The mesh: hex blake3 of its CA certificate.
    pub mesh: String,
    /// The share's name.
    pub share: String,
    /// Random id given when the marker was written: a copy of another folder's
    /// marker, or the same share added twice, is told apart.
    pub id: String,
}

/// Why a share's root is not scanned; the share pauses until it is resolved.
#[derive(Debug, thiserror::Error)]
pub enum RootProblem {
    /// The folder is not there.
    #[error("share folder {0} is missing (unmounted disk?); nothing is deleted; mount or restore it, or confirm a new location with `meshsync share resume {1}`")]
    Missing(PathBuf, String),
    /// Something else is at the path.
    #[error("share path {0} is not a directory; nothing is deleted")]
    NotADirectory(PathBuf),
    /// It cannot be read.
    #[error("share folder {0} cannot be read: {1}")]
    Unreadable(PathBuf, std::io::Error),
    /// The marker is not there: an empty mount point, or a folder replaced.
    #[error("share folder {0} has no {PRIVATE_DIR}/{MARKER_FILE} marker (unmounted disk, or the folder was replaced); nothing is deleted; if this is the right folder, run `meshsync share resume {1}`")]
    NoMarker(PathBuf, String),
    /// The marker does not parse.
    #[error("share marker {0} is damaged ({1}); if this is the right folder, run `meshsync share resume {2}`")]
    BadMarker(PathBuf, String, String),
    /// The folder belongs to another mesh or another share.
    #[error("share folder {path} is marked as share {found_share:?} of mesh {found_mesh}, not {share:?} of this mesh; nothing is deleted")]
    Foreign {
        /// The folder.
        path: PathBuf,
        /// This share's name.
        share: String,
        /// The marker's share name.
        found_share: String,
        /// The marker's mesh (short).
        found_mesh: String,
    },
    /// A marker of this share, but not the one this node recorded: a copy or an old folder.
    #[error("share folder {0} holds another copy of share {1:?} than the one this node synced (restored from a backup, or a copy?); if it is the right folder, run `meshsync share resume {1}`")]
    Replaced(PathBuf, String),
    /// The folder moved to another filesystem (or the disk under it is unmounted).
    #[error("share folder {path} is on another filesystem ({now}) than recorded ({recorded}): unmounted disk? nothing is deleted; if the share moved on purpose, run `meshsync share resume {share}`")]
    OtherFilesystem {
        /// The folder.
        path: PathBuf,
        /// The share.
        share: String,
        /// Filesystem recorded.
        recorded: String,
        /// Filesystem now.
        now: String,
    },
}

/// What was found at a share's root.
#[derive(Debug)]
pub struct Found {
    /// The marker, if there is one.
    pub marker: Option<Marker>,
    /// The root's filesystem.
    pub fs: String,
    /// True if the root holds anything besides the private folder.
    pub has_content: bool,
}

/// What to do with a root that looks right.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Scan it.
    Ok,
    /// Scan it, and remember this marker and filesystem from now on.
    Record(RootRecord),
    /// No marker yet, and nothing that a scan could take for deletions: write one
    /// (a share added before markers existed, or by editing the config).
    WriteMarker,
}

/// The marker of share `share` in mesh `mesh`, with a new id.
pub fn new_marker(mesh: &str, share: &str) -> Marker {
    let id: [u8; 16] = rand::random();
    Marker { mesh: mesh.to_string(), share: share.to_string(), id: data_encoding::HEXLOWER.encode(&id) }
}

/// Path of the marker file in `root`.
pub fn marker_path(root: &Path) -> PathBuf {
    root.join(PRIVATE_DIR).join(MARKER_FILE)
}

/// Writes the marker (and the private folder) into an existing root.
pub fn write_marker(root: &Path, m: &Marker) -> std::io::Result<()> {
    let dir = root.join(PRIVATE_DIR);
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let body = toml::to_string(m).map_err(std::io::Error::other)?;
    let text = format!(
        "# meshsync: this folder is share {:?}. Without this file meshsync takes the folder\n\
         # for an unmounted disk and pauses the share instead of deleting its files.\n{body}",
        m.share
    );
    crate::home::write_atomic(&marker_path(root), text.as_bytes(), 0o644)
}

/// Reads the marker in `root`: `Ok(None)` when there is none.
pub fn read_marker(root: &Path, share: &str) -> Result<Option<Marker>, RootProblem> {
    let p = marker_path(root);
    match std::fs::read_to_string(&p) {
        Ok(t) => toml::from_str(&t).map(Some).map_err(|e| RootProblem::BadMarker(p, e.message().into(), share.into())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RootProblem::Unreadable(p, e)),
    }
}

/// The filesystem a path is on: its fsid where the filesystem has a stable one
/// (ext4 and btrfs derive it from their UUID; btrfs's device number changes between
/// mounts), else its device number.
pub fn filesystem_of(path: &Path) -> std::io::Result<String> {
    let fsid = crate::util::fs_id(path)?;
    if fsid != 0 {
        return Ok(format!("fsid:{fsid:016x}"));
    }
    let dev = std::fs::metadata(path)?.dev();
    Ok(format!("dev:{}:{}", libc::major(dev), libc::minor(dev)))
}

/// Looks at a share's root: is it a readable folder, which marker does it hold, on
/// which filesystem.
pub fn inspect(root: &Path, share: &str) -> Result<Found, RootProblem> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(RootProblem::Missing(root.into(), share.into())),
        Err(e) => return Err(RootProblem::Unreadable(root.into(), e)),
    };
    if !meta.is_dir() {
        return Err(RootProblem::NotADirectory(root.into()));
    }
    let mut rd = std::fs::read_dir(root).map_err(|e| RootProblem::Unreadable(root.into(), e))?;
    let has_content = rd.any(|d| d.is_ok_and(|d| d.file_name() != PRIVATE_DIR));
    let fs = filesystem_of(root).map_err(|e| RootProblem::Unreadable(root.into(), e))?;
    Ok(Found { marker: read_marker(root, share)?, fs, has_content })
}

/// Decides whether a root may be scanned. `recorded` is what this node noted the
/// last time the root was right; `index_empty` that no live entry could be taken
/// for deleted.
pub fn judge(
    root: &Path,
    mesh: &str,
    share: &str,
    found: &Found,
    recorded: Option<&RootRecord>,
    index_empty: bool,
) -> Result<Verdict, RootProblem> {
    let Some(m) = &found.marker else {
        // Nothing recorded yet means this node never saw a marker here: a share from
        // before markers, or added by hand. Mark it, unless it looks like an empty
        // mount point over files this node indexed.
        return if recorded.is_none() && (index_empty || found.has_content) {
            Ok(Verdict::WriteMarker)
        } else {
            Err(RootProblem::NoMarker(root.into(), share.into()))
        };
    };
    if m.mesh != mesh || m.share != share {
        return Err(RootProblem::Foreign {
            path: root.into(),
            share: share.into(),
            found_share: m.share.clone(),
            found_mesh: m.mesh.chars().take(12).collect(),
        });
    }
    match recorded {
        None => Ok(Verdict::Record(RootRecord { marker_id: m.id.clone(), filesystem: found.fs.clone() })),
        Some(r) if r.marker_id != m.id => Err(RootProblem::Replaced(root.into(), share.into())),
        Some(r) if r.filesystem != found.fs => Err(RootProblem::OtherFilesystem {
            path: root.into(),
            share: share.into(),
            recorded: r.filesystem.clone(),
            now: found.fs.clone(),
        }),
        Some(_) => Ok(Verdict::Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "aa";

    fn found(marker: Option<Marker>, fs: &str, has_content: bool) -> Found {
        Found { marker, fs: fs.into(), has_content }
    }

    fn rec(m: &Marker, fs: &str) -> RootRecord {
        RootRecord { marker_id: m.id.clone(), filesystem: fs.into() }
    }

    #[test]
    fn a_right_root_is_scanned_and_recorded_once() {
        let m = new_marker(MESH, "www");
        let p = Path::new("/srv/www");
        let f = found(Some(m.clone()), "dev:8:1", true);
        assert_eq!(judge(p, MESH, "www", &f, None, false).unwrap(), Verdict::Record(rec(&m, "dev:8:1")));
        assert_eq!(judge(p, MESH, "www", &f, Some(&rec(&m, "dev:8:1")), false).unwrap(), Verdict::Ok);
    }

    #[test]
    fn an_empty_mount_point_is_refused_once_files_were_indexed() {
        let m = new_marker(MESH, "www");
        let p = Path::new("/srv/www");
        let empty = found(None, "dev:8:1", false);
        let e = judge(p, MESH, "www", &empty, Some(&rec(&m, "dev:8:2")), false).unwrap_err();
        assert!(matches!(e, RootProblem::NoMarker(..)), "{e}");
        // Never recorded, but the index holds files and the folder is empty: also refused.
        assert!(matches!(judge(p, MESH, "www", &empty, None, false), Err(RootProblem::NoMarker(..))));
        // Never recorded and nothing indexed, or a folder with files: marked.
        assert_eq!(judge(p, MESH, "www", &empty, None, true).unwrap(), Verdict::WriteMarker);
        let full = found(None, "dev:8:1", true);
        assert_eq!(judge(p, MESH, "www", &full, None, false).unwrap(), Verdict::WriteMarker);
    }

    #[test]
    fn another_filesystem_another_copy_or_another_share_is_refused() {
        let m = new_marker(MESH, "www");
        let p = Path::new("/srv/www");
        let r = rec(&m, "fsid:01");
        let moved = found(Some(m.clone()), "dev:0:33", true);
        assert!(matches!(judge(p, MESH, "www", &moved, Some(&r), false), Err(RootProblem::OtherFilesystem { .. })));
        let copy = found(Some(new_marker(MESH, "www")), "fsid:01", true);
        assert!(matches!(judge(p, MESH, "www", &copy, Some(&r), false), Err(RootProblem::Replaced(..))));
        let other = found(Some(new_marker(MESH, "logs")), "fsid:01", true);
        assert!(matches!(judge(p, MESH, "www", &other, Some(&r), false), Err(RootProblem::Foreign { .. })));
        let mesh = found(Some(new_marker("bb", "www")), "fsid:01", true);
        assert!(matches!(judge(p, MESH, "www", &mesh, None, true), Err(RootProblem::Foreign { .. })));
    }

    #[test]
    fn markers_round_trip_and_the_root_is_inspected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        assert!(matches!(inspect(&root, "s"), Err(RootProblem::Missing(..))));
        std::fs::write(&root, b"x").unwrap();
        assert!(matches!(inspect(&root, "s"), Err(RootProblem::NotADirectory(..))));
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        let f = inspect(&root, "s").unwrap();
        assert!(f.marker.is_none() && !f.has_content);
        let m = new_marker(MESH, "s");
        write_marker(&root, &m).unwrap();
        let f = inspect(&root, "s").unwrap();
        assert_eq!(f.marker, Some(m));
        assert!(!f.has_content, "the private folder is not content");
        std::fs::write(root.join("a"), b"1").unwrap();
        assert!(inspect(&root, "s").unwrap().has_content);
        std::fs::write(marker_path(&root), b"mesh = 3").unwrap();
        assert!(matches!(inspect(&root, "s"), Err(RootProblem::BadMarker(..))));
    }
}
