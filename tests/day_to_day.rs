//! The day-to-day commands on running daemons: share list and remove, peers,
//! reload, leave (through the library the CLI calls, and the binary itself).

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use meshsync::ops;
use std::process::Command;

/// Runs the binary against `home` (whose daemon runs in this test), off the runtime.
async fn cli(home: &meshsync::home::Home, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshsync"));
    cmd.arg("--home").arg(home.dir()).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// True while `node` has a live connection to every other of `nodes`.
fn fully_connected(node: &TestNode, others: usize) -> bool {
    node.status().peers.iter().filter(|p| p.connected).count() == others
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_share_stops_at_once_keeps_its_files_and_comes_back_without_losing_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    // x: last changed by gamma, so every copy's version holds gamma's counter.
    std::fs::write(nodes[0].path("x"), b"one").unwrap();
    std::fs::write(nodes[0].path("y"), b"why").unwrap();
    wait_content(&nodes, "y", b"why").await;
    place(dir.path(), &nodes[2], "x", b"two");
    wait_content(&nodes, "x", b"two").await;
    wait_in_sync(&nodes).await;

    // A watcher event of the last write may still be scanned: the line says
    // "running, syncing" until it is.
    let mut out = String::new();
    for _ in 0..100 {
        let (ok, o, err) = cli(&nodes[2].home, &["share", "list"]).await;
        assert!(ok, "{err}");
        out = o;
        if out.lines().nth(1).is_some_and(|l| l.ends_with("running, in sync")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("s ") && l.ends_with("running, in sync")), "{out}");

    let (ok, out, err) = cli(&nodes[2].home, &["share", "remove", "s"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("the daemon stopped syncing it") && out.contains("stay"), "{out}");
    let gamma = &nodes[2];
    assert!(gamma.status().shares.is_empty(), "gamma no longer runs the share");
    assert!(!std::fs::read_to_string(gamma.home.config()).unwrap().contains("[[share]]"));
    assert_eq!(read(&gamma.path("x")).as_deref(), Some(&b"two"[..]), "the files stay");
    assert!(gamma.root.join(".meshsync/share.toml").exists(), "so does the marker");
    let (_, out, _) = cli(&gamma.home, &["share", "list"]).await;
    assert!(out.contains("no shares"), "{out}");
    // The connections stay; the others stop counting gamma in the share (no wait for it).
    assert!(nodes.iter().all(|n| fully_connected(n, 2)));
    let gamma_id = gamma.status().node.id;
    wait("alpha no longer counts gamma in the share", || {
        nodes[0].status().shares[0].peers.iter().all(|p| p.id != gamma_id)
    })
    .await;
    std::fs::write(nodes[0].path("new"), b"after").unwrap();
    wait_content(&nodes[..2], "new", b"after").await;
    wait("alpha caught up without gamma", || nodes[0].status().behind(Some("s")).is_empty()).await;
    assert_eq!(read(&nodes[2].path("new")), None, "a removed share gets nothing");

    // Changed and deleted while away; then the same folder is added back.
    place(dir.path(), &nodes[2], "x", b"three");
    std::fs::remove_file(nodes[2].path("y")).unwrap();
    meshsync::setup::share_add(&nodes[2].home, "s", &nodes[2].root, SendReceive).unwrap();
    let report = ops::control::reload(&nodes[2].home).await.unwrap();
    assert!(report.shares.contains(&"s".to_string()), "{report:?}");
    // The change made while away is not overwritten by the older version the mesh
    // holds (whose counter of gamma it could have reused): the later write wins and
    // the other is kept as a conflict copy; nothing is deleted on the peers.
    wait_content(&nodes, "x", b"three").await;
    wait_content(&nodes, "new", b"after").await;
    wait_content(&nodes, "y", b"why").await;
    wait("the older content kept as a conflict copy", || {
        std::fs::read_dir(&nodes[0].root).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().starts_with("x.sync-conflict-")
                && read(&e.path()).as_deref() == Some(b"two")
        })
    })
    .await;
    for n in nodes.iter_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_applies_ignore_rules_and_limits_live_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let cfg = nodes[1].home.config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let edited = text
        .replace("min_free_mib = 256", "min_free_mib = 1\nupload_limit_mbit = 500\ndownload_limit_mbit = 400")
        .replace(&format!("listen = \"{}\"", nodes[1].listen), "listen = \"127.0.0.1:1\"")
        + "ignore = [\"*.log\"]\nschedule = \"0 1 * * *\"\n";
    std::fs::write(&cfg, edited).unwrap();
    let (ok, out, err) = cli(&nodes[1].home, &["reload"]).await;
    assert!(ok, "{err}");
    let applied = "applied: [node] min_free_mib, [node] upload_limit_mbit, [node] download_limit_mbit, \
                   share \"s\" ignore, share \"s\" schedule";
    assert!(out.contains(applied), "{out}");
    let window = nodes[1].status().shares[0].schedule.clone().map(|w| w.pattern);
    assert_eq!(window.as_deref(), Some("0 1 * * * for 60 min"), "the new schedule runs");
    assert!(out.contains("takes effect at the next restart: [node] listen"), "{out}");
    // The rules apply at once: beta does not announce its new .log file.
    std::fs::write(nodes[1].path("debug.log"), b"noise").unwrap();
    std::fs::write(nodes[1].path("page.html"), b"<p>").unwrap();
    wait_content(&nodes, "page.html", b"<p>").await;
    wait_in_sync(&nodes).await;
    assert_eq!(read(&nodes[0].path("debug.log")), None, "ignored since the reload");
    assert!(nodes.iter().all(|n| fully_connected(n, 1)), "no connection dropped");
    // A config that does not load changes nothing and says where it is wrong.
    std::fs::write(&cfg, "[node]\nname = \"beta\"\n").unwrap();
    let (ok, _, err) = cli(&nodes[1].home, &["reload"]).await;
    assert!(!ok && err.contains(&format!("{}:", cfg.display())), "{err}");
    assert_eq!(nodes[1].status().shares.len(), 1, "still running as it was");
    for n in nodes.iter_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_lists_each_peer_and_a_node_that_leaves_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive, SendReceive]).await;
    std::fs::write(nodes[2].path("from-gamma"), b"g").unwrap();
    wait_content(&nodes, "from-gamma", b"g").await;
    let (ok, out, err) = cli(&nodes[0].home, &["peers"]).await;
    assert!(ok, "{err}");
    for name in ["beta", "gamma"] {
        assert!(out.lines().any(|l| l.starts_with(name) && l.contains("connected via 127.0.0.1:")), "{out}");
    }
    let (ok, json, _) = cli(&nodes[0].home, &["peers", "--json"]).await;
    let peers: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert!(ok && peers.len() == 2 && peers.iter().all(|p| p["connected"] == true), "{json}");

    let (ok, _, err) = cli(&nodes[2].home, &["leave"]).await;
    assert!(!ok && err.contains("--yes"), "asks to confirm: {err}");
    let gamma_id = nodes[2].status().node.id;
    let home = nodes[2].home.clone();
    let leaving = tokio::spawn(async move { ops::leave::leave(&home, false).await });
    nodes[2].handle().stopped().await;
    nodes[2].stop().await;
    let left = leaving.await.unwrap().unwrap();
    let mut report = left.report.unwrap();
    report.told.sort();
    assert_eq!(report.told, vec!["alpha", "beta"], "{report:?}");
    assert!(!nodes[2].home.node_key().exists() && !nodes[2].home.index().exists());
    assert!(nodes[2].home.dir().join("config.toml.left").exists());
    assert_eq!(read(&nodes[2].path("from-gamma")).as_deref(), Some(&b"g"[..]), "the files stay");
    for n in &nodes[..2] {
        let st = n.status();
        assert!(st.peers.iter().all(|p| p.id != gamma_id), "{} still knows gamma", n.name);
        assert!(st.shares[0].peers.iter().all(|p| p.id != gamma_id), "{} still counts gamma", n.name);
    }
    // The two left keep talking; gamma is not dialed, nor learned back by gossip.
    std::fs::write(nodes[0].path("after"), b"a").unwrap();
    wait_content(&nodes[..2], "after", b"a").await;
    assert!(nodes[..2].iter().all(|n| n.status().peers.iter().all(|p| p.id != gamma_id)));
    for n in nodes.iter_mut() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_gone_while_this_node_was_offline_is_forgotten_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh(dir.path(), &[SendReceive, SendReceive]).await;
    let (ok, _, err) = cli(&nodes[0].home, &["peers", "forget", "beta"]).await;
    assert!(!ok && err.contains("is connected"), "a live peer is not forgotten: {err}");
    nodes[1].stop().await;
    wait("alpha sees beta gone", || !fully_connected(&nodes[0], 1)).await;
    let (ok, out, err) = cli(&nodes[0].home, &["peers", "forget", "beta"]).await;
    assert!(ok && out.contains("forgot beta"), "{out}{err}");
    assert!(nodes[0].status().peers.is_empty());
    let (ok, out, _) = cli(&nodes[0].home, &["peers"]).await;
    assert!(ok && out.contains("no peers"), "{out}");
    for n in nodes.iter_mut() {
        n.stop().await;
    }
}
