//! (6) Rate caps: a random file of the big file's size crosses with host 1's
//! `download_limit_mbit` set, then on a fresh pair with host 0's
//! `upload_limit_mbit` set to the same rate (the reference: the cap rsync users
//! know as `--bwlimit`). Prints the file's rate against the cap.

use crate::cases::{remove, wait_file, Bench};
use crate::report::Outcome;
use crate::{util, Case};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::time::{Duration, Instant};

/// Seed of the file's bytes.
const SEED: u64 = 2626;

impl Bench {
    /// (6) The download cap, then the upload cap, each at `cap_mbit`.
    pub(crate) fn cap(&mut self, size: u64, cap_mbit: u64) -> anyhow::Result<Outcome> {
        let mut out = Outcome::new(Case::Cap, format!("{} MiB random file, capped at {cap_mbit} Mbit/s", size >> 20));
        let mut words = Vec::new();
        for (host, key) in [(1, "download_limit_mbit"), (0, "upload_limit_mbit")] {
            let secs = self.capped(host, key, cap_mbit, size)?;
            let mbit = size as f64 * 8.0 / secs / 1e6;
            words.push(format!(
                "{key} = {cap_mbit} on host {host}: {secs:.2} s, {mbit:.1} Mbit/s of file data ({:.0} % of the cap)",
                100.0 * mbit / cap_mbit as f64
            ));
            out.figures[key] = json!({"cap_mbit": cap_mbit, "secs": secs, "file_mbit": mbit});
        }
        out.figures["size_bytes"] = json!(size);
        out.meshsync = words[0].clone();
        out.reference = words[1].clone();
        Ok(out)
    }

    /// The file's crossing from host 0 to host 1 with `key = cap` in `host`'s `[node]`.
    fn capped(&mut self, host: usize, key: &str, cap: u64, size: u64) -> anyhow::Result<f64> {
        let tag = format!("cap-{key}");
        let mut mesh = self.pair(&tag)?;
        mesh.stop_node(host);
        let cfg = mesh.nodes[host].home.join("config.toml");
        let text = std::fs::read_to_string(&cfg).with_context(|| format!("reading {}", cfg.display()))?;
        if !text.contains("[node]\n") {
            anyhow::bail!("{} has no [node] table", cfg.display());
        }
        std::fs::write(&cfg, text.replacen("[node]\n", &format!("[node]\n{key} = {cap}\n"), 1))
            .with_context(|| format!("writing {}", cfg.display()))?;
        mesh.start_node(host)?;
        mesh.wait_connected(Duration::from_secs(30))
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        let staged = self.work.join(&tag).join("h0").join("stage").join("file");
        let hash = util::write_random(&staged, size, &mut StdRng::seed_from_u64(SEED))?;
        let (src, dst) = (mesh.nodes[0].share.join("file"), mesh.nodes[1].share.join("file"));
        let t0 = Instant::now();
        std::fs::rename(&staged, &src).context("renaming the file into host 0's share")?;
        let secs = wait_file(&dst, size, t0, Duration::from_secs(600), Duration::from_millis(5), || mesh.check_alive())
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        if util::hash_file(&dst)? != hash {
            anyhow::bail!("{tag}: the copy on host 1 differs from the source");
        }
        drop(mesh);
        remove(&self.work.join(&tag))?;
        Ok(secs)
    }
}
