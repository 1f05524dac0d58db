//! The big-file cases: (4) the first copy of a large random file, as a share of the
//! link rate, and (3) the same file with bytes inserted in its middle, as bytes on
//! the wire (the shaped links' own counters) and time.

use crate::cases::{remove, wait_file, Bench, BigPair, BIG};
use crate::mesh::Mesh;
use crate::report::Outcome;
use crate::{util, Case};
use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long after the file arrived the link counters are read: the index update
/// that follows (host 1 telling host 0 it has the version) belongs to the change.
const SETTLE: Duration = Duration::from_secs(1);
/// Seed of the big file's bytes (and, plus one, of the inserted ones).
const BIG_SEED: u64 = 25;

impl Bench {
    /// (4) The big file renamed into host 0's share, until it is complete on host 1.
    pub(crate) fn copy(&mut self, size: u64) -> anyhow::Result<Outcome> {
        self.big = None;
        let mesh = self.pair("big")?;
        let stage = self.work.join("big").join("h0").join("stage");
        let staged = stage.join(BIG);
        // Seeded: every run (and build) cuts the same chunks, so wire figures compare.
        let hash = util::write_random(&staged, size, &mut StdRng::seed_from_u64(BIG_SEED))?;
        let (src, dst) = (mesh.nodes[0].share.join(BIG), mesh.nodes[1].share.join(BIG));
        let cpu0 = util::cpu_jiffies();
        let t0 = Instant::now();
        std::fs::rename(&staged, &src).context("renaming the big file into host 0's share")?;
        let took = wait_file(&dst, size, t0, Duration::from_secs(300), Duration::from_millis(5), || mesh.check_alive())
            .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        let cpu = util::busy_pct(cpu0, util::cpu_jiffies());
        check_hash(&dst, hash, "meshsync")?;
        let rate = self.rate_mbit;
        let pct = |secs: f64| 100.0 * size as f64 * 8.0 / secs / (rate * 1e6);
        let mut out = Outcome::new(Case::Copy, format!("{} MiB first copy", size >> 20));
        out.meshsync = format!(
            "{took:.2} s ({:.0} % of the link{})",
            pct(took),
            cpu.map(|c| format!(", CPU {c:.0} %")).unwrap_or_default()
        );
        out.figures = json!({"size_bytes": size, "meshsync_s": took, "meshsync_link_pct": pct(took), "cpu_pct": cpu});
        let mut rsync_dest = None;
        if self.sshd().is_some() {
            let dest = self.work.join("big-rsync");
            let secs = self.rsync(&["-a", "--whole-file"], &src, &dest, "copy")?;
            check_hash(&dest.join(BIG), hash, "rsync")?;
            out.reference = format!("rsync -a over ssh {secs:.2} s ({:.0} %)", pct(secs));
            out.figures["rsync_s"] = json!(secs);
            out.figures["rsync_link_pct"] = json!(pct(secs));
            rsync_dest = Some(dest);
        }
        self.big = Some(BigPair { mesh, stage, rsync_dest });
        Ok(out)
    }

    /// (3) `insert` random bytes put in the middle of the big file both hosts hold
    /// (after the copy case, or a copy made first), renamed into host 0's share.
    pub(crate) fn insert(&mut self, size: u64, insert: u64) -> anyhow::Result<Outcome> {
        if self.big.is_none() {
            let setup = self.copy(size)?;
            println!("(setup of (3)) {}", setup.line());
        }
        let BigPair { mesh, stage, rsync_dest } = self.big.take().context("the copy case's pair")?;
        let (src, dst) = (mesh.nodes[0].share.join(BIG), mesh.nodes[1].share.join(BIG));
        let staged = stage.join(BIG);
        let hash = write_inserted(&src, &staged, size / 2, insert)?;
        let new_size = size + insert;
        let received0 = mesh.counter("chunk_bytes_received")[1];
        // The new entry crosses in both directions (host 1 announces the version it
        // now holds): its block list is the other part of what crosses besides chunks.
        let index0 = index_bytes(&mesh);
        let bytes0 = self.topo.link_bytes();
        let t0 = Instant::now();
        std::fs::rename(&staged, &src).context("renaming the new version into host 0's share")?;
        let took =
            wait_file(&dst, new_size, t0, Duration::from_secs(300), Duration::from_millis(5), || mesh.check_alive())
                .map_err(|e| util::with_logs(e, || format!("daemon logs:\n{}", mesh.log_tails(15))))?;
        util::sleep(SETTLE)?;
        let wire = self.wire_since(bytes0);
        let chunks = received0.zip(mesh.counter("chunk_bytes_received")[1]).map(|(a, b)| b.saturating_sub(a));
        let index = index0.zip(index_bytes(&mesh)).map(|(a, b)| b.saturating_sub(a));
        check_hash(&dst, hash, "meshsync")?;
        drop(mesh);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut out =
            Outcome::new(Case::Insert, format!("{} KiB inserted in the middle of {} MiB", insert >> 10, size >> 20));
        out.meshsync = format!(
            "{} on the wire{}, {took:.2} s",
            wire.map(|(up, down)| format!("{:.2} MiB ({:.2} down, {:.2} up)", mib(up + down), mib(down), mib(up)))
                .unwrap_or_else(|| "? MiB".into()),
            chunks
                .map(|c| format!(" ({:.2} MiB of chunks, {:.2} MiB of index entries)", mib(c), mib(index.unwrap_or(0))))
                .unwrap_or_default(),
        );
        out.figures = json!({"size_bytes": size, "insert_bytes": insert, "meshsync_s": took,
                             "meshsync_wire_bytes": wire.map(|(u, d)| u + d), "meshsync_chunk_bytes": chunks,
                             "meshsync_index_bytes": index});
        if let Some(dest) = rsync_dest.filter(|_| self.sshd().is_some()) {
            let bytes0 = self.topo.link_bytes();
            // The delta algorithm against the old version in place (no --whole-file).
            let secs = self.rsync(&["-a"], &src, &dest, "insert")?;
            let wire = self.wire_since(bytes0);
            check_hash(&dest.join(BIG), hash, "rsync")?;
            out.reference = format!(
                "rsync -a over ssh {} on the wire, {secs:.2} s",
                wire.map(|(up, down)| format!("{:.2} MiB", mib(up + down))).unwrap_or_else(|| "? MiB".into())
            );
            out.figures["rsync_s"] = json!(secs);
            out.figures["rsync_wire_bytes"] = json!(wire.map(|(u, d)| u + d));
            remove(&dest)?;
        }
        remove(&self.work.join("big"))?;
        Ok(out)
    }

    /// Bytes host 1's links passed since `before`, as (upload, download).
    fn wire_since(&self, before: Option<Vec<(u64, u64)>>) -> Option<(u64, u64)> {
        let (b, a) = (before?, self.topo.link_bytes()?);
        Some((a[1].0.saturating_sub(b[1].0), a[1].1.saturating_sub(b[1].1)))
    }
}

/// Index bytes host 1 sent and received so far, together.
fn index_bytes(mesh: &Mesh) -> Option<u64> {
    let sent = mesh.counter("index_bytes_sent")[1]?;
    Some(sent + mesh.counter("index_bytes_received")[1]?)
}

/// Writes to `out` the file `old` with `len` random bytes put in at `at`; returns
/// the new content's blake3.
fn write_inserted(old: &Path, out: &Path, at: u64, len: u64) -> anyhow::Result<blake3::Hash> {
    let mut r =
        std::io::BufReader::new(std::fs::File::open(old).with_context(|| format!("opening {}", old.display()))?);
    let mut w = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut h = blake3::Hasher::new();
    let mut copy = |r: &mut dyn Read, n: Option<u64>| -> anyhow::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = n.unwrap_or(u64::MAX);
        while left > 0 {
            let got = r.read(&mut buf[..left.min(1 << 20) as usize]).context("reading the old version")?;
            if got == 0 {
                break;
            }
            h.update(&buf[..got]);
            w.write_all(&buf[..got]).context("writing the new version")?;
            left -= got as u64;
        }
        Ok(())
    };
    copy(&mut r, Some(at))?;
    let mut new = vec![0u8; len as usize];
    StdRng::seed_from_u64(BIG_SEED + 1).fill_bytes(&mut new);
    copy(&mut &new[..], None)?;
    copy(&mut r, None)?;
    w.sync_all().context("syncing the new version")?;
    Ok(h.finalize())
}

fn check_hash(path: &Path, want: blake3::Hash, tool: &str) -> anyhow::Result<()> {
    let got = util::hash_file(path)?;
    if got != want {
        bail!("{tool}: {} is corrupt: blake3 {} but the source is {}", path.display(), got.to_hex(), want.to_hex());
    }
    Ok(())
}
