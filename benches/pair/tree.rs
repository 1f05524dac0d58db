//! The small-file case's tree: `files` random 4 KiB files spread over `dirs`
//! directories, written on one host, waited for and compared on the other.

use crate::util;
use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

/// Size of every file of the tree.
pub const FILE_SIZE: usize = 4096;

/// How often the receiving tree is looked at: one `readdir` per directory still
/// incomplete, cheap next to the daemons that share the cores.
const POLL: Duration = Duration::from_millis(50);

/// A tree of small files.
pub struct Tree {
    files: usize,
    dirs: usize,
}

impl Tree {
    /// `files` files in `dirs` directories (fewer if there are fewer files).
    pub fn new(files: usize, dirs: usize) -> Self {
        Self { files, dirs: dirs.min(files).max(1) }
    }

    /// How many directories.
    pub fn dirs(&self) -> usize {
        self.dirs
    }

    fn dir_name(d: usize) -> String {
        format!("d{d:03}")
    }

    /// File `i`'s path below the root: round-robin over the directories.
    fn rel(&self, i: usize) -> String {
        format!("{}/f{i:06}.bin", Self::dir_name(i % self.dirs))
    }

    fn in_dir(&self, d: usize) -> usize {
        self.files / self.dirs + usize::from(d < self.files % self.dirs)
    }

    /// Writes the tree below `root` (each file created, written and closed).
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        for d in 0..self.dirs {
            let p = root.join(Self::dir_name(d));
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let mut buf = [0u8; FILE_SIZE];
        let mut rng = StdRng::seed_from_u64(self.files as u64);
        for i in 0..self.files {
            if i % 1000 == 0 {
                util::check_interrupt()?;
            }
            rng.fill_bytes(&mut buf);
            let p = root.join(self.rel(i));
            std::fs::write(&p, buf).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    /// Waits until every file of the tree is below `root` (every tool renames a
    /// complete file into place, so its name means done), calling `tick` between
    /// looks; returns the seconds since `t0` at which the last one was seen.
    pub fn wait_arrived(
        &self,
        root: &Path,
        t0: Instant,
        timeout: Duration,
        mut tick: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<f64> {
        let mut pending: Vec<usize> = (0..self.dirs).collect();
        loop {
            util::check_interrupt()?;
            pending.retain(|&d| {
                let Ok(rd) = std::fs::read_dir(root.join(Self::dir_name(d))) else { return true };
                let here = rd
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        let i = name.strip_prefix('f').and_then(|r| r.strip_suffix(".bin"));
                        i.and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < self.files && i % self.dirs == d)
                    })
                    .count();
                here < self.in_dir(d)
            });
            if pending.is_empty() {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > timeout {
                let missing: usize = pending.iter().map(|&d| self.in_dir(d)).sum();
                bail!(
                    "timed out after {:.0} s: {} of {} directories incomplete (up to {missing} files missing)",
                    timeout.as_secs_f64(),
                    pending.len(),
                    self.dirs
                );
            }
            tick()?;
            std::thread::sleep(POLL);
        }
    }

    /// Fails unless every file below `copy` has the bytes of the one below `source`.
    pub fn verify(&self, source: &Path, copy: &Path, tool: &str) -> anyhow::Result<()> {
        for i in 0..self.files {
            let rel = self.rel(i);
            let (a, b) = (source.join(&rel), copy.join(&rel));
            let want = std::fs::read(&a).with_context(|| format!("reading {}", a.display()))?;
            let got = std::fs::read(&b).with_context(|| format!("{tool}: reading the copy {}", b.display()))?;
            if want != got {
                bail!("{tool}: the copy {} differs from its source {}", b.display(), a.display());
            }
        }
        Ok(())
    }
}
