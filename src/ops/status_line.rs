//! The one-line summary a service manager shows for the running node
//! (`systemctl status meshsync`: "Status: ..."), from the same snapshot as `meshsync status`.

use super::status::build;
use crate::daemon::NodeSnapshot;

/// Longest line sent: `systemctl status` shows one line, and more would only be cut there.
const MAX_CHARS: usize = 200;

/// The running node's summary, e.g. "2/3 peers connected, 1 share, not in sync: www: web3 is offline".
pub fn of(snap: &NodeSnapshot) -> String {
    let st = build(snap, chrono::Local::now());
    let connected = st.peers.iter().filter(|p| p.connected).count();
    line(connected, st.peers.len(), st.shares.len(), &st.behind(None))
}

/// The summary from its parts; `behind` is what keeps the mesh from having caught up
/// (as `meshsync wait` reports it), empty when in sync.
pub fn line(connected: usize, known: usize, shares: usize, behind: &[String]) -> String {
    let peers = if known == 0 { "no peers yet".to_string() } else { format!("{connected}/{known} peers connected") };
    let shares = if shares == 1 { "1 share".to_string() } else { format!("{shares} shares") };
    let state = match behind {
        [] => "in sync".to_string(),
        [why] => format!("not in sync: {why}"),
        [why, rest @ ..] => format!("not in sync: {why} (+{} more)", rest.len()),
    };
    let mut s = format!("{peers}, {shares}, {state}");
    if let Some((cut, _)) = s.char_indices().nth(MAX_CHARS) {
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_peers_shares_and_whether_in_sync() {
        assert_eq!(line(2, 2, 1, &[]), "2/2 peers connected, 1 share, in sync");
        assert_eq!(
            line(0, 0, 0, &["no peer is connected".into()]),
            "no peers yet, 0 shares, not in sync: no peer is connected"
        );
        let why = vec!["www: web3 is offline".to_string(), "www: scanning".into(), "logs: scanning".into()];
        assert_eq!(line(1, 2, 2, &why), "1/2 peers connected, 2 shares, not in sync: www: web3 is offline (+2 more)");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let s = line(1, 1, 1, &["ü".repeat(500)]);
        assert_eq!(s.chars().count(), MAX_CHARS + 1);
        assert!(s.ends_with('…'));
    }
}
