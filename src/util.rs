//! Small filesystem helpers shared by the scanner and the assembler.

use crate::index::Mtime;
use crate::relpath::RelPath;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The modification time of a file, with nanoseconds.
pub fn mtime_of(m: &Metadata) -> Mtime {
    Mtime::of(m)
}

/// Converts to `SystemTime`.
pub fn system_time(t: Mtime) -> SystemTime {
    // Peers send these: out-of-range values clamp to the epoch instead of panicking.
    let nanos = Duration::from_nanos(t.nanos.min(999_999_999) as u64);
    let t = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// Sets the modification time of a file or directory (not following symlinks is
/// not needed: symlinks are never opened here).
pub fn set_mtime(path: &Path, t: Mtime) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    f.set_times(std::fs::FileTimes::new().set_modified(system_time(t)))
}

/// Joins a checked relative path to a share root, refusing to pass through a
/// symlink: a link planted in the share must not redirect a write outside it.
pub fn safe_join(root: &Path, rel: &RelPath) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.as_str().split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        if i + 1 < parts.len() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("{} passes through a symlink", rel),
                    ))
                }
                Ok(m) if !m.is_dir() => return Err(io::Error::other(format!("{} is not a directory", p.display()))),
                _ => {}
            }
        }
    }
    Ok(p)
}

/// `statvfs(2)` of the filesystem holding `path`.
fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let st = statvfs(path)?;
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The filesystem id of the filesystem holding `path` (0 where it has none, as tmpfs).
pub fn fs_id(path: &Path) -> io::Result<u64> {
    Ok(statvfs(path)?.f_fsid as u64)
}

/// Sets a file's length to `len` with the blocks of `runs` (offset, length)
/// allocated, so a download cannot run out of space half way because something
/// else filled the disk after the free-space check; the rest stays a hole. File
/// systems without `fallocate` get a sparse file.
pub fn reserve(f: &std::fs::File, len: u64, runs: &[(u64, u64)]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let off_t = |v: u64| libc::off_t::try_from(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    for &(at, n) in runs.iter().filter(|r| r.1 > 0) {
        let (at, n) = (off_t(at)?, off_t(n)?);
        // SAFETY: a valid open descriptor; fallocate only changes that file (an
        // empty range is refused with EINVAL, hence the filter).
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, at, n) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
                break;
            }
            return Err(e);
        }
    }
    // fallocate never shrinks: a longer leftover is cut to size.
    f.set_len(len)
}

/// Reads exactly `len` bytes at `offset` into a new buffer. Unlike
/// `read_exact_at` on a zeroed buffer, the bytes are written once (zeroing was
/// 1 % of a 1 GiB loopback transfer's CPU on the sending side).
pub fn read_vec_at(file: &std::fs::File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset
            .checked_add(buf.len() as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: pread writes at most `spare.len()` bytes to memory valid for writes.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialised the first `n` spare bytes (n <= spare.len()).
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(buf)
}

/// fsyncs a directory so a rename in it is durable.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Unix permission bits of a file.
pub fn mode_of(m: &Metadata) -> u32 {
    m.mode() & 0o7777
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reserve_allocates_the_runs_only_and_cuts_a_longer_leftover() {
        use std::os::unix::fs::MetadataExt;
        let mut f = tempfile::tempfile().expect("temp file");
        let len = 3 << 20;
        reserve(&f, len, &[(0, len)]).expect("reserve");
        let m = f.metadata().expect("metadata");
        assert_eq!(m.len(), len);
        assert!(m.blocks() * 512 >= len, "blocks allocated up front: {} bytes", m.blocks() * 512);
        f.write_all(b"kept").expect("write");
        reserve(&f, 10, &[(0, 10)]).expect("reserve shorter");
        assert_eq!(f.metadata().expect("metadata").len(), 10, "a longer leftover is cut to size");
        let empty = tempfile::tempfile().expect("temp file");
        reserve(&empty, 0, &[]).expect("an empty file is reserved too");
        assert_eq!(empty.metadata().expect("metadata").len(), 0);
        let mut head = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).expect("read");
        assert_eq!(&head, b"kept", "data already written survives");
        // A sparse file: 1 MiB of data at each end of 64 MiB, holes between.
        let sparse = tempfile::tempfile().expect("temp file");
        let big = 64 << 20;
        reserve(&sparse, big, &[(0, 1 << 20), (big - (1 << 20), 1 << 20)]).expect("reserve runs");
        let m = sparse.metadata().expect("metadata");
        assert_eq!(m.len(), big);
        let got = m.blocks() * 512;
        assert!((2 << 20..4 << 20).contains(&got), "only the data is allocated: {got} bytes");
    }

    #[test]
    fn read_vec_at_reads_exactly_and_refuses_past_the_end() {
        let mut f = tempfile::tempfile().expect("temp file");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).expect("write");
        assert_eq!(read_vec_at(&f, 70_000, 12_345).expect("read"), &data[12_345..82_345]);
        assert_eq!(read_vec_at(&f, 0, 5).expect("empty read"), Vec::<u8>::new());
        let err = read_vec_at(&f, 10, 99_995).expect_err("runs past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_vec_at(&f, 1, u64::MAX).expect_err("offset beyond off_t");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
