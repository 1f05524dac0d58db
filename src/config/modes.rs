//! The modes a share or node runs in: how it syncs, brakes deletions, keeps
//! replaced files, and logs.

use serde::{Deserialize, Serialize};

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
