//! The generated tree: `files` files spread over `dirs` directories (two levels),
//! sizes drawn from a mix, contents from blake3's output stream, all from one seed,
//! so the same flags give the same bytes on every run and every machine.

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One class of the size mix: this share of the files, sizes uniform in `min..=max`.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeClass {
    /// Percent of the files.
    pub percent: f64,
    /// Smallest size, bytes.
    pub min: u64,
    /// Largest size, bytes.
    pub max: u64,
}

/// The default mix: mostly small files (a web root), a few large ones that are cut
/// into several chunks. About 1.6 GiB of data and 4.5 GiB on disk per million files.
pub const DEFAULT_MIX: &str = "15:0-0,55:1-1024,25:1025-4096,4.5:4097-32768,0.48:32769-262144,0.02:262145-2097152";

/// Parses `PERCENT:MIN-MAX,...` (percents adding up to 100).
pub fn parse_mix(s: &str) -> anyhow::Result<Vec<SizeClass>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("size class {part:?}: expected PERCENT:MIN-MAX, e.g. 55:1-1024");
        let (pct, range) = part.split_once(':').with_context(bad)?;
        let (min, max) = range.split_once('-').with_context(bad)?;
        let c = SizeClass {
            percent: pct.parse().with_context(bad)?,
            min: min.parse().with_context(bad)?,
            max: max.parse().with_context(bad)?,
        };
        if c.min > c.max || c.percent < 0.0 {
            bail!("{}", bad());
        }
        out.push(c);
    }
    let total: f64 = out.iter().map(|c| c.percent).sum();
    if (total - 100.0).abs() > 0.01 {
        bail!("size mix {s:?}: the percents add up to {total}, expected 100");
    }
    Ok(out)
}

/// What defines a tree: the same spec gives the same files.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Files.
    pub files: usize,
    /// Leaf directories (below `dirs.sqrt()` top-level ones).
    pub dirs: usize,
    /// The size mix.
    pub mix: Vec<SizeClass>,
    /// The seed of sizes and contents.
    pub seed: u64,
}

/// What a finished tree holds (written beside it once it is complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    /// Files.
    pub files: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Directories, the root not counted.
    pub dirs: u64,
}

impl Spec {
    /// The directory of file `i`, relative to the root.
    fn dir_of(&self, i: usize) -> String {
        let d = i % self.dirs;
        format!("t{:03}/d{d:06}", d % self.top_dirs())
    }

    fn top_dirs(&self) -> usize {
        ((self.dirs as f64).sqrt().ceil() as usize).max(1)
    }

    /// A name that tells trees of other specs apart.
    pub fn name(&self) -> String {
        let mix: String = self.mix.iter().map(|c| format!("{}:{}-{}", c.percent, c.min, c.max)).collect();
        let h = blake3::hash(mix.as_bytes()).to_hex();
        format!("tree-{}f-{}d-s{}-{}", self.files, self.dirs, self.seed, &h[..8])
    }

    fn size_of(&self, rng: &mut rand::rngs::StdRng) -> u64 {
        let mut x = rng.gen_range(0.0..100.0);
        for c in &self.mix {
            if x < c.percent {
                return rng.gen_range(c.min..=c.max);
            }
            x -= c.percent;
        }
        self.mix.last().map_or(0, |c| c.max)
    }
}

/// A fixed mtime per file (2023-11-14 plus `i` seconds): a tree generated twice
/// from the seed is the same to the nanosecond.
fn mtime_of(i: usize) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64)
}

/// Writes the tree under `root` (which must not exist); returns what it holds.
pub fn generate(spec: &Spec, root: &Path) -> anyhow::Result<Totals> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut totals = Totals::default();
    let mut made = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..spec.files {
        let dir = root.join(spec.dir_of(i));
        if made.insert(dir.clone()) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let size = spec.size_of(&mut rng);
        buf.resize(size as usize, 0);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&spec.seed.to_le_bytes());
        key[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        blake3::Hasher::new_keyed(&key).finalize_xof().fill(&mut buf);
        let path = dir.join(format!("f{i:07}.dat"));
        let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut &f, &buf)?;
        f.set_modified(mtime_of(i))?;
        totals.files += 1;
        totals.bytes += size;
        if (i + 1) % 100_000 == 0 {
            eprintln!("  generated {} files in {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    let tops: std::collections::HashSet<_> = made.iter().filter_map(|d| d.parent().map(PathBuf::from)).collect();
    totals.dirs = (made.len() + tops.len()) as u64;
    Ok(totals)
}

/// Where a finished tree notes its totals (beside it, not in it).
pub fn stamp_path(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".done");
    PathBuf::from(s)
}

/// The totals of a finished tree, if `root` holds one.
pub fn read_stamp(root: &Path) -> Option<Totals> {
    let text = std::fs::read_to_string(stamp_path(root)).ok()?;
    let mut n = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some(Totals { files: n.next()??, bytes: n.next()??, dirs: n.next()?? })
}

/// Notes `root` as finished with `t`.
pub fn write_stamp(root: &Path, t: &Totals) -> anyhow::Result<()> {
    std::fs::write(stamp_path(root), format!("{} {} {}\n", t.files, t.bytes, t.dirs))?;
    Ok(())
}
