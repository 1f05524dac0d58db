//! Prometheus metrics: a scrape shows what moved and who is connected.

mod common;

use common::*;
use meshsync::config::ShareMode::*;
use std::io::{Read, Write};

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_shows_bytes_sent_peers_and_share_state() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let nodes = mesh_with(dir.path(), &[SendReceive, SendReceive], &format!("metrics_listen = \"{addr}\"")).await;
    let body = random_bytes(1 << 20, 5);
    std::fs::write(nodes[0].path("m.bin"), &body).unwrap();
    wait_content(&nodes, "m.bin", &body).await;
    wait_in_sync(&nodes).await;
    let a2 = addr.clone();
    let reply = tokio::task::spawn_blocking(move || get(&a2, "/metrics")).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("Content-Type: application/openmetrics-text"), "{reply}");
    let sent = value(&reply, "meshsync_chunk_sent_bytes_total").unwrap();
    assert!(sent >= body.len() as u64, "alpha sent the file: {sent}");
    assert_eq!(value(&reply, "meshsync_share_files{share=\"s\"}"), Some(1), "{reply}");
    assert_eq!(value(&reply, "meshsync_share_size_bytes{share=\"s\"}"), Some(body.len() as u64), "{reply}");
    let build = format!("meshsync_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&reply, &build), Some(1), "{reply}");
    assert!(
        reply.lines().any(|l| l.starts_with("meshsync_peer_connected{peer=\"beta\"") && l.ends_with(" 1")),
        "{reply}"
    );
    let a2 = addr.clone();
    let other = tokio::task::spawn_blocking(move || get(&a2, "/")).await.unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    for mut n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let n = first(dir.path(), "alpha", SendReceive);
    node_option(&n.home, &format!("metrics_listen = \"{addr}\""));
    let err = match meshsync::ops::start_node(&n.home).await {
        Ok(_) => panic!("started although {addr} is taken"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&format!("metrics_listen = \"{addr}\"")), "{err}");
}
