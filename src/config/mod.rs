//! The node's TOML config: parsing, defaults, validation with file:line errors.

mod edit;
mod modes;
pub mod schedule;

pub use modes::{DeleteBrake, LogFormat, ShareMode, Versioning};

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A config error that names the file, line and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file names no share of that name.
    #[error("{path}: no share named {name:?} (`meshsync share list` shows them)")]
    NoShare {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A value is wrong.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// `[node]`: this node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Human name shown to peers.
    pub name: String,
    /// UDP address the daemon listens on.
    pub listen: SocketAddr,
    /// Addresses told to peers as configured; empty: the listen address, or for a
    /// wildcard listen this host's interface addresses (see `net::addrs`).
    pub advertise: Vec<SocketAddr>,
    /// Full rescan period.
    pub rescan_interval: Duration,
    /// Free space to keep on a share's disk; below it downloads pause.
    pub min_free_bytes: u64,
    /// Cap on this node's upload in Mbit/s (like rsync's `--bwlimit`); `None`: no cap.
    pub upload_limit_mbit: Option<u64>,
    /// TCP address serving Prometheus metrics at `/metrics`; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log: LogFormat,
    /// Join connections (strangers with a token, or without) served at once.
    pub max_join_connections: usize,
    /// Join connections served at once from one source address (an IPv6 /64).
    pub max_join_per_address: usize,
    /// How long after its first packet a connection must have finished its
    /// handshake, and a join connection sent its whole request.
    pub join_deadline: Duration,
    /// MiB of index pages kept in memory (the index database's cache).
    pub index_cache_mib: u64,
}

/// `[[share]]`: one replicated folder.
#[derive(Clone, Debug)]
pub struct ShareConfig {
    /// Name, equal on every node that replicates it.
    pub name: String,
    /// Local folder.
    pub path: PathBuf,
    /// Send/receive mode.
    pub mode: ShareMode,
    /// Extra ignore patterns (globs on the relative path or file name).
    pub ignore: Vec<String>,
    /// When downloads may start; `None`: at any time.
    pub schedule: Option<crate::config::schedule::Schedule>,
    /// How many deletions one scan may record.
    pub max_delete: DeleteBrake,
    /// What happens to a file a peer's change replaces or deletes.
    pub versioning: Versioning,
}

/// A node's whole config.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[node]`.
    pub node: NodeConfig,
    /// `[[share]]` tables.
    pub shares: Vec<ShareConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    share: Vec<RawShare>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    listen: SocketAddr,
    #[serde(default = "no_advertise")]
    advertise: Spanned<Vec<SocketAddr>>,
    #[serde(default = "default_rescan")]
    rescan_interval_secs: Spanned<u64>,
    #[serde(default = "default_min_free")]
    min_free_mib: Spanned<u64>,
    #[serde(default)]
    upload_limit_mbit: Option<u64>,
    #[serde(default)]
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    log: LogFormat,
    #[serde(default = "default_max_joins")]
    max_join_connections: Spanned<usize>,
    #[serde(default = "default_max_joins_per_address")]
    max_join_per_address: Spanned<usize>,
    #[serde(default = "default_join_deadline")]
    join_deadline_secs: Spanned<usize>,
    #[serde(default = "default_index_cache")]
    index_cache_mib: Spanned<usize>,
}

fn default_index_cache() -> Spanned<usize> {
    Spanned::new(0..0, crate::index::DEFAULT_CACHE_MIB as usize)
}

fn default_max_joins() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}
fn default_max_joins_per_address() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}
fn default_join_deadline() -> Spanned<usize> {
    Spanned::new(0..0, 10)
}
fn default_rescan() -> Spanned<u64> {
    Spanned::new(0..0, 3600)
}
fn no_advertise() -> Spanned<Vec<SocketAddr>> {
    Spanned::new(0..0, Vec::new())
}
fn default_min_free() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    name: Spanned<String>,
    path: Spanned<PathBuf>,
    #[serde(default)]
    mode: ShareMode,
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    schedule_window_mins: Option<Spanned<u64>>,
    #[serde(default)]
    max_delete: Option<u64>,
    #[serde(default)]
    versioning: Option<Spanned<String>>,
    #[serde(default)]
    keep_days: Option<Spanned<u32>>,
}

/// How long a scheduled share's window stays open when `schedule_window_mins` is not set.
const DEFAULT_WINDOW_MINS: u64 = 60;

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Compiles one ignore pattern; the config checks patterns with this too, so a
/// pattern it accepts is one every share can use.
///
/// A trailing `/` (`build/`, a directory) is dropped: an ignored directory covers
/// its contents anyway. An escaped one (`a\/`) stays: dropping it would leave a
/// dangling `\`, and the config accepted patterns that then stopped the share
/// from starting (seen while writing the config fuzz target's check).
pub fn ignore_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    let trimmed = pattern.trim_end_matches('/');
    let escaped = trimmed.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1;
    globset::Glob::new(if escaped { pattern } else { trimmed })
}

/// Checks a share name: it travels on the wire and names index trees.
pub fn valid_share_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("share name must be 1 to 64 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("share name {name:?} may only use letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

impl Config {
    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            invalid(offset, e.message().to_string())
        })?;
        let name = raw.node.name;
        if name.get_ref().trim().is_empty() {
            return Err(invalid(name.span().start, "node name must not be empty".into()));
        }
        if *raw.node.rescan_interval_secs.get_ref() == 0 {
            return Err(invalid(
                raw.node.rescan_interval_secs.span().start,
                "rescan_interval_secs must be a whole number of seconds, at least 1".into(),
            ));
        }
        let mut shares: Vec<ShareConfig> = Vec::new();
        for s in raw.share {
            valid_share_name(s.name.get_ref()).map_err(|m| invalid(s.name.span().start, m))?;
            if shares.iter().any(|o| &o.name == s.name.get_ref()) {
                return Err(invalid(s.name.span().start, format!("share {:?} is defined twice", s.name.get_ref())));
            }
            if !s.path.get_ref().is_absolute() {
                return Err(invalid(s.path.span().start, "share path must be absolute".into()));
            }
            let mut ignore = Vec::new();
            for g in s.ignore {
                ignore_glob(g.get_ref()).map_err(|e| invalid(g.span().start, format!("bad ignore pattern: {e}")))?;
                ignore.push(g.into_inner());
            }
            let schedule = match (s.schedule, s.schedule_window_mins) {
                (None, None) => None,
                (None, Some(w)) => {
                    return Err(invalid(w.span().start, "schedule_window_mins needs a schedule = \"<cron>\"".into()))
                }
                (Some(pat), w) => {
                    let mins = w.as_ref().map(|w| *w.get_ref()).unwrap_or(DEFAULT_WINDOW_MINS);
                    let at = w.as_ref().map(|w| w.span().start).unwrap_or(pat.span().start);
                    let window = Duration::from_secs(mins.saturating_mul(60));
                    let sched = crate::config::schedule::Schedule::parse(pat.get_ref(), window).map_err(|e| {
                        let at = if e == crate::config::schedule::ScheduleError::EmptyWindow {
                            at
                        } else {
                            pat.span().start
                        };
                        invalid(at, e.to_string())
                    })?;
                    Some(sched)
                }
            };
            shares.push(ShareConfig {
                name: s.name.into_inner(),
                path: s.path.into_inner(),
                mode: s.mode,
                ignore,
                schedule,
                versioning: match (s.versioning.as_ref().map(|v| v.get_ref().as_str()), &s.keep_days) {
                    (Some("off"), Some(k)) => {
                        return Err(invalid(k.span().start, "keep_days needs versioning = \"trash\"".into()))
                    }
                    (Some("off"), None) => Versioning::Off,
                    (None | Some("trash"), k) => {
                        Versioning::Trash { keep_days: k.as_ref().map_or(7, |k| *k.get_ref()) }
                    }
                    (Some(other), _) => {
                        let at = s.versioning.as_ref().map_or(0, |v| v.span().start);
                        return Err(invalid(at, format!("versioning {other:?}: expected \"trash\" or \"off\"")));
                    }
                },
                max_delete: match s.max_delete {
                    None => DeleteBrake::Half,
                    Some(0) => DeleteBrake::Off,
                    Some(n) => DeleteBrake::AtMost(n),
                },
            });
        }
        let metrics_listen = match &raw.node.metrics_listen {
            Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    m.span().start,
                    format!("metrics_listen {:?} must be ip:port, e.g. \"127.0.0.1:9477\"", m.get_ref()),
                )
            })?),
            None => None,
        };
        let min_free = &raw.node.min_free_mib;
        let min_free_bytes = min_free.get_ref().checked_mul(1 << 20).ok_or_else(|| {
            invalid(min_free.span().start, format!("min_free_mib {} is more than any disk holds", min_free.get_ref()))
        })?;
        for (key, n, most) in [
            ("max_join_connections", &raw.node.max_join_connections, 1024),
            ("max_join_per_address", &raw.node.max_join_per_address, 1024),
            ("join_deadline_secs", &raw.node.join_deadline_secs, 300),
            ("index_cache_mib", &raw.node.index_cache_mib, 1 << 20),
        ] {
            if !(1..=most).contains(n.get_ref()) {
                return Err(invalid(n.span().start, format!("{key} must be a whole number from 1 to {most}")));
            }
        }
        let listen = raw.node.listen;
        let advertise_at = raw.node.advertise.span().start;
        let advertise = raw.node.advertise.into_inner();
        if let Some(bad) = advertise.iter().find(|a| !crate::net::addrs::dialable(a)) {
            return Err(invalid(
                advertise_at,
                format!("advertise {bad} is not an address peers can dial: name this host's own address and port, e.g. \"203.0.113.7:7700\""),
            ));
        }
        Ok(Config {
            node: NodeConfig {
                name: name.into_inner(),
                listen,
                advertise,
                rescan_interval: Duration::from_secs(*raw.node.rescan_interval_secs.get_ref()),
                min_free_bytes,
                upload_limit_mbit: raw.node.upload_limit_mbit.filter(|m| *m > 0),
                metrics_listen,
                log: raw.node.log,
                max_join_connections: raw.node.max_join_connections.into_inner(),
                max_join_per_address: raw.node.max_join_per_address.into_inner(),
                join_deadline: Duration::from_secs(*raw.node.join_deadline_secs.get_ref() as u64),
                index_cache_mib: *raw.node.index_cache_mib.get_ref() as u64,
            },
            shares,
        })
    }

    /// Loads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// The text of a new config file.
    pub fn initial_text(name: &str, listen: SocketAddr, advertise: &[SocketAddr]) -> String {
        let advertise = if advertise.is_empty() {
            "# advertise = [\"203.0.113.7:7700\"]   # addresses told to peers (default: the listen address, or\n\
             #                                      # this host's interface addresses for a 0.0.0.0 / [::] listen)\n"
                .to_string()
        } else {
            let list: Vec<String> = advertise.iter().map(|a| format!("\"{a}\"")).collect();
            format!("advertise = [{}]   # addresses told to peers\n", list.join(", "))
        };
        format!(
            "# meshsync node config; see README.md#config-reference\n\
             [node]\n\
             name = {}\n\
             listen = \"{listen}\"\n\
             {advertise}\
             rescan_interval_secs = 3600\n\
             min_free_mib = 256\n\
             # upload_limit_mbit = 100              # cap on upload, like rsync --bwlimit (default: none)\n\
             # metrics_listen = \"127.0.0.1:9477\"   # Prometheus metrics at /metrics (default: off)\n\
             # max_join_connections = 16            # join connections served at once (default 16)\n\
             # max_join_per_address = 4             # ... from one address (default 4)\n\
             # join_deadline_secs = 10              # a joiner's handshake and request, from its first packet\n\
             # index_cache_mib = 64                 # index pages kept in memory (about 3x resident)\n\
             log = \"human\"\n",
            toml_string(name)
        )
    }

    /// Appends a `[[share]]` table to the config file, keeping comments, after checking it.
    pub fn append_share(path: &Path, share: &ShareConfig) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        let mut add = format!(
            "\n[[share]]\nname = {}\npath = {}\nmode = \"{}\"\n",
            toml_string(&share.name),
            toml_string(&share.path.to_string_lossy()),
            share.mode.as_str()
        );
        if !share.ignore.is_empty() {
            let globs: Vec<String> = share.ignore.iter().map(|g| toml_string(g)).collect();
            add.push_str(&format!("ignore = [{}]\n", globs.join(", ")));
        }
        match share.versioning {
            Versioning::Trash { keep_days: 7 } => {}
            Versioning::Trash { keep_days } => add.push_str(&format!("keep_days = {keep_days}\n")),
            Versioning::Off => add.push_str("versioning = \"off\"\n"),
        }
        match share.max_delete {
            DeleteBrake::Half => {}
            DeleteBrake::Off => add.push_str("max_delete = 0\n"),
            DeleteBrake::AtMost(n) => add.push_str(&format!("max_delete = {n}\n")),
        }
        if let Some(s) = &share.schedule {
            add.push_str(&format!(
                "schedule = {}\nschedule_window_mins = {}\n",
                toml_string(s.pattern()),
                s.window_mins()
            ));
        }
        let new_text = format!("{}{}", text, add);
        let cfg = Self::parse(&new_text, path)?;
        crate::home::write_atomic(path, new_text.as_bytes(), 0o644)
            .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        Ok(cfg)
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/h/config.toml")).unwrap_err().to_string()
    }

    const NODE: &str = "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"b\"\npath = \"/srv/b\"\n";

    #[test]
    fn schedules_parse_and_bad_ones_name_their_line() {
        let c = Config::parse(&format!("{NODE}schedule = \"30 2 * * *\"\n"), Path::new("c")).unwrap();
        assert_eq!(c.shares[0].schedule.as_ref().map(|s| s.describe()), Some("30 2 * * * for 60 min".into()));
        let e = err(&format!("{NODE}schedule = \"nightly\"\n"));
        assert!(e.starts_with("/h/config.toml:7: bad schedule \"nightly\""), "{e}");
        let e = err(&format!("{NODE}schedule = \"0 1 * * *\"\nschedule_window_mins = 0\n"));
        assert!(e.starts_with("/h/config.toml:8: schedule_window_mins must be at least 1"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmetrics_listen = \"localhost\"\n");
        assert!(e.starts_with("/h/config.toml:4: metrics_listen \"localhost\" must be ip:port"), "{e}");
        let e = err(&format!("{NODE}schedule_window_mins = 30\n"));
        assert!(e.starts_with("/h/config.toml:7: schedule_window_mins needs a schedule"), "{e}");
        assert!(Config::parse(NODE, Path::new("c")).unwrap().shares[0].schedule.is_none());
    }

    #[test]
    fn defaults_and_shares() {
        let c = Config::parse(
            "[node]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\n[[share]]\nname = \"web\"\npath = \"/srv/www\"\nmode = \"receive-only\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.node.rescan_interval, Duration::from_secs(3600));
        assert_eq!((c.node.max_join_connections, c.node.max_join_per_address), (16, 4));
        assert_eq!(c.node.index_cache_mib, crate::index::DEFAULT_CACHE_MIB);
        assert_eq!(c.node.join_deadline, Duration::from_secs(10));
        assert!(c.node.advertise.is_empty(), "automatic");
        assert_eq!(c.shares[0].mode, ShareMode::ReceiveOnly);
        assert_eq!(c.shares[0].max_delete, DeleteBrake::Half);
        assert_eq!(c.shares[0].versioning, Versioning::Trash { keep_days: 7 });
        let e = err(&format!("{NODE}versioning = \"simple\"\n"));
        assert!(e.starts_with("/h/config.toml:7: versioning \"simple\": expected"), "{e}");
        let e = err(&format!("{NODE}versioning = \"off\"\nkeep_days = 3\n"));
        assert!(e.starts_with("/h/config.toml:8: keep_days needs"), "{e}");
    }

    #[test]
    fn the_delete_brake_stops_more_than_half_and_at_least_a_hundred() {
        let half = DeleteBrake::Half;
        assert!(half.allows(99, 100), "fewer than 100: always");
        assert!(half.allows(100, 200), "exactly half");
        assert!(!half.allows(101, 200));
        assert!(!half.allows(100, 100), "all of them");
        assert!(!half.may_stop(99) && half.may_stop(100));
        assert!(DeleteBrake::Off.allows(1_000_000, 1));
        assert!(!DeleteBrake::AtMost(10).allows(11, 1_000_000));
        assert!(DeleteBrake::AtMost(10).allows(10, 10));
    }

    #[test]
    fn errors_name_file_line_and_expectation() {
        let e = err("[node]\nname = \"a\"\nlisten = \"nope\"\n");
        assert!(e.starts_with("/h/config.toml:3: "), "{e}");
        assert!(e.contains("socket address"), "{e}");
        let e = err(
            "[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"/x\"\nmode = \"both\"\n",
        );
        assert!(e.starts_with("/h/config.toml:7: "), "{e}");
        assert!(e.contains("send-receive"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nrescan_interval_secs = 0\n");
        assert!(e.starts_with("/h/config.toml:4: "), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"rel\"\n");
        assert!(e.starts_with("/h/config.toml:6: ") && e.contains("absolute"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[share]]\nname = \"w\"\npath = \"/a\"\n[[share]]\nname = \"w\"\npath = \"/b\"\n");
        assert!(e.starts_with("/h/config.toml:8: ") && e.contains("twice"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"0.0.0.0:1\"\nadvertise = [\"0.0.0.0:1\"]\n");
        assert!(e.starts_with("/h/config.toml:4: advertise 0.0.0.0:1 is not an address peers can dial"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmin_free_mib = 17592186044416\n");
        assert!(e.starts_with("/h/config.toml:4: min_free_mib"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nindex_cache_mib = 0\n");
        assert!(e.starts_with("/h/config.toml:4: index_cache_mib must be a whole number from 1"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nmax_join_connections = 0\n");
        assert!(e.starts_with("/h/config.toml:4: max_join_connections must be a whole number from 1"), "{e}");
        let e = err("[node]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
        assert!(e.starts_with("/h/config.toml:4: ") && e.contains("unknown field"), "{e}");
    }

    #[test]
    fn append_share_keeps_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, Config::initial_text("n \"q\"", "127.0.0.1:9".parse().unwrap(), &[])).unwrap();
        let share = ShareConfig {
            name: "docs".into(),
            path: "/tmp/some dir/ü".into(),
            mode: ShareMode::SendOnly,
            ignore: vec!["*.log".into()],
            schedule: Some(crate::config::schedule::Schedule::parse("0 1 * * 1-5", Duration::from_secs(7200)).unwrap()),
            max_delete: DeleteBrake::AtMost(500),
            versioning: Versioning::Trash { keep_days: 30 },
        };
        let c = Config::append_share(&p, &share).unwrap();
        assert_eq!(c.node.name, "n \"q\"");
        assert_eq!(c.shares[0].path, PathBuf::from("/tmp/some dir/ü"));
        assert_eq!(c.shares[0].schedule.as_ref().map(|s| s.describe()), Some("0 1 * * 1-5 for 120 min".into()));
        assert_eq!(c.shares[0].max_delete, DeleteBrake::AtMost(500));
        assert_eq!(c.shares[0].versioning, Versioning::Trash { keep_days: 30 });
        assert!(std::fs::read_to_string(&p).unwrap().starts_with("# meshsync node config"));
        assert!(Config::append_share(&p, &share).unwrap_err().to_string().contains("twice"));
    }
}
