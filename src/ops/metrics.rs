//! Prometheus metrics at `http://<metrics_listen>/metrics`: the node's counters and
//! the state of its peers and shares, read from the same snapshot as `meshsync
//! status`, so a dashboard and the CLI never disagree. Named by Prometheus's
//! conventions: the unit last (`_bytes`), `_total` on counters only.

use super::status::Status;
use crate::daemon::Handle;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

/// The OpenMetrics text format, which Prometheus asks for first.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scrape request larger than this is refused: a GET has no body.
const MAX_REQUEST: usize = 8 << 10;
/// How long one exchange (request and reply) may take: a client that stops
/// reading must not hold a socket and a task for ever.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes answered at once; more are refused at once (503), as each reads the
/// whole status and a flood must not starve the file descriptors or the scans.
const MAX_SCRAPES: usize = 4;

type Labels = Vec<(String, String)>;
/// A per-share gauge: name, help, and how to read it from the share's status.
type ShareGauge = (&'static str, &'static str, fn(&super::status::ShareStatus) -> i64);

/// The metrics text for one status snapshot.
pub fn render(st: &Status) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("meshsync");
    let build = Family::<Labels, Gauge>::default();
    build.get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())]).set(1);
    reg.register("build_info", "the running meshsync's version, in the label", build);
    // Every counter of `status --json`, by its name there: a new counter is exported
    // without being listed twice.
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&st.counters) {
        for (key, v) in counters {
            if let Some(v) = v.as_u64() {
                let help = format!("{} since the daemon started", key.replace('_', " "));
                match counter_name(&key) {
                    (name, Some(unit)) => reg.register_with_unit(name, help, unit, ConstCounter::new(v)),
                    (name, None) => reg.register(name, help, ConstCounter::new(v)),
                }
            }
        }
    }
    let peer_up = Family::<Labels, Gauge>::default();
    for p in &st.peers {
        peer_up
            .get_or_create(&vec![("peer".into(), p.name.clone()), ("id".into(), p.id.clone())])
            .set(p.connected.into());
    }
    reg.register("peer_connected", "1 if the peer is connected now", peer_up);
    let gauges: [ShareGauge; 8] = [
        ("share_files", "files in the share", |s| s.files as i64),
        ("share_dirs", "directories in the share", |s| s.dirs as i64),
        ("share_size_bytes", "bytes of the share's files", |s| s.bytes as i64),
        ("share_local_changes", "local changes the share keeps to itself (never announced)", |s| {
            s.local_changes as i64
        }),
        ("share_in_sync", "1 if every connected peer and this node have the same versions", |s| s.in_sync.into()),
        ("share_paused", "1 if the share is paused (disk full)", |s| s.paused.is_some().into()),
        ("share_scanning", "1 while a scan runs or a local change waits to be scanned", |s| s.scanning.into()),
        ("share_window_open", "1 if downloads may start (no schedule, or inside a window)", |s| {
            s.schedule.as_ref().is_none_or(|w| w.open).into()
        }),
    ];
    for (name, help, value) in gauges {
        let fam = Family::<Labels, Gauge>::default();
        for s in &st.shares {
            fam.get_or_create(&vec![("share".into(), s.name.clone())]).set(value(s));
        }
        reg.register(name, help, fam);
    }
    let (we_need, they_need) = (Family::<Labels, Gauge>::default(), Family::<Labels, Gauge>::default());
    for s in &st.shares {
        for p in &s.peers {
            let name = st.peers.iter().find(|x| x.id == p.id).map(|x| x.name.clone()).unwrap_or_default();
            let l = vec![("share".into(), s.name.clone()), ("peer".into(), name), ("id".into(), p.id.clone())];
            we_need.get_or_create(&l).set(p.we_need as i64);
            they_need.get_or_create(&l).set(p.they_need as i64);
        }
    }
    reg.register("share_peer_we_need", "paths this node still needs from the peer", we_need);
    reg.register("share_peer_they_need", "paths the peer still needs from this node", they_need);
    let (left, rate) = (Family::<Labels, Gauge>::default(), Family::<Labels, Gauge>::default());
    for t in &st.transfers {
        let l = vec![("share".into(), t.share.clone())];
        left.get_or_create(&l).inc_by(t.total.saturating_sub(t.done) as i64);
        rate.get_or_create(&l).inc_by(t.bytes_per_sec.unwrap_or(0.0) as i64);
    }
    reg.register_with_unit("download_remaining", "bytes of running downloads not here yet", Unit::Bytes, left);
    let per_second = Unit::Other("bytes_per_second".into());
    reg.register_with_unit("download_rate", "current download rate", per_second, rate);
    let days = Gauge::<i64>::default();
    days.set(st.node.certificate_days_left);
    reg.register("certificate_days_left", "days this node's certificate stays valid (renewed below 30)", days);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// A `status --json` counter's metric name and unit: the unit goes last, as
/// Prometheus names it (`chunk_bytes_sent` is `chunk_sent` in bytes, exported as
/// `meshsync_chunk_sent_bytes_total`).
fn counter_name(key: &str) -> (String, Option<Unit>) {
    let words: Vec<&str> = key.split('_').collect();
    if words.contains(&"bytes") {
        (words.into_iter().filter(|w| *w != "bytes").collect::<Vec<_>>().join("_"), Some(Unit::Bytes))
    } else {
        (key.to_string(), None)
    }
}

/// Answers scrapes until the node stops.
pub async fn serve(node: Handle, listener: tokio::net::TcpListener) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, "metrics at http://{a}/metrics");
        if !a.ip().is_loopback() {
            warn!(address = %a, "metrics are served without authentication to whoever can reach this address");
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let conn = tokio::select! {
            _ = node.stopped() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((mut stream, from)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let busy = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(busy.as_bytes())).await;
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(EXCHANGE_TIMEOUT, answer(&node, stream)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(from = %from, error = %e, "metrics request failed"),
                        Err(_) => debug!(from = %from, "metrics request timed out"),
                    }
                });
            }
            Err(e) => {
                debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP/1 exchange: `GET /metrics` gets the metrics, anything else a 404 or 400.
async fn answer(node: &Handle, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut complete = true;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            complete = false;
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, ctype, body) = match request_target(complete.then_some(&buf[..])) {
        Some("/metrics") => {
            let (n, now) = (node.clone(), chrono::Local::now());
            match tokio::task::spawn_blocking(move || render(&super::status::build(&n.snapshot(), now))).await {
                Ok(Ok(text)) => ("200 OK", CONTENT_TYPE, text),
                _ => ("500 Internal Server Error", "text/plain", "status unavailable\n".to_string()),
            }
        }
        Some(_) => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_string()),
        None => ("400 Bad Request", "text/plain", "expected GET /metrics\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// The path of a `GET` request head, if it is one.
fn request_target(head: Option<&[u8]>) -> Option<&str> {
    let line = std::str::from_utf8(head?).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(v)) if v.starts_with("HTTP/1.") => Some(target.split('?').next()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{NodeStatus, PeerStatus, SharePeerStatus, ShareStatus};

    fn status() -> Status {
        let mut st = Status {
            summary: String::new(),
            node: NodeStatus {
                id: "A".into(),
                name: "alpha".into(),
                listen: "127.0.0.1:1".into(),
                ..Default::default()
            },
            peers: vec![PeerStatus {
                id: "B".into(),
                name: "beta".into(),
                addresses: vec![],
                connected: true,
                address: None,
                ..Default::default()
            }],
            shares: vec![ShareStatus {
                name: "www".into(),
                path: "/srv/www".into(),
                mode: "send-receive".into(),
                files: 3,
                dirs: 1,
                bytes: 300,
                paused: Some("disk full".into()),
                peers: vec![SharePeerStatus {
                    id: "B".into(),
                    connected: true,
                    in_sync: false,
                    we_need: 2,
                    they_need: 0,
                }],
                ..Default::default()
            }],
            transfers: vec![],
            counters: Default::default(),
        };
        st.counters.chunk_bytes_sent = 1234;
        st
    }

    #[test]
    fn counters_peers_and_shares_are_exported() {
        let text = render(&status()).unwrap();
        for line in [
            &format!("meshsync_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
            "# TYPE meshsync_build_info gauge",
            "meshsync_chunk_sent_bytes_total 1234",
            "# UNIT meshsync_chunk_sent_bytes bytes",
            "meshsync_chunk_received_bytes_total 0",
            "meshsync_chunks_corrupt_total 0",
            "meshsync_share_size_bytes{share=\"www\"} 300",
            "meshsync_peer_connected{peer=\"beta\",id=\"B\"} 1",
            "meshsync_share_files{share=\"www\"} 3",
            "meshsync_share_paused{share=\"www\"} 1",
            "meshsync_share_in_sync{share=\"www\"} 0",
            "meshsync_share_window_open{share=\"www\"} 1",
            "meshsync_share_peer_we_need{share=\"www\",peer=\"beta\",id=\"B\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Counters end in _total, gauges do not; nothing is named in bytes but at its end.
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let (name, kind) = l["# TYPE ".len()..].split_once(' ').unwrap();
            assert!(!name.contains("_bytes_"), "{name}: the unit goes last");
            if kind == "gauge" {
                assert!(!name.ends_with("_total"), "{name}: a gauge without _total");
            }
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    }

    #[test]
    fn counter_names_put_the_unit_last() {
        let name = |k| counter_name(k).0;
        assert_eq!(name("chunk_bytes_received"), "chunk_received");
        assert_eq!(counter_name("chunk_bytes_reused").1.map(|u| u.as_str().to_string()), Some("bytes".into()));
        assert_eq!(name("files_applied"), "files_applied");
        assert!(counter_name("conflicts").1.is_none());
    }

    #[test]
    fn only_a_get_of_the_metrics_path_is_answered() {
        assert_eq!(request_target(Some(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")), Some("/metrics"));
        assert_eq!(request_target(Some(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")), Some("/metrics"));
        assert_eq!(request_target(Some(b"GET / HTTP/1.1\r\n\r\n")), Some("/"));
        assert_eq!(request_target(Some(b"POST /metrics HTTP/1.1\r\n\r\n")), None);
        assert_eq!(request_target(Some(b"\xff\xfe\r\n\r\n")), None, "not text");
        assert_eq!(request_target(None), None, "incomplete or oversized head");
    }
}
