//! `meshsync share list` and `share remove`: the shares of the config file, with
//! the running daemon's state of each when one runs.

use super::control;
use super::status::Status;
use crate::config::{Config, ShareConfig};
use crate::home::Home;
use crate::index::Index;
use anyhow::Context;
use std::fmt::Write;

/// How a configured share runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// No daemon runs with this home.
    NoDaemon,
    /// The daemon runs it.
    Running {
        /// Why it is paused, if it is.
        paused: Option<String>,
        /// Every connected peer has its versions.
        in_sync: bool,
    },
    /// The daemon does not run it (it could not start: its log says why).
    NotRunning,
}

/// One line of `share list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRow {
    /// Name.
    pub name: String,
    /// Local folder.
    pub path: String,
    /// send-receive, send-only or receive-only.
    pub mode: String,
    /// How it runs.
    pub state: RunState,
}

/// The configured shares, each with its state in the daemon's status if one runs.
pub fn rows(cfg: &Config, live: Option<&Status>) -> Vec<ShareRow> {
    cfg.shares
        .iter()
        .map(|s| {
            let state = match live {
                None => RunState::NoDaemon,
                Some(st) => match st.shares.iter().find(|x| x.name == s.name) {
                    Some(x) => RunState::Running { paused: x.paused.clone(), in_sync: x.in_sync },
                    None => RunState::NotRunning,
                },
            };
            ShareRow { name: s.name.clone(), path: s.path.display().to_string(), mode: s.mode.as_str().into(), state }
        })
        .collect()
}

/// The rows as aligned text.
pub fn table(rows: &[ShareRow]) -> String {
    if rows.is_empty() {
        return "no shares (add one with `meshsync share add NAME PATH`)\n".into();
    }
    let w = |f: fn(&ShareRow) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (wn, wp, wm) = (w(|r| r.name.len()).max(4), w(|r| r.path.len()).max(4), w(|r| r.mode.len()).max(4));
    let mut s = format!("{:<wn$}  {:<wp$}  {:<wm$}  STATE\n", "NAME", "PATH", "MODE");
    for r in rows {
        let state = match &r.state {
            RunState::NoDaemon => "daemon not running".to_string(),
            RunState::Running { paused: Some(p), .. } => format!("PAUSED: {p}"),
            RunState::Running { paused: None, in_sync: true } => "running, in sync".to_string(),
            RunState::Running { paused: None, in_sync: false } => "running, syncing".to_string(),
            RunState::NotRunning => "not running (see the daemon's log)".to_string(),
        };
        let _ = writeln!(s, "{:<wn$}  {:<wp$}  {:<wm$}  {state}", r.name, r.path, r.mode);
    }
    s
}

/// `meshsync share list`.
pub async fn list(home: &Home) -> anyhow::Result<String> {
    let cfg = Config::load(&home.config())?;
    let live = match control::status(home).await {
        Ok(st) => Some(st),
        Err(e) if control::not_running(&e) => None,
        Err(e) => return Err(e),
    };
    Ok(table(&rows(&cfg, live.as_ref())))
}

/// Who stopped the share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedBy {
    /// The running daemon, at once.
    Daemon,
    /// Nobody needed to: no daemon runs; its index was dropped here.
    NoDaemon,
}

/// `meshsync share remove`: takes the share's table out of config.toml, then has
/// the running daemon stop it at once (or, with none running, drops its index
/// here). Its files and marker stay. Returns the share as it was configured.
pub async fn remove(home: &Home, name: &str) -> anyhow::Result<(ShareConfig, RemovedBy)> {
    let gone = Config::remove_share(&home.config(), name)?;
    match control::reload(home).await {
        Ok(report) => {
            anyhow::ensure!(
                !report.shares.iter().any(|s| s == name),
                "share {name} left config.toml but the daemon still runs it: {}",
                report.failed.join("; ")
            );
            Ok((gone, RemovedBy::Daemon))
        }
        Err(e) if control::not_running(&e) => {
            let index = Index::open(&home.index()).with_context(|| {
                format!("share {name} left config.toml, but its index in {} cannot be opened", home.index().display())
            })?;
            index.forget_share(name)?;
            index.flush()?;
            Ok((gone, RemovedBy::NoDaemon))
        }
        Err(e) => Err(e.context(format!(
            "share {name} left config.toml, but the daemon did not confirm that it stopped it \
             (it applies the file within a second on its own)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{NodeStatus, ShareStatus};

    fn cfg() -> Config {
        let text = "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"www\"\npath = \"/srv/www\"\n\
                    [[share]]\nname = \"logs\"\npath = \"/srv/logs\"\nmode = \"receive-only\"\n";
        Config::parse(text, std::path::Path::new("c")).unwrap()
    }

    fn live(paused: Option<&str>) -> Status {
        Status {
            node: NodeStatus { id: "A".into(), name: "a".into(), listen: "127.0.0.1:1".into(), ..Default::default() },
            shares: vec![ShareStatus {
                name: "www".into(),
                path: "/srv/www".into(),
                mode: "send-receive".into(),
                paused: paused.map(String::from),
                in_sync: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_list_comes_from_the_config_with_the_daemons_state() {
        let offline = rows(&cfg(), None);
        assert_eq!(offline.iter().map(|r| r.state.clone()).collect::<Vec<_>>(), vec![RunState::NoDaemon; 2]);
        assert_eq!((offline[1].mode.as_str(), offline[1].path.as_str()), ("receive-only", "/srv/logs"));
        let running = rows(&cfg(), Some(&live(Some("disk full"))));
        assert_eq!(running[0].state, RunState::Running { paused: Some("disk full".into()), in_sync: true });
        assert_eq!(running[1].state, RunState::NotRunning, "in the config, not in the daemon");
        let text = table(&running);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME  PATH       MODE          STATE");
        assert_eq!(lines[1], "www   /srv/www   send-receive  PAUSED: disk full");
        assert_eq!(lines[2], "logs  /srv/logs  receive-only  not running (see the daemon's log)");
        assert!(table(&rows(&cfg(), Some(&live(None)))).contains("running, in sync"));
        assert!(table(&[]).contains("share add"));
    }
}
