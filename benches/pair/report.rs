//! What each case measured, printed as a line, a markdown table and JSON.

use crate::Case;
use anyhow::Context;
use serde::Serialize;
use std::path::Path;

/// One case's result: meshsync's figure beside its reference.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Which case.
    pub case: Case,
    /// What was measured, in words.
    pub title: String,
    /// meshsync's figure, in words.
    pub meshsync: String,
    /// The same-run reference (rsync, the link, the target), in words.
    pub reference: String,
    /// The raw figures.
    pub figures: serde_json::Value,
}

impl Outcome {
    /// An outcome with no figures yet.
    pub fn new(case: Case, title: String) -> Self {
        Self { case, title, meshsync: String::new(), reference: "rsync skipped".into(), figures: Default::default() }
    }

    /// The case's number in issue 25's table.
    fn number(&self) -> u8 {
        match self.case {
            Case::Small => 1,
            Case::Latency => 2,
            Case::Insert => 3,
            Case::Copy => 4,
            Case::Zstd => 5,
            Case::Cap => 6,
        }
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        format!("({}) {}: meshsync {} | {}", self.number(), self.title, self.meshsync, self.reference)
    }
}

/// The `p`-quantile (0..=1) of `v` by nearest rank; 0 for no values.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (p * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The results as a markdown table.
pub fn markdown(results: &[Outcome], rate_mbit: f64) -> String {
    let mut s =
        format!("Pair at {rate_mbit} Mbit/s (benches/pair)\n\n| case | meshsync | reference |\n|---|---|---|\n");
    for r in results {
        s.push_str(&format!("| ({}) {} | {} | {} |\n", r.number(), r.title, r.meshsync, r.reference));
    }
    s
}

/// Writes `pair.md` and `pair.json` into `out`.
pub fn write(out: &Path, results: &[Outcome], cases: &[Case], rate_mbit: f64) -> anyhow::Result<()> {
    let md = out.join("pair.md");
    std::fs::write(&md, markdown(results, rate_mbit)).with_context(|| format!("writing {}", md.display()))?;
    let json = serde_json::json!({
        "rate_mbit": rate_mbit,
        "cases": cases,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "results": results,
    });
    let path = out.join("pair.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", path.display()))
}
