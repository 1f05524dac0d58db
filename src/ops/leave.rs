//! `meshsync leave`: this node leaves the mesh. The running daemon tells its
//! connected peers (who forget it) and stops; then this node's keys, certificates,
//! pending invites and index leave its home, and `config.toml` becomes
//! `config.toml.left` (so `join` or `init` can use the home again). The shares'
//! folders are not touched.

use super::control;
use crate::daemon::LeaveReport;
use crate::home::Home;
use crate::index::Index;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the daemon has to stop after it told its peers.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What `leave` did.
#[derive(Debug)]
pub struct Left {
    /// Who heard, when a daemon ran.
    pub report: Option<LeaveReport>,
    /// What left the home.
    pub removed: Vec<PathBuf>,
    /// Where the config went.
    pub config: Option<PathBuf>,
    /// The shares' folders, untouched.
    pub folders: Vec<PathBuf>,
}

/// Leaves the mesh. Without a running daemon it refuses unless `offline` (the
/// peers are then not told).
pub async fn leave(home: &Home, offline: bool) -> anyhow::Result<Left> {
    if !home.node_key().exists() && !home.config().exists() {
        bail!("{} holds no node (no node.key, no config.toml)", home.dir().display());
    }
    let folders = crate::config::Config::load(&home.config())
        .map(|c| c.shares.into_iter().map(|s| s.path).collect())
        .unwrap_or_default();
    let report = match control::leave(home).await {
        Ok(r) => Some(r),
        Err(e) if control::not_running(&e) && offline => None,
        Err(e) if control::not_running(&e) => bail!(
            "no daemon runs with {}, so the peers cannot be told that this node leaves. Start it \
             (`meshsync run`, or `systemctl start meshsync`) and run `meshsync leave --yes` again; or \
             leave with `meshsync leave --yes --offline` and run `meshsync peers forget NAME` on the others",
            home.dir().display()
        ),
        Err(e) => return Err(e),
    };
    wait_index_free(&home.index(), if report.is_some() { STOP_WAIT } else { Duration::ZERO }).await?;
    let (removed, config) = forget_membership(home)?;
    Ok(Left { report, removed, config, folders })
}

/// What `leave` did, for people.
pub fn describe(l: &Left) -> String {
    let mut s = String::new();
    match &l.report {
        Some(r) => {
            let told = if r.told.is_empty() { "nobody".to_string() } else { r.told.join(", ") };
            s.push_str(&format!("left the mesh; told {told}; the daemon stopped\n"));
            if !r.not_told.is_empty() {
                s.push_str(&format!(
                    "not told: {} (run `meshsync peers forget NAME-OF-THIS-NODE` on those)\n",
                    r.not_told.join("; ")
                ));
            }
        }
        None => s.push_str("left the mesh without telling the peers (--offline)\n"),
    }
    for p in &l.removed {
        s.push_str(&format!("removed {}\n", p.display()));
    }
    if let Some(c) = &l.config {
        s.push_str(&format!("kept the config as {}\n", c.display()));
    }
    for f in &l.folders {
        s.push_str(&format!("untouched: {} (its files and its .meshsync/ folder)\n", f.display()));
    }
    s.push_str("if the daemon runs as a service: `systemctl disable meshsync`\n");
    s
}

/// Waits until no process holds the index (the daemon has stopped).
async fn wait_index_free(index: &Path, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match Index::open(index) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= within => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{} is still in use: is a daemon running with this home? Stop it, then run `meshsync leave --yes --offline`",
                    index.display()
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Removes this node's membership from its home: identity, CA, invites, index;
/// the config is kept as `config.toml.left`. Returns what was removed and where
/// the config went.
fn forget_membership(home: &Home) -> anyhow::Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let mut removed = Vec::new();
    for f in [home.node_key(), home.node_cert(), home.ca_key(), home.ca_cert()] {
        match std::fs::remove_file(&f) {
            Ok(()) => removed.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    for d in [home.invites(), home.index()] {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => removed.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", d.display())),
        }
    }
    let config = home.config();
    let kept = config.with_file_name("config.toml.left");
    let moved = match std::fs::rename(&config, &kept) {
        Ok(()) => Some(kept),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("renaming {}", config.display())),
    };
    Ok((removed, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_membership_leaves_the_home_and_the_config_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        crate::setup::init(&home, "a", "127.0.0.1:1".parse().unwrap(), &[]).unwrap();
        drop(Index::open(&home.index()).unwrap());
        std::fs::write(dir.path().join("h/other"), b"kept").unwrap();
        let (removed, config) = forget_membership(&home).unwrap();
        let names: Vec<String> = removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["node.key", "node.crt", "ca.key", "ca.crt", "index"]);
        assert_eq!(config, Some(home.dir().join("config.toml.left")));
        let left: Vec<String> = std::fs::read_dir(home.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(left, ["config.toml.left", "other"]);
        assert!(crate::identity::Identity::load(&home).is_err());
    }
}
