//! `meshsync peers`: each known peer, from the running daemon's status.

use super::status::Status;
use std::fmt::Write;

/// The peers as aligned text: name, id, connected or not, addresses.
pub fn table(st: &Status) -> String {
    if st.peers.is_empty() {
        return "no peers yet (`meshsync invite` here, `meshsync join` on another host)\n".into();
    }
    let wn = st.peers.iter().map(|p| p.name.len()).max().unwrap_or(0).max(4);
    let wi = st.peers.iter().map(|p| p.id.len()).max().unwrap_or(0).max(2);
    let mut s = format!("{:<wn$}  {:<wi$}  STATE                         ADDRESSES\n", "NAME", "ID");
    for p in &st.peers {
        let state = match &p.address {
            Some(a) => format!("connected via {a}"),
            None if p.connected => "connected".to_string(),
            None => "not connected".to_string(),
        };
        let addrs = if p.addresses.is_empty() { "-".to_string() } else { p.addresses.join(", ") };
        let _ = writeln!(s, "{:<wn$}  {:<wi$}  {state:<28}  {addrs}", p.name, p.id);
    }
    s
}

/// The `peers` part of a raw `status --json` answer, as it came (with every field
/// the daemon sends).
pub fn json(raw_status: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(raw_status)?;
    let peers = v.get("peers").ok_or_else(|| anyhow::anyhow!("the daemon's status has no peers: {raw_status}"))?;
    Ok(serde_json::to_string_pretty(peers)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{NodeStatus, PeerStatus};

    #[test]
    fn each_peer_shows_name_id_state_and_addresses() {
        let peer = |name: &str, address: Option<&str>| PeerStatus {
            id: format!("{name}-id"),
            name: name.into(),
            addresses: vec!["198.18.0.2:7700".into(), "198.18.0.3:7700".into()],
            connected: address.is_some(),
            address: address.map(String::from),
            ..Default::default()
        };
        let mut st = Status {
            summary: String::new(),
            node: NodeStatus { id: "A".into(), name: "a".into(), listen: "x".into(), ..Default::default() },
            peers: vec![peer("web2", Some("198.18.0.2:7700")), peer("web3", None)],
            shares: vec![],
            transfers: vec![],
            counters: Default::default(),
        };
        let text = table(&st);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "web2  web2-id  connected via 198.18.0.2:7700  198.18.0.2:7700, 198.18.0.3:7700");
        assert_eq!(lines[2], "web3  web3-id  not connected                 198.18.0.2:7700, 198.18.0.3:7700");
        let raw = serde_json::to_string(&st).unwrap();
        let peers: Vec<PeerStatus> = serde_json::from_str(&json(&raw).unwrap()).unwrap();
        assert_eq!(peers, st.peers);
        st.peers.clear();
        assert!(table(&st).contains("meshsync invite"));
    }
}
