//! Which user a command runs as, against who owns the files it writes. The daemon runs
//! as the user that owns its home (`meshsync` under systemd); a key, config or index
//! written there by anyone else (root, typically) is unreadable to it, and the
//! service then fails at its next start. The commands that write refuse that up front.

use crate::home::Home;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How deep below the home entries are checked: the keys and config, the index's and
/// the invites' files (the index's blobs sit deeper and are written only by the
/// daemon, which a wrong owner stops before it writes any).
const CHECK_DEPTH: usize = 2;

/// Why a command may not write where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The home belongs to another user.
    #[error(
        "{dir} belongs to user {owner}, but this runs as {me}: files written now would be unreadable to the \
         daemon, which runs as {owner}. Run it as that user: {retry}"
    )]
    NotMine {
        /// The home.
        dir: PathBuf,
        /// Its owner.
        owner: String,
        /// Who runs this.
        me: String,
        /// The same command line, run as the owner.
        retry: String,
    },
    /// Something inside the home belongs to another user, and its owner cannot use it.
    #[error(
        "{path} belongs to user {owner}, and {me}, who owns {dir} and runs the daemon, cannot use it. \
         Give the whole home back to its user (as root): chown -R {me}: {dir}"
    )]
    Mixed {
        /// The odd one out.
        path: PathBuf,
        /// Its owner.
        owner: String,
        /// The home's owner, who runs this.
        me: String,
        /// The home.
        dir: PathBuf,
    },
    /// A share folder this user cannot write to.
    #[error(
        "{path} is not writable by user {me}, which the daemon runs as ({source}): give it write access, \
         e.g. `chown -R {me}: {path}` or `setfacl -R -m u:{me}:rwX -m d:u:{me}:rwX {path}`"
    )]
    NotWritable {
        /// The folder.
        path: PathBuf,
        /// Who runs this.
        me: String,
        /// What the write attempt said.
        source: std::io::Error,
    },
    /// The home or something in it cannot be examined.
    #[error("cannot examine {path}: {source}")]
    Io {
        /// What was examined.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A user's login name, or `#UID` (the form sudo takes) when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; on success `found` points at `pw`,
    // whose strings point into `buf`, and both outlive their use below.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r == 0 && !found.is_null() && !pw.pw_name.is_null() {
        // SAFETY: getpwuid_r wrote a NUL-terminated name into `buf`.
        return unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned();
    }
    format!("#{uid}")
}

/// Refuses a home that another user owns, or that holds files of another user that
/// its owner cannot use. `argv` is the command line, repeated in the advice to run it as the
/// owner. A home that does not exist yet is fine: this user creates it.
pub fn check_home(home: &Home, argv: &[String]) -> Result<(), OwnerError> {
    let dir = home.dir();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OwnerError::Io { path: dir.to_path_buf(), source: e }),
    };
    let me = euid();
    if meta.uid() != me {
        let owner = user_name(meta.uid());
        let retry = retry_as(&owner, dir, argv, me == 0);
        return Err(OwnerError::NotMine { dir: dir.to_path_buf(), owner, me: user_name(me), retry });
    }
    match foreign_entry(dir, me, CHECK_DEPTH, &home.index())? {
        Some((path, uid)) => {
            Err(OwnerError::Mixed { path, owner: user_name(uid), me: user_name(me), dir: dir.to_path_buf() })
        }
        None => Ok(()),
    }
}

/// The first entry below `dir` (to `depth` levels) that belongs to another user than
/// `uid` and that `uid` (this process) cannot use as the daemon does, with its owner.
/// Another owner alone is fine: a root-owned config.toml that is readable works.
fn foreign_entry(dir: &Path, uid: u32, depth: usize, index: &Path) -> Result<Option<(PathBuf, u32)>, OwnerError> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OwnerError + '_ {
        move |source| OwnerError::Io { path: path.to_path_buf(), source }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        // A running daemon's index makes and removes files as it goes (sled's
        // snapshots): one gone since the listing is no problem of ownership.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        // Directories are listed, entered and written; the index's files rewritten;
        // the rest (keys, certificates, config) read.
        let need = if meta.is_dir() {
            libc::R_OK | libc::W_OK | libc::X_OK
        } else if dir == index {
            libc::R_OK | libc::W_OK
        } else {
            libc::R_OK
        };
        if meta.uid() != uid && !may(&path, need) {
            return Ok(Some((path, meta.uid())));
        }
        if meta.is_dir() && depth > 1 {
            match foreign_entry(&path, uid, depth - 1, index) {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(OwnerError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

/// Whether this process (its effective ids) may access `path` as `mode` asks.
fn may(path: &Path, mode: i32) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// Whether this user can create files in `dir`, found by creating one: permission
/// bits, ACLs, read-only mounts and security modules all have their say. The name
/// matches the partial-download patterns, so a running watcher never replicates it.
pub fn check_writable(dir: &Path) -> Result<(), OwnerError> {
    match tempfile::Builder::new().prefix(".meshsync-write-test-").suffix(".tmp").tempfile_in(dir) {
        Ok(_) => Ok(()),
        Err(source) => Err(OwnerError::NotWritable { path: dir.to_path_buf(), me: user_name(euid()), source }),
    }
}

/// `argv` as a shell command run as `owner`: with `--home` spelled out, as the
/// environment (MESHSYNC_HOME) does not survive the user switch. Root has runuser
/// everywhere; others ask sudo.
fn retry_as(owner: &str, dir: &Path, argv: &[String], root: bool) -> String {
    let switch: &[&str] = if root { &["runuser", "-u", owner, "--"] } else { &["sudo", "-u", owner] };
    let mut words: Vec<String> = switch.iter().map(|w| w.to_string()).collect();
    let (prog, rest) = argv.split_first().map_or(("meshsync", &[][..]), |(p, r)| (p.as_str(), r));
    words.push(prog.to_string());
    if !rest.iter().any(|a| a == "--home" || a.starts_with("--home=")) {
        words.extend(["--home".to_string(), dir.display().to_string()]);
    }
    words.extend(rest.iter().cloned());
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

/// A word as the shell reads it back unchanged.
fn shell_quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@,+-%".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_advice_repeats_the_command_as_the_owner_with_its_home() {
        let dir = Path::new("/var/lib/meshsync");
        assert_eq!(
            retry_as("meshsync", dir, &argv("meshsync init --name web1 --listen 0.0.0.0:7700"), true),
            "runuser -u meshsync -- meshsync --home /var/lib/meshsync init --name web1 --listen 0.0.0.0:7700"
        );
        assert_eq!(
            retry_as("meshsync", dir, &argv("meshsync --home /var/lib/meshsync share add www /srv/my www"), false),
            "sudo -u meshsync meshsync --home /var/lib/meshsync share add www /srv/my www"
        );
        let odd = vec!["meshsync".to_string(), "share".into(), "add".into(), "w".into(), "/srv/it's here".into()];
        assert_eq!(
            retry_as("#1001", dir, &odd, false),
            r"sudo -u '#1001' meshsync --home /var/lib/meshsync share add w '/srv/it'\''s here'"
        );
        assert_eq!(retry_as("m", dir, &[], true), "runuser -u m -- meshsync --home /var/lib/meshsync");
    }

    #[test]
    fn a_home_of_this_user_passes_and_a_missing_one_too() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_home(&Home::new(t.path().join("not-yet")), &[]).is_ok());
        std::fs::create_dir_all(t.path().join("index")).unwrap();
        std::fs::write(t.path().join("index/db"), b"").unwrap();
        assert!(check_home(&Home::new(t.path()), &[]).is_ok());
        assert!(check_writable(t.path()).is_ok());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1, "the write test leaves nothing behind");
    }

    #[test]
    fn a_home_of_another_user_is_refused_with_the_command_to_run_instead() {
        if euid() != 0 {
            eprintln!("skipped: needs root to give a directory to another user");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(t.path(), Some(65534), None).unwrap();
        let err = check_home(&Home::new(t.path()), &argv("meshsync run")).unwrap_err();
        let name = user_name(65534);
        assert!(matches!(&err, OwnerError::NotMine { owner, .. } if *owner == name), "{err}");
        assert!(err.to_string().ends_with(&format!("runuser -u {name} -- meshsync --home {} run", t.path().display())));
    }

    #[test]
    fn user_names_come_from_the_user_database() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "#4000000000");
    }
}
