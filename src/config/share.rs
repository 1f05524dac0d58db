//! `[[share]]`: what a node does with one replicated folder, and how the table
//! is read and checked.

use super::{ignore_glob, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// What a node does with a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ShareMode {
    /// Announce local changes and apply remote ones.
    #[default]
    SendReceive,
    /// Announce local changes; never apply remote ones.
    SendOnly,
    /// Apply remote changes; never announce local ones.
    ReceiveOnly,
}

impl ShareMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareMode::SendReceive => "send-receive",
            ShareMode::SendOnly => "send-only",
            ShareMode::ReceiveOnly => "receive-only",
        }
    }
}

impl std::str::FromStr for ShareMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "send-receive" => Ok(Self::SendReceive),
            "send-only" => Ok(Self::SendOnly),
            "receive-only" => Ok(Self::ReceiveOnly),
            _ => Err(format!("unknown mode {s:?}: expected send-receive, send-only or receive-only")),
        }
    }
}

/// How many deletions one scan may record before the share pauses for the user
/// to confirm (`meshsync share confirm-deletes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeleteBrake {
    /// More than half of the share's files and folders, and at least [`DeleteBrake::MIN`].
    #[default]
    Half,
    /// More than this many.
    AtMost(u64),
    /// Never (`max_delete = 0`).
    Off,
}

impl DeleteBrake {
    /// Under the default rule, fewer deletions than this never stop a scan.
    pub const MIN: usize = 100;

    /// True if `would` deletions could be too many (then the live count is read).
    pub fn may_stop(&self, would: usize) -> bool {
        match *self {
            DeleteBrake::Half => would >= Self::MIN,
            DeleteBrake::AtMost(n) => would as u64 > n,
            DeleteBrake::Off => false,
        }
    }

    /// True if one scan may record `would` deletions among `live` entries.
    pub fn allows(&self, would: usize, live: usize) -> bool {
        match *self {
            DeleteBrake::Half => would < Self::MIN || would * 2 <= live,
            DeleteBrake::AtMost(n) => would as u64 <= n,
            DeleteBrake::Off => true,
        }
    }

    /// The rule in words, for the message that stops a scan.
    pub fn describe(&self) -> String {
        match *self {
            DeleteBrake::Half => format!("more than half, and at least {}, stops a scan", Self::MIN),
            DeleteBrake::AtMost(n) => format!("max_delete = {n}"),
            DeleteBrake::Off => "max_delete = 0: no limit".into(),
        }
    }
}

/// What happens to a file a peer's change replaces or deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Kept in the share's `.meshsync/versions/` for this many days.
    Trash {
        /// Days a version is kept.
        keep_days: u32,
    },
    /// Gone.
    Off,
}

impl Default for Versioning {
    fn default() -> Self {
        Versioning::Trash { keep_days: 7 }
    }
}

/// Whether this node compresses the chunks it sends of a share (zstd, per chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// Compressed where it pays: a chunk is sent compressed if that saves at least
    /// a tenth; data that does not compress is soon sent as it is without trying.
    #[default]
    Auto,
    /// Every chunk is compressed, and sent compressed whenever that is smaller.
    On,
    /// Never compressed.
    Off,
}

impl Compression {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::On => "on",
            Compression::Off => "off",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("compression {s:?}: expected \"auto\", \"on\" or \"off\"")),
        }
    }
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
    /// Least time between two scans (so announcements) of one changed path.
    pub min_interval: Duration,
    /// Whether the chunks this node sends of the share are compressed.
    pub compression: Compression,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShare {
    pub(super) name: Spanned<String>,
    pub(super) path: Spanned<PathBuf>,
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
    #[serde(default)]
    min_interval: Option<Spanned<toml::Value>>,
    #[serde(default)]
    compression: Option<Spanned<String>>,
}

/// How long a scheduled share's window stays open when `schedule_window_mins` is not set.
const DEFAULT_WINDOW_MINS: u64 = 60;

/// A path changed again this soon after it was scanned waits for the rest: a file
/// rewritten without pause is announced about once a second, not at every close.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest `min_interval` accepted: past a day it is surely a typo.
const MAX_MIN_INTERVAL: Duration = Duration::from_secs(86_400);

impl RawShare {
    /// Checks the table's values (its name and path are checked by the caller);
    /// `invalid` makes an error at a byte offset of the file.
    pub(super) fn into_config(
        self,
        invalid: &dyn Fn(usize, String) -> ConfigError,
    ) -> Result<ShareConfig, ConfigError> {
        let mut ignore = Vec::new();
        for g in self.ignore {
            ignore_glob(g.get_ref()).map_err(|e| invalid(g.span().start, format!("bad ignore pattern: {e}")))?;
            ignore.push(g.into_inner());
        }
        let schedule = match (self.schedule, self.schedule_window_mins) {
            (None, None) => None,
            (None, Some(w)) => {
                return Err(invalid(w.span().start, "schedule_window_mins needs a schedule = \"<cron>\"".into()))
            }
            (Some(pat), w) => {
                let mins = w.as_ref().map(|w| *w.get_ref()).unwrap_or(DEFAULT_WINDOW_MINS);
                let at = w.as_ref().map(|w| w.span().start).unwrap_or(pat.span().start);
                let window = Duration::from_secs(mins.saturating_mul(60));
                let sched = super::schedule::Schedule::parse(pat.get_ref(), window).map_err(|e| {
                    let at = if e == super::schedule::ScheduleError::EmptyWindow { at } else { pat.span().start };
                    invalid(at, e.to_string())
                })?;
                Some(sched)
            }
        };
        let min_interval = match &self.min_interval {
            None => DEFAULT_MIN_INTERVAL,
            Some(v) => duration(v.get_ref()).map_err(|m| invalid(v.span().start, format!("min_interval: {m}")))?,
        };
        let compression = match &self.compression {
            None => Compression::Auto,
            Some(c) => c.get_ref().parse().map_err(|m| invalid(c.span().start, m))?,
        };
        Ok(ShareConfig {
            name: self.name.into_inner(),
            path: self.path.into_inner(),
            mode: self.mode,
            ignore,
            schedule,
            versioning: match (self.versioning.as_ref().map(|v| v.get_ref().as_str()), &self.keep_days) {
                (Some("off"), Some(k)) => {
                    return Err(invalid(k.span().start, "keep_days needs versioning = \"trash\"".into()))
                }
                (Some("off"), None) => Versioning::Off,
                (None | Some("trash"), k) => Versioning::Trash { keep_days: k.as_ref().map_or(7, |k| *k.get_ref()) },
                (Some(other), _) => {
                    let at = self.versioning.as_ref().map_or(0, |v| v.span().start);
                    return Err(invalid(at, format!("versioning {other:?}: expected \"trash\" or \"off\"")));
                }
            },
            max_delete: match self.max_delete {
                None => DeleteBrake::Half,
                Some(0) => DeleteBrake::Off,
                Some(n) => DeleteBrake::AtMost(n),
            },
            min_interval,
            compression,
        })
    }
}

/// A duration as the config writes it: seconds as a number (`2`, `0.5`), or a
/// string with a unit (`"2s"`, `"500ms"`, `"1m"`).
fn duration(v: &toml::Value) -> Result<Duration, String> {
    let secs = match v {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => super::parse_duration(s)?.as_secs_f64(),
        other => return Err(format!("{other}: expected seconds (e.g. 2 or 0.5) or a string like \"2s\" or \"500ms\"")),
    };
    if !(0.0..=MAX_MIN_INTERVAL.as_secs_f64()).contains(&secs) {
        return Err(format!("{secs} s is out of range: 0 to {} s", MAX_MIN_INTERVAL.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_or_with_a_unit() {
        let d = |v: toml::Value| duration(&v);
        assert_eq!(d(2.into()), Ok(Duration::from_secs(2)));
        assert_eq!(d(0.5.into()), Ok(Duration::from_millis(500)));
        assert_eq!(d("2s".into()), Ok(Duration::from_secs(2)));
        assert_eq!(d("250ms".into()), Ok(Duration::from_millis(250)));
        assert_eq!(d("1m".into()), Ok(Duration::from_secs(60)));
        assert_eq!(d(0.into()), Ok(Duration::ZERO), "0 turns damping off");
        assert!(d("fast".into()).unwrap_err().contains("bad duration"));
        assert!(d((-1).into()).unwrap_err().contains("out of range"));
        assert!(d("2d".into()).unwrap_err().contains("out of range"), "a day at most");
        assert!(d(true.into()).unwrap_err().contains("expected seconds"));
    }
}
