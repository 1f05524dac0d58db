//! (5) Compression: a log-like file and a random one of the big file's size, each
//! renamed into host 0's share until it is complete on host 1, with host 0's share
//! at `compression = "auto"` and then `"off"`: the bytes host 0's daemon put on the
//! wire for the chunks, the shaped link's own count, and the time.

use crate::cases::{remove, wait_file, Bench};
use crate::report::Outcome;
use crate::{util, Case};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Seed of the files' bytes.
const SEED: u64 = 2525;

/// One file's crossing.
struct Crossing {
    secs: f64,
    chunk_wire: Option<u64>,
    link: Option<u64>,
    cpu: Option<f64>,
}

impl Bench {
    /// (5) Both files under `auto`, then under `off`, each setting on a fresh pair.
    pub(crate) fn zstd(&mut self, size: u64) -> anyhow::Result<Outcome> {
        let mut figures = serde_json::Map::new();
        let mut words = Vec::new();
        for setting in ["auto", "off"] {
            let mut line = Vec::new();
            for kind in ["log", "random"] {
                let c = self.cross(setting, kind, size)?;
                let pct = |b: Option<u64>| b.map(|b| format!("{:.1} %", 100.0 * b as f64 / size as f64));
                line.push(format!(
                    "{kind} {:.2} s, chunks {} of the file on the wire (link {}){}",
                    c.secs,
                    pct(c.chunk_wire).unwrap_or_else(|| "?".into()),
                    pct(c.link).unwrap_or_else(|| "?".into()),
                    c.cpu.map(|p| format!(", CPU {p:.0} %")).unwrap_or_default()
                ));
                figures.insert(
                    format!("{setting}_{kind}"),
                    json!({"secs": c.secs, "chunk_wire_bytes": c.chunk_wire, "link_bytes": c.link, "cpu_pct": c.cpu}),
                );
            }
            words.push(format!("{setting}: {}", line.join("; ")));
        }
        let mut out = Outcome::new(Case::Zstd, format!("{} MiB log-like and random files, compression", size >> 20));
        out.meshsync = words[0].clone();
        out.reference = words[1].clone();
        figures.insert("size_bytes".into(), json!(size));
        out.figures = serde_json::Value::Object(figures);
        Ok(out)
    }

    /// One file of `kind` from host 0 to host 1, host 0's share set to `setting`.
    fn cross(&mut self, setting: &str, kind: &str, size: u64) -> anyhow::Result<Crossing> {
        let tag = format!("zstd-{setting}-{kind}");
        let mut mesh = self.pair(&tag)?;
        // The setting takes effect at a start: the share's table is the config's last.
        mesh.stop_node(0);
        let cfg = mesh.nodes[0].home.join("config.toml");
        let mut f = std::fs::OpenOptions::new().append(true).open(&cfg).context("opening host 0's config")?;
        writeln!(f, "compression = \"{setting}\"").context("setting compression")?;
        drop(f);
        mesh.start_node(0)?;
        mesh.wait_connected(Duration::from_secs(30))
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        let staged = self.work.join(&tag).join("h0").join("stage").join("file");
        let hash = if kind == "log" {
            write_log(&staged, size)?
        } else {
            util::write_random(&staged, size, &mut StdRng::seed_from_u64(SEED))?
        };
        let (src, dst) = (mesh.nodes[0].share.join("file"), mesh.nodes[1].share.join("file"));
        let wire0 = mesh.counter("chunk_wire_bytes_sent")[0];
        let link0 = self.topo.link_bytes();
        let cpu0 = util::cpu_jiffies();
        let t0 = Instant::now();
        std::fs::rename(&staged, &src).context("renaming the file into host 0's share")?;
        let secs = wait_file(&dst, size, t0, Duration::from_secs(300), Duration::from_millis(5), || mesh.check_alive())
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        let cpu = util::busy_pct(cpu0, util::cpu_jiffies());
        let link = link0.zip(self.topo.link_bytes()).map(|(b, a)| a[1].1.saturating_sub(b[1].1));
        let chunk_wire = wire0.zip(mesh.counter("chunk_wire_bytes_sent")[0]).map(|(a, b)| b.saturating_sub(a));
        if util::hash_file(&dst)? != hash {
            anyhow::bail!("{tag}: the copy on host 1 differs from the source");
        }
        drop(mesh);
        remove(&self.work.join(&tag))?;
        Ok(Crossing { secs, chunk_wire, link, cpu })
    }
}

/// Writes `size` bytes of log-like text to `path` (an access log: timestamps,
/// levels, request ids, paths, statuses, timings); returns their blake3.
fn write_log(path: &Path, size: u64) -> anyhow::Result<blake3::Hash> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let levels = ["INFO", "INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"];
    let paths = ["/api/items", "/api/users", "/login", "/static/app.js", "/static/site.css", "/health"];
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut h = blake3::Hasher::new();
    let (mut written, mut t) = (0u64, 1_764_900_000_000u64);
    let mut line = String::new();
    while written < size {
        t += rng.gen_range(0..40);
        line.clear();
        use std::fmt::Write;
        let _ = writeln!(
            line,
            "{}.{:03} {} [worker-{}] req={:016x} {} {}?page={} status={} bytes={} took={}ms ua=\"Mozilla/5.0\"",
            t / 1000,
            t % 1000,
            levels[rng.gen_range(0..levels.len())],
            rng.gen_range(0..16),
            rng.gen::<u64>(),
            ["GET", "GET", "POST"][rng.gen_range(0..3)],
            paths[rng.gen_range(0..paths.len())],
            rng.gen_range(0..100),
            [200, 200, 200, 304, 404, 500][rng.gen_range(0..6)],
            rng.gen_range(0..200_000),
            rng.gen_range(1..2000),
        );
        let b = &line.as_bytes()[..line.len().min((size - written) as usize)];
        h.update(b);
        f.write_all(b).context("writing the log")?;
        written += b.len() as u64;
    }
    f.into_inner().map_err(|e| anyhow::anyhow!("flushing the log: {e}"))?.sync_all().context("syncing the log")?;
    Ok(h.finalize())
}
