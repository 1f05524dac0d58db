//! The same-run reference: a plain walk that opens, reads and blake3-hashes every
//! file (whole, not chunked), on one thread or several sharing a queue of
//! directories. What any indexer must at least do; the index time is printed beside it.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a reference walk saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Walked {
    /// Files hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories read (the root included).
    pub dirs: u64,
    /// Wall time.
    pub time: Duration,
    /// CPU seconds this process used meanwhile.
    pub cpu: f64,
}

/// Directories still to read, and how many threads are reading one.
struct Queue {
    dirs: Vec<PathBuf>,
    busy: usize,
}

/// Walks `root` (skipping `skip`, the share's own folder) and hashes every file on
/// `threads` threads.
pub fn walk_and_hash(root: &Path, skip: &str, threads: usize) -> Walked {
    let start = Instant::now();
    let cpu0 = crate::measure::cpu_secs(std::process::id()).unwrap_or(f64::NAN);
    let queue = Mutex::new(Queue { dirs: vec![root.to_path_buf()], busy: 0 });
    let more = Condvar::new();
    let totals = Mutex::new(Walked::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = Walked::default();
                let mut buf = Vec::with_capacity(1 << 20);
                loop {
                    let dir = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(d) = q.dirs.pop() {
                                q.busy += 1;
                                break Some(d);
                            }
                            if q.busy == 0 {
                                break None;
                            }
                            q = more.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let Some(dir) = dir else {
                        more.notify_all();
                        break;
                    };
                    let subdirs = read_one(&dir, skip, &mut buf, &mut mine);
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.dirs.extend(subdirs);
                    q.busy -= 1;
                    more.notify_all();
                }
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.files += mine.files;
                t.bytes += mine.bytes;
                t.dirs += mine.dirs;
            });
        }
    });
    let mut t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    t.time = start.elapsed();
    t.cpu = crate::measure::cpu_secs(std::process::id()).unwrap_or(f64::NAN) - cpu0;
    t
}

/// Hashes the files of one directory; returns its subdirectories.
fn read_one(dir: &Path, skip: &str, buf: &mut Vec<u8>, w: &mut Walked) -> Vec<PathBuf> {
    use std::io::Read;
    let mut subdirs = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return subdirs };
    w.dirs += 1;
    for de in rd.flatten() {
        let Ok(ft) = de.file_type() else { continue };
        if ft.is_dir() {
            if de.file_name() != skip {
                subdirs.push(de.path());
            }
        } else if ft.is_file() {
            let Ok(mut f) = std::fs::File::open(de.path()) else { continue };
            buf.clear();
            if f.read_to_end(buf).is_ok() {
                std::hint::black_box(blake3::hash(buf));
                w.files += 1;
                w.bytes += buf.len() as u64;
            }
        }
    }
    subdirs
}
