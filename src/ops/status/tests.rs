use super::*;

fn share(name: &str, peers: Vec<SharePeerStatus>) -> ShareStatus {
    ShareStatus {
        name: name.into(),
        path: "/x".into(),
        mode: "send-receive".into(),
        in_sync: true,
        peers,
        ..Default::default()
    }
}

fn peer(id: &str, connected: bool, need: (u64, u64)) -> SharePeerStatus {
    SharePeerStatus { id: id.into(), connected, in_sync: need == (0, 0), we_need: need.0, they_need: need.1 }
}

#[test]
fn behind_names_everything_that_keeps_the_mesh_from_caught_up() {
    let mut st = Status {
        summary: String::new(),
        node: NodeStatus { id: "me".into(), name: "me".into(), listen: "x".into(), ..Default::default() },
        peers: vec![PeerStatus {
            id: "B".into(),
            name: "web2".into(),
            addresses: vec![],
            connected: true,
            address: None,
            ..Default::default()
        }],
        shares: vec![share("www", vec![peer("B", true, (0, 0))]), share("logs", vec![peer("C", false, (0, 0))])],
        transfers: vec![],
        counters: Default::default(),
    };
    assert!(st.behind(Some("www")).is_empty());
    assert_eq!(st.behind(None), vec!["logs: C is unreachable"], "an offline peer cannot have caught up");
    assert!(st.behind_as(None, Waiting::ForConnected).is_empty(), "unless asked to wait for connected peers only");
    st.shares[0].scanning = true;
    st.shares[0].peers[0] = peer("B", true, (0, 2));
    st.shares[0].paused = Some("disk full".into());
    st.transfers.push(Transfer {
        share: "www".into(),
        path: "a.bin".into(),
        done: 1,
        total: 2,
        bytes_per_sec: None,
        eta_secs: None,
    });
    assert_eq!(
        st.behind(Some("www")),
        vec![
            "www: scanning",
            "www: paused (disk full)",
            "www: web2 behind (we need 0, they need 2)",
            "www: receiving a.bin"
        ]
    );
    st.peers[0].connected = false;
    assert_eq!(st.behind(Some("www"))[0], "no peer is connected");
    let mut lone = share("solo", vec![]);
    assert!(Status { shares: vec![lone.clone()], ..st.clone() }.behind(Some("solo")).len() == 1, "empty: fine");
    lone.files = 1;
    assert_eq!(
        Status { shares: vec![lone], ..st }.behind(Some("solo"))[1],
        "solo: no peer is known to take part in it yet"
    );
}

#[test]
fn an_unreachable_member_keeps_every_share_from_caught_up_and_the_summary_says_so() {
    let unreachable = |id: &str, name: &str| PeerStatus {
        id: id.into(),
        name: name.into(),
        state: "unreachable".into(),
        tried: vec!["198.18.0.3:7700".into()],
        last_error: Some("no answer within 5 s".into()),
        unreachable_secs: Some(12),
        ..Default::default()
    };
    let connected = PeerStatus { id: "B".into(), name: "web2".into(), connected: true, ..Default::default() };
    let mut st = Status {
        summary: String::new(),
        node: NodeStatus { id: "me".into(), name: "me".into(), listen: "x".into(), ..Default::default() },
        peers: vec![connected, unreachable("C", "web3")],
        shares: vec![share("www", vec![peer("B", true, (0, 0))])],
        transfers: vec![],
        counters: Default::default(),
    };
    // web3 never connected since this daemon started, so no share lists it.
    assert_eq!(st.behind(Some("www")), vec!["www: web3 is unreachable"]);
    assert!(st.behind_as(Some("www"), Waiting::ForConnected).is_empty());
    assert_eq!(st.summary_line(), "not in sync: 1 peer unreachable");
    st.peers.push(unreachable("D", "web4"));
    assert_eq!(st.summary_line(), "not in sync: 2 peers unreachable");
    let human = st.human();
    assert!(
        human.contains("web3         C  UNREACHABLE for 12 s (tried 198.18.0.3:7700: no answer within 5 s)"),
        "{human}"
    );
    st.peers.truncate(1);
    assert_eq!(st.summary_line(), "in sync");
    // A member just learned of and not dialed yet is not known to be in sync.
    st.peers.push(PeerStatus {
        id: "E".into(),
        name: "web5".into(),
        state: "not tried yet".into(),
        ..Default::default()
    });
    assert_eq!(st.summary_line(), "not in sync: 1 peer not connected yet");
}

#[test]
fn a_share_behind_names_the_paths_it_still_takes_from_peers() {
    let mut sh = share("www", vec![peer("B", true, (2, 0))]);
    sh.needed_paths = vec!["a.txt".into(), "d/b.txt".into()];
    let status = |sh: ShareStatus| Status { shares: vec![sh], ..Default::default() };
    let st = status(sh.clone());
    assert!(!st.human().contains("still to take"), "a share in sync lists nothing");
    sh.in_sync = false;
    let st = status(sh);
    assert!(st.human().contains("    still to take from peers: a.txt, d/b.txt\n"), "{}", st.human());
}

#[test]
fn pace_reads_as_rate_and_time_left() {
    assert_eq!(pace(None, None), "");
    assert_eq!(pace(Some(0.0), None), ", stalled");
    assert_eq!(pace(Some(11.5 * 1048576.0), Some(21.4)), ", 11.5 MiB/s, about 21 s left");
    assert_eq!(human_secs(89.0), "89 s");
    assert_eq!(human_secs(420.0), "7 min");
    assert_eq!(human_secs(7500.0), "2 h 5 min");
}
