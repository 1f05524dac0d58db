//! `meshsync status`: what a node knows of its peers and shares. The JSON shape is
//! stable and documented in README.md.

use crate::daemon::NodeSnapshot;
use crate::ids::NodeId;
use crate::stats::{CounterSnapshot, Transfer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;

/// The whole status document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// One line: "in sync", or "not in sync: ..." (e.g. "2 peers unreachable").
    #[serde(default)]
    pub summary: String,
    /// This node.
    pub node: NodeStatus,
    /// Known peers.
    pub peers: Vec<PeerStatus>,
    /// Shares.
    pub shares: Vec<ShareStatus>,
    /// Downloads in progress.
    pub transfers: Vec<Transfer>,
    /// Counters since start.
    pub counters: CounterSnapshot,
}

/// This node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeStatus {
    /// Node id (base32).
    pub id: String,
    /// Name.
    pub name: String,
    /// Listen address.
    pub listen: String,
    /// admin (holds the CA key), member, or no-invite.
    #[serde(default)]
    pub role: String,
    /// Whole days its certificate stays valid (renewed through an admin when fewer
    /// than 30 are left; negative: expired).
    #[serde(default)]
    pub certificate_days_left: i64,
    /// Join connections (strangers not yet answered) holding one of the
    /// `max_join_connections` places now.
    #[serde(default)]
    pub join_connections: usize,
}

/// One known peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct PeerStatus {
    /// Node id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Addresses it advertises.
    pub addresses: Vec<String>,
    /// Connected now.
    pub connected: bool,
    /// Address of the live connection.
    pub address: Option<String>,
    /// "connected", "unreachable", or "not tried yet".
    #[serde(default)]
    pub state: String,
    /// When unreachable: the addresses the last dial tried.
    #[serde(default)]
    pub tried: Vec<String>,
    /// When unreachable: why the last dial failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When unreachable: for how many seconds.
    #[serde(default)]
    pub unreachable_secs: Option<u64>,
}

impl PeerStatus {
    /// True when a dial of it failed and it is not connected.
    pub fn unreachable(&self) -> bool {
        !self.connected && self.last_error.is_some()
    }
}

/// One share.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ShareStatus {
    /// Name.
    pub name: String,
    /// Local folder.
    pub path: String,
    /// send-receive, send-only or receive-only.
    pub mode: String,
    /// Files present.
    pub files: u64,
    /// Directories present.
    pub dirs: u64,
    /// Bytes in files.
    pub bytes: u64,
    /// Local changes not announced (receive-only).
    pub local_changes: u64,
    /// The first of them, by path (`meshsync revert` puts the mesh's version back).
    #[serde(default)]
    pub local_change_paths: Vec<String>,
    /// The first paths a peer has a newer version of than this node, by path.
    #[serde(default)]
    pub needed_paths: Vec<String>,
    /// Why the share is paused, if it is.
    pub paused: Option<String>,
    /// True when every connected peer of this share has exactly our versions.
    pub in_sync: bool,
    /// A scan runs, or one asked for (`meshsync rescan`) has not finished.
    #[serde(default)]
    pub scanning: bool,
    /// The counts (files, what each peer needs) are from before the index's latest
    /// changes: it keeps changing (a scan, an index exchange) and is counted again
    /// a moment later. Never in sync meanwhile.
    #[serde(default)]
    pub counting: bool,
    /// Per peer that takes part in this share.
    pub peers: Vec<SharePeerStatus>,
    /// The transfer window, for a share with a schedule.
    #[serde(default)]
    pub schedule: Option<WindowStatus>,
}

/// Where a scheduled share stands against its transfer windows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WindowStatus {
    /// The cron pattern and window length, as configured.
    pub pattern: String,
    /// True inside a window: downloads may start.
    pub open: bool,
    /// When the window closes (open) or opens next (closed), local time, RFC 3339;
    /// none if the pattern never matches again.
    pub until: Option<String>,
}

impl WindowStatus {
    /// From a share's schedule at `now`.
    pub fn of(schedule: &crate::config::schedule::Schedule, now: &chrono::DateTime<chrono::Local>) -> Self {
        use crate::config::schedule::Window;
        let (open, until) = match schedule.at(now) {
            Window::Open { closes } => (true, Some(closes)),
            Window::Closed { opens } => (false, opens),
        };
        let until = until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
        Self { pattern: schedule.describe(), open, until }
    }
}

/// One peer's standing in one share.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SharePeerStatus {
    /// Node id.
    pub id: String,
    /// Connected now.
    pub connected: bool,
    /// Same versions of every path on both sides.
    pub in_sync: bool,
    /// Paths where the peer has a version we lack.
    pub we_need: u64,
    /// Paths where we have a version the peer lacks.
    pub they_need: u64,
}

/// The status document of a node's snapshot; `now` places schedule windows.
pub fn build(snap: &NodeSnapshot, now: chrono::DateTime<chrono::Local>) -> Status {
    let live: HashMap<NodeId, SocketAddr> = snap.peers.iter().filter_map(|p| Some((p.id, p.connected?))).collect();
    let peers = snap
        .peers
        .iter()
        .map(|p| PeerStatus {
            id: p.id.to_string(),
            name: p.name.clone(),
            addresses: p.addrs.iter().map(|a| a.to_string()).collect(),
            connected: p.connected.is_some(),
            address: p.connected.map(|a| a.to_string()),
            state: match (&p.connected, &p.unreachable) {
                (Some(_), _) => "connected",
                (None, Some(_)) => "unreachable",
                (None, None) => "not tried yet",
            }
            .to_string(),
            tried: p.unreachable.iter().flat_map(|u| u.tried.iter().map(|a| a.to_string())).collect(),
            last_error: p.unreachable.as_ref().map(|u| u.error.clone()),
            unreachable_secs: p.unreachable.as_ref().map(|u| u.for_.as_secs()),
        })
        .collect();
    let shares = snap
        .shares
        .iter()
        .map(|share| {
            let sum = &share.summary;
            let share_peers: Vec<SharePeerStatus> = sum
                .peers
                .iter()
                .map(|(peer, we_need, they_need)| SharePeerStatus {
                    id: peer.to_string(),
                    connected: live.contains_key(peer),
                    in_sync: share.summary_current && *we_need == 0 && *they_need == 0,
                    we_need: *we_need,
                    they_need: *they_need,
                })
                .collect();
            ShareStatus {
                name: share.name.clone(),
                path: share.path.display().to_string(),
                mode: share.mode.as_str().to_string(),
                files: sum.files,
                dirs: sum.dirs,
                bytes: sum.bytes,
                local_changes: sum.local_changes,
                local_change_paths: sum.local_change_paths.clone(),
                needed_paths: sum.needed_paths.clone(),
                paused: share.paused.clone(),
                in_sync: share.summary_current && share_peers.iter().filter(|p| p.connected).all(|p| p.in_sync),
                scanning: share.scanning,
                counting: !share.summary_current,
                peers: share_peers,
                schedule: share.schedule.as_ref().map(|s| WindowStatus::of(s, &now)),
            }
        })
        .collect();
    let mut st = Status {
        summary: String::new(),
        node: NodeStatus {
            id: snap.id.to_string(),
            name: snap.name.clone(),
            listen: snap.listen.to_string(),
            role: snap.role.as_str().to_string(),
            certificate_days_left: (snap.certificate_expires - now.timestamp()).div_euclid(86_400),
            join_connections: snap.join_connections,
        },
        peers,
        shares,
        transfers: snap.transfers.clone(),
        counters: snap.counters.clone(),
    };
    st.summary = st.summary_line();
    st
}

impl Status {
    /// What still keeps the mesh from having caught up on `share` (all shares if
    /// None): no peer connected, a scan not done, a pause, a peer offline or behind,
    /// a transfer. Empty when every peer known in every such share has exactly this
    /// node's versions.
    pub fn behind(&self, share: Option<&str>) -> Vec<String> {
        self.behind_as(share, Waiting::ForEveryMember)
    }

    /// [`Status::behind`], waiting for every member or only for connected peers.
    pub fn behind_as(&self, share: Option<&str>, waiting: Waiting) -> Vec<String> {
        let name_of = |id: &str| self.peers.iter().find(|p| p.id == id).map_or(id.to_string(), |p| p.name.clone());
        let mut why = Vec::new();
        if !self.peers.iter().any(|p| p.connected) {
            why.push("no peer is connected".to_string());
        }
        for sh in self.shares.iter().filter(|s| share.is_none_or(|n| n == s.name)) {
            if sh.scanning {
                why.push(format!("{}: scanning", sh.name));
            }
            if sh.counting {
                why.push(format!("{}: counting what each side needs", sh.name));
            }
            if let Some(p) = &sh.paused {
                why.push(format!("{}: paused ({p})", sh.name));
            }
            // Only this side's downloads wait for the window; a peer behind is not.
            let we_need = sh.peers.iter().any(|p| p.we_need > 0);
            if let Some(w) = sh.schedule.as_ref().filter(|w| !w.open && we_need) {
                let when = w.until.as_deref().map_or("never again".to_string(), |u| format!("at {u}"));
                why.push(format!("{}: outside its transfer window ({}; opens {when})", sh.name, w.pattern));
            }
            // Peers are known per share from their Hello or the index they sent; with
            // something to share and no peer known, nobody is known to have it.
            if sh.peers.is_empty() && sh.files + sh.dirs > 0 {
                why.push(format!("{}: no peer is known to take part in it yet", sh.name));
            }
            for p in &sh.peers {
                let peer = name_of(&p.id);
                if !p.connected {
                    if waiting == Waiting::ForEveryMember {
                        why.push(format!("{}: {peer} is unreachable", sh.name));
                    }
                } else if !p.in_sync {
                    why.push(format!("{}: {peer} behind (we need {}, they need {})", sh.name, p.we_need, p.they_need));
                }
            }
            // A member that could not be reached since this daemon started may take
            // part in the share too: nobody can tell it has caught up.
            if waiting == Waiting::ForEveryMember {
                for p in self.peers.iter().filter(|p| p.unreachable() && !sh.peers.iter().any(|sp| sp.id == p.id)) {
                    why.push(format!("{}: {} is unreachable", sh.name, p.name));
                }
            }
            for t in self.transfers.iter().filter(|t| t.share == sh.name) {
                why.push(format!("{}: receiving {}", sh.name, t.path));
            }
        }
        why
    }

    /// "in sync", or "not in sync: " and the main reason: unreachable peers first,
    /// as they are what a user must act on.
    pub fn summary_line(&self) -> String {
        let unreachable = self.peers.iter().filter(|p| p.unreachable()).count();
        // Just learned of (a new member) and not dialed yet: not known to be in sync.
        let pending = self.peers.iter().filter(|p| !p.connected && !p.unreachable()).count();
        let behind = self.behind(None);
        match (unreachable, pending, behind.first()) {
            (0, 0, None) => "in sync".into(),
            (1, _, _) => "not in sync: 1 peer unreachable".into(),
            (n @ 2.., _, _) => format!("not in sync: {n} peers unreachable"),
            (0, 1, _) => "not in sync: 1 peer not connected yet".into(),
            (0, n @ 2.., _) => format!("not in sync: {n} peers not connected yet"),
            (0, 0, Some(why)) => format!("not in sync: {why}"),
        }
    }
}

/// Whom `meshsync wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Every member of the share, reachable or not: success means they all have it.
    ForEveryMember,
    /// Connected peers only (`wait --connected-only`).
    ForConnected,
}

/// ", 11.2 MiB/s, about 21 s left", ", stalled", or nothing before the first rate.
fn pace(rate: Option<f64>, eta: Option<f64>) -> String {
    match (rate, eta) {
        (Some(r), _) if r <= 0.0 => ", stalled".into(),
        (Some(r), Some(e)) => format!(", {}/s, about {} left", human_bytes(r as u64), human_secs(e)),
        (Some(r), None) => format!(", {}/s", human_bytes(r as u64)),
        (None, _) => String::new(),
    }
}

/// A duration for people: "42 s", "7 min", "2 h 5 min".
fn human_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

/// Formats bytes for people.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Status {
    /// The human-readable form.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let n = &self.node;
        let _ = writeln!(
            s,
            "node {} ({}) listening on {}; {}, certificate valid {} more day(s)",
            n.name, n.id, n.listen, n.role, n.certificate_days_left
        );
        let _ = writeln!(s, "{}", self.summary_line());
        let _ = writeln!(s, "\npeers:");
        if self.peers.is_empty() {
            let _ = writeln!(s, "  (none yet: `meshsync invite` on this node, `meshsync join` on another)");
        }
        let names: HashMap<&str, &str> = self.peers.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
        for p in &self.peers {
            let state = match (&p.address, &p.last_error) {
                (Some(a), _) => format!("connected via {a}"),
                (None, Some(e)) => format!(
                    "UNREACHABLE for {} (tried {}: {e})",
                    human_secs(p.unreachable_secs.unwrap_or(0) as f64),
                    if p.tried.is_empty() { "nothing".to_string() } else { p.tried.join(", ") }
                ),
                (None, None) => format!("not connected yet (known at {})", p.addresses.join(", ")),
            };
            let _ = writeln!(s, "  {:<12} {}  {}", p.name, p.id.get(..7).unwrap_or(&p.id), state);
        }
        let _ = writeln!(s, "\nshares:");
        for sh in &self.shares {
            let state = if let Some(p) = &sh.paused {
                format!("PAUSED: {p}")
            } else {
                match self.behind(Some(&sh.name)).first() {
                    None => "in sync".to_string(),
                    Some(why) => format!("not in sync: {}", why.strip_prefix(&format!("{}: ", sh.name)).unwrap_or(why)),
                }
            };
            let _ = writeln!(
                s,
                "  {} ({}) {}: {} files, {} dirs, {} — {}",
                sh.name,
                sh.mode,
                sh.path,
                sh.files,
                sh.dirs,
                human_bytes(sh.bytes),
                state
            );
            if sh.local_changes > 0 {
                let _ = writeln!(
                    s,
                    "    {} local changes kept here, not sent (receive-only; `meshsync revert {}` takes the mesh's versions):",
                    sh.local_changes, sh.name
                );
                for p in &sh.local_change_paths {
                    let _ = writeln!(s, "      {p}");
                }
                if sh.local_changes > sh.local_change_paths.len() as u64 {
                    let _ = writeln!(s, "      ...");
                }
            }
            if !sh.in_sync && !sh.needed_paths.is_empty() {
                let more = if sh.needed_paths.len() >= crate::daemon::LISTED_PATHS { ", ..." } else { "" };
                let _ = writeln!(s, "    still to take from peers: {}{more}", sh.needed_paths.join(", "));
            }
            if let Some(w) = &sh.schedule {
                let until = w.until.as_deref().unwrap_or("never again");
                let state = if w.open { format!("open until {until}") } else { format!("closed, opens {until}") };
                let _ = writeln!(s, "    transfer window ({}): {state}", w.pattern);
            }
            for p in &sh.peers {
                let name = names.get(p.id.as_str()).copied().unwrap_or(p.id.get(..7).unwrap_or(&p.id));
                let _ = writeln!(
                    s,
                    "    {:<12} {} we need {} · they need {}{}",
                    name,
                    if p.in_sync { "in sync " } else { "behind  " },
                    p.we_need,
                    p.they_need,
                    if p.connected { "" } else { " (offline)" }
                );
            }
        }
        if !self.transfers.is_empty() {
            let _ = writeln!(s, "\ntransfers:");
            for t in &self.transfers {
                let pct = if t.total == 0 { 100.0 } else { t.done as f64 * 100.0 / t.total as f64 };
                let _ = writeln!(
                    s,
                    "  {}/{}: {} of {} ({pct:.0}%){}",
                    t.share,
                    t.path,
                    human_bytes(t.done),
                    human_bytes(t.total),
                    pace(t.bytes_per_sec, t.eta_secs)
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
