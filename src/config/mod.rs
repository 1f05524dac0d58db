//! The node's TOML config: parsing, defaults, validation with file:line errors.

mod edit;
pub mod schedule;
mod share;

use share::RawShare;
pub use share::{Compression, DeleteBrake, ShareConfig, ShareMode, Versioning, DEFAULT_MIN_INTERVAL};

use serde::{Deserialize, Serialize};
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

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}: expected human or json")),
        }
    }
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
    /// Cap on this node's downloads in Mbit/s, all shares and peers together; `None`: no cap.
    pub download_limit_mbit: Option<u64>,
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
    /// Largest bench blob this node writes or fetches (`meshsync bench`, a peer's offer).
    pub bench_max_bytes: u64,
    /// Deleted entries are forgotten this many days after the delete, once every
    /// member has seen it (see `sync::tombstones`).
    pub tombstone_days: u32,
}

/// Default of `bench_max_mib`.
pub const DEFAULT_BENCH_MAX_MIB: u64 = 4 << 10;
/// Largest `bench_max_mib`: 64 GiB.
pub const MAX_BENCH_MIB: u64 = 64 << 10;
/// Default of `tombstone_days`.
pub const DEFAULT_TOMBSTONE_DAYS: u32 = 30;
/// Largest `tombstone_days` (a hundred years: "never", in practice).
pub const MAX_TOMBSTONE_DAYS: u32 = 36_500;

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
    download_limit_mbit: Option<u64>,
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
    #[serde(default = "default_bench_max")]
    bench_max_mib: Spanned<u64>,
    #[serde(default = "default_tombstone_days")]
    tombstone_days: Spanned<u32>,
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
fn default_bench_max() -> Spanned<u64> {
    Spanned::new(0..0, DEFAULT_BENCH_MAX_MIB)
}
fn default_tombstone_days() -> Spanned<u32> {
    Spanned::new(0..0, DEFAULT_TOMBSTONE_DAYS)
}

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

/// Parses a duration: a number (`2`, `0.5`) with an optional unit, `ms`, `s`
/// (the default), `m`, `h` or `d`: `500ms`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}: expected e.g. 500ms, 30s, 15m, 1h or 2d"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("bad duration {s:?}: too long"))
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
            shares.push(s.into_config(&invalid)?);
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
        let bench = &raw.node.bench_max_mib;
        if !(1..=MAX_BENCH_MIB).contains(bench.get_ref()) {
            return Err(invalid(
                bench.span().start,
                format!("bench_max_mib {} must be 1 to {MAX_BENCH_MIB} (64 GiB)", bench.get_ref()),
            ));
        }
        let days = &raw.node.tombstone_days;
        if !(1..=MAX_TOMBSTONE_DAYS).contains(days.get_ref()) {
            return Err(invalid(
                days.span().start,
                format!("tombstone_days {} must be a whole number of days, 1 to {MAX_TOMBSTONE_DAYS}", days.get_ref()),
            ));
        }
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
                download_limit_mbit: raw.node.download_limit_mbit.filter(|m| *m > 0),
                metrics_listen,
                log: raw.node.log,
                max_join_connections: raw.node.max_join_connections.into_inner(),
                max_join_per_address: raw.node.max_join_per_address.into_inner(),
                join_deadline: Duration::from_secs(*raw.node.join_deadline_secs.get_ref() as u64),
                index_cache_mib: *raw.node.index_cache_mib.get_ref() as u64,
                bench_max_bytes: bench.get_ref() << 20,
                tombstone_days: *days.get_ref(),
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
             # download_limit_mbit = 100            # cap on downloads, every share and peer together (default: none)\n\
             # metrics_listen = \"127.0.0.1:9477\"   # Prometheus metrics at /metrics (default: off)\n\
             # max_join_connections = 16            # join connections served at once (default 16)\n\
             # max_join_per_address = 4             # ... from one address (default 4)\n\
             # join_deadline_secs = 10              # a joiner's handshake and request, from its first packet\n\
             # index_cache_mib = 64                 # index pages kept in memory (about 3x resident)\n\
             # bench_max_mib = 4096                 # largest bench blob written or fetched here\n\
             # tombstone_days = 30                  # forget deletions this old that every member has seen\n\
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
        if share.compression != Compression::Auto {
            add.push_str(&format!("compression = \"{}\"\n", share.compression.as_str()));
        }
        match share.max_delete {
            DeleteBrake::Half => {}
            DeleteBrake::Off => add.push_str("max_delete = 0\n"),
            DeleteBrake::AtMost(n) => add.push_str(&format!("max_delete = {n}\n")),
        }
        if share.min_interval != DEFAULT_MIN_INTERVAL {
            add.push_str(&format!("min_interval = \"{}ms\"\n", share.min_interval.as_millis()));
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
mod tests;
