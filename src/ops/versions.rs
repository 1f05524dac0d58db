//! `meshsync versions` and `meshsync restore`: the versions a share keeps of what
//! peers' changes replaced or deleted, read straight from its folder (no daemon needed).

use crate::config::Config;
use crate::home::Home;
use crate::transfer::versions::{self, Version};
use anyhow::Context;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn share_root(home: &Home, share: &str) -> anyhow::Result<PathBuf> {
    let cfg = Config::load(&home.config())?;
    let s = cfg
        .shares
        .iter()
        .find(|s| s.name == share)
        .with_context(|| format!("no share named {share:?} in {}", home.config().display()))?;
    Ok(s.path.clone())
}

fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs).ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_default()
}

/// The table `meshsync versions SHARE [PATH]` prints.
pub fn table(kept: &[Version]) -> String {
    if kept.is_empty() {
        return "no versions kept\n".into();
    }
    let mut s = String::new();
    for v in kept {
        let _ = writeln!(s, "{}  {:>12}  {}", utc(v.at), super::status::human_bytes(v.size), v.path);
    }
    s
}

/// Every version kept of `share` (of `path` only, if given), oldest first.
pub fn list(home: &Home, share: &str, path: Option<&str>) -> anyhow::Result<Vec<Version>> {
    let root = share_root(home, share)?;
    versions::list(&root, path).with_context(|| format!("reading {}", versions::versions_dir(&root).display()))
}

/// Parses `--at`: RFC 3339 (`2026-12-04T18:00:00Z`) or the stamp of a version's
/// name (`20261204-180000`, UTC).
pub fn parse_at(s: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
            time::PrimitiveDateTime::parse(s, &fmt).map(|t| t.assume_utc())
        })
        .map_err(|_| format!("bad time {s:?}: expected e.g. 2026-12-04T18:00:00Z or 20261204-180000 (UTC)"))?;
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Puts a kept version back (the newest, or the newest at or before `at`); the
/// daemon sees a local change and sends it to the peers.
pub fn restore(home: &Home, share: &str, path: &str, at: Option<SystemTime>) -> anyhow::Result<String> {
    let root = share_root(home, share)?;
    let v = versions::restore(&root, path, at)?;
    Ok(format!("restored {} as it was kept at {} ({})", v.path, utc(v.at), super::status::human_bytes(v.size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_forms() {
        let t = parse_at("2026-12-04T18:00:00Z").unwrap();
        assert_eq!(parse_at("20261204-180000").unwrap(), t);
        assert_eq!(utc(t), "2026-12-04 18:00:00 UTC");
        assert!(parse_at("yesterday").unwrap_err().contains("expected"));
    }
}
