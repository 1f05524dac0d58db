//! `meshsync check-config` (a config file's errors, or what it sets) and
//! `meshsync reload` (what the running daemon applied of it).

use crate::config::{Config, ConfigError};
use crate::daemon::ReloadReport;
use std::fmt::Write;
use std::path::Path;

/// Checks `path`: its first error (`file:line: ...`), or a short summary.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    Ok(summary(&Config::load(path)?, path))
}

/// What a valid config sets, in a few lines.
fn summary(cfg: &Config, path: &Path) -> String {
    let n = &cfg.node;
    let advertise = if n.advertise.is_empty() {
        "automatic".to_string()
    } else {
        n.advertise.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    };
    let mut s = format!("{}: ok\nnode {} listens on {} (advertise: {advertise})\n", path.display(), n.name, n.listen);
    let _ = write!(s, "rescan every {} s, keep {} MiB free", n.rescan_interval.as_secs(), n.min_free_bytes >> 20);
    if let Some(m) = n.upload_limit_mbit {
        let _ = write!(s, ", upload capped at {m} Mbit/s");
    }
    if let Some(m) = n.download_limit_mbit {
        let _ = write!(s, ", downloads capped at {m} Mbit/s");
    }
    if let Some(m) = n.metrics_listen {
        let _ = write!(s, ", metrics at http://{m}/metrics");
    }
    let _ = writeln!(s, "\n{} share(s)", cfg.shares.len());
    for sh in &cfg.shares {
        let _ = write!(s, "  {} {} ({})", sh.name, sh.path.display(), sh.mode.as_str());
        if !sh.ignore.is_empty() {
            let _ = write!(s, ", {} ignore pattern(s)", sh.ignore.len());
        }
        if let Some(w) = &sh.schedule {
            let _ = write!(s, ", downloads at {}", w.describe());
        }
        if !sh.path.is_dir() {
            let _ = write!(s, " [the folder does not exist here: the share stays paused until it does]");
        }
        s.push('\n');
    }
    s
}

/// What a reload did, for people.
pub fn reload_text(r: &ReloadReport) -> String {
    let mut s = String::from("config reloaded\n");
    let list = |v: &[String]| v.join(", ");
    for (what, v) in [
        ("shares started", &r.added),
        ("shares stopped (files kept)", &r.removed),
        ("applied", &r.applied),
        ("takes effect at the next restart", &r.needs_restart),
        ("failed", &r.failed),
    ] {
        if !v.is_empty() {
            let _ = writeln!(s, "  {what}: {}", list(v));
        }
    }
    if r.added.len() + r.removed.len() + r.applied.len() + r.needs_restart.len() + r.failed.len() == 0 {
        s.push_str("  nothing changed\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_is_summed_up_and_a_bad_one_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        let root = dir.path().display();
        std::fs::write(
            &p,
            format!(
                "[node]\nname = \"web1\"\nlisten = \"0.0.0.0:7700\"\nupload_limit_mbit = 40\n\
                 [[share]]\nname = \"www\"\npath = \"{root}\"\nignore = [\"*.log\"]\nschedule = \"0 1 * * *\"\n\
                 [[share]]\nname = \"gone\"\npath = \"{root}/nope\"\n"
            ),
        )
        .unwrap();
        let out = check(&p).unwrap();
        assert!(
            out.starts_with(&format!("{}: ok\nnode web1 listens on 0.0.0.0:7700 (advertise: automatic)", p.display()))
        );
        assert!(out.contains("upload capped at 40 Mbit/s"), "{out}");
        assert!(out.contains(&format!(
            "  www {root} (send-receive), 1 ignore pattern(s), downloads at 0 1 * * * for 60 min\n"
        )));
        assert!(out.contains("gone") && out.contains("does not exist"), "{out}");
        std::fs::write(&p, "[node]\nname = \"web1\"\nlisten = \"0.0.0.0:7700\"\nbogus = 1\n").unwrap();
        let e = check(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:4: ", p.display())), "{e}");
    }

    #[test]
    fn a_reload_says_what_it_applied_and_what_waits_for_a_restart() {
        assert_eq!(reload_text(&ReloadReport::default()), "config reloaded\n  nothing changed\n");
        let r = ReloadReport {
            removed: vec!["logs".into()],
            applied: vec!["[node] upload_limit_mbit".into(), "share \"www\" ignore".into()],
            needs_restart: vec!["[node] listen".into()],
            ..Default::default()
        };
        assert_eq!(
            reload_text(&r),
            "config reloaded\n  shares stopped (files kept): logs\n  applied: [node] upload_limit_mbit, share \"www\" ignore\n  \
             takes effect at the next restart: [node] listen\n"
        );
    }
}
