//! The local control socket (`$MESHSYNC_HOME/control.sock`, mode 0600): one JSON
//! request line in, one JSON answer out.

use crate::daemon::bench::BenchEvent;
use crate::daemon::Node;
use crate::home::Home;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

/// A request on the control socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The status document.
    Status,
    /// Run `meshsync bench`: answers one JSON [`BenchEvent`] per line, the last a result or error.
    Bench {
        /// Blob size.
        bytes: u64,
        /// Bytes of each per-peer throughput probe.
        probe_bytes: u64,
    },
    /// Scan a share (or all) now; answers `{"rescanning": [names]}` or `{"error": ...}`
    /// (also when a share is paused: the scan would not run).
    Rescan {
        /// One share, or every share when absent.
        share: Option<String>,
    },
    /// The user confirms a paused share's folder as it is now; answers `{"resumed": name}`.
    Resume {
        /// The share.
        share: String,
    },
    /// Put the mesh's versions back over a receive-only share's local changes;
    /// answers `{"reverting": count}`.
    Revert {
        /// The share.
        share: String,
    },
}

/// Binds the control socket (before the node reports started, so callers can use it at once).
pub fn bind(node: &Node) -> Option<UnixListener> {
    let path = node.home.control_socket();
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "control socket unavailable; `meshsync status` will not work");
            return None;
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        warn!(error = %e, "cannot restrict the control socket to its owner");
    }
    Some(listener)
}

/// Serves the control socket until the node stops.
pub async fn serve(node: Arc<Node>, listener: Option<UnixListener>) {
    let Some(listener) = listener else { return };
    loop {
        tokio::select! {
            _ = node.cancel.cancelled() => break,
            c = listener.accept() => {
                let Ok((stream, _)) = c else { continue };
                tokio::spawn(handle(node.clone(), stream));
            }
        }
    }
    let _ = std::fs::remove_file(node.home.control_socket());
}

async fn handle(node: Arc<Node>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(r).read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Bench { bytes, probe_bytes }) => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::daemon::bench::run(node.clone(), bytes, probe_bytes, tx));
            while let Some(ev) = rx.recv().await {
                let mut l = serde_json::to_string(&ev).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
                l.push('\n');
                if w.write_all(l.as_bytes()).await.is_err() {
                    // The CLI went away; the run finishes and cleans up on its own.
                    break;
                }
            }
            return;
        }
        Ok(Request::Status) => {
            let n = node.clone();
            match tokio::task::spawn_blocking(move || super::status::status(&n)).await {
                Ok(st) => serde_json::to_string(&st).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                Err(e) => format!("{{\"error\":\"{e}\"}}"),
            }
        }
        Ok(Request::Rescan { share }) => {
            let shares: Vec<_> =
                node.share_list().into_iter().filter(|s| share.as_ref().is_none_or(|n| *n == s.cfg.name)).collect();
            if shares.is_empty() {
                serde_json::json!({ "error": format!("no share named {:?} on this node", share.unwrap_or_default()) })
                    .to_string()
            } else {
                let names: Vec<String> = shares.iter().map(|s| s.cfg.name.clone()).collect();
                for s in &shares {
                    s.rescan();
                }
                let paused: Vec<String> = shares
                    .iter()
                    .filter_map(|s| s.paused().map(|p| format!("share {} is paused: {p}", s.cfg.name)))
                    .collect();
                if paused.is_empty() {
                    serde_json::json!({ "rescanning": names }).to_string()
                } else {
                    serde_json::json!({ "error": paused.join("; ") }).to_string()
                }
            }
        }
        Ok(Request::Resume { share }) => match node.share(&share).map(|s| s.resume()) {
            None => serde_json::json!({ "error": format!("no share named {share:?} on this node") }).to_string(),
            Some(Ok(())) => serde_json::json!({ "resumed": share }).to_string(),
            Some(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
        },
        Ok(Request::Revert { share }) => match node.share(&share).map(|s| s.revert()) {
            None => serde_json::json!({ "error": format!("no share named {share:?} on this node") }).to_string(),
            Some(Ok(n)) => serde_json::json!({ "reverting": n }).to_string(),
            Some(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
        },
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }).to_string(),
    };
    let _ = w.write_all(answer.as_bytes()).await;
    let _ = w.write_all(b"\n").await;
}

/// Sends a request to the daemon of `home` and returns the raw JSON answer.
pub async fn request(home: &Home, req: &Request) -> anyhow::Result<String> {
    let path = home.control_socket();
    let stream = UnixStream::connect(&path)
        .await
        .with_context(|| format!("no daemon answers on {} (start it with `meshsync run`)", path.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(serde_json::to_string(req)?.as_bytes()).await?;
    w.write_all(b"\n").await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    Ok(line)
}

/// Fetches and decodes the status of the daemon of `home`.
pub async fn status(home: &Home) -> anyhow::Result<super::status::Status> {
    let raw = request(home, &Request::Status).await?;
    serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))
}

/// Waits until every peer has this node's versions of `share` (all shares if None),
/// polling the daemon of `home`; after `timeout`, fails saying what is still behind.
pub async fn wait(home: &Home, share: Option<String>, timeout: Option<std::time::Duration>) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let st = status(home).await?;
        if let Some(name) = &share {
            anyhow::ensure!(st.shares.iter().any(|s| &s.name == name), "this node has no share named {name:?}");
        }
        // A paused share does not catch up by waiting: it needs the user.
        let paused: Vec<String> = st
            .shares
            .iter()
            .filter(|s| share.as_ref().is_none_or(|n| *n == s.name))
            .filter_map(|s| s.paused.as_ref().map(|p| format!("share {} is paused: {p}", s.name)))
            .collect();
        anyhow::ensure!(paused.is_empty(), "{}", paused.join("; "));
        let why = st.behind(share.as_deref());
        if why.is_empty() {
            return Ok(());
        }
        if let Some(t) = timeout.filter(|t| start.elapsed() >= *t) {
            anyhow::bail!("not caught up after {} s: {}", t.as_secs(), why.join("; "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Sends a request and returns the answer's `key`, or the daemon's error.
async fn ask(home: &Home, req: &Request, key: &str) -> anyhow::Result<serde_json::Value> {
    let raw = request(home, req).await?;
    let mut v: serde_json::Value = serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("{e}");
    }
    v.get_mut(key).map(serde_json::Value::take).with_context(|| format!("daemon answered: {raw}"))
}

/// Asks the daemon of `home` to scan now; returns the shares it started scanning.
pub async fn rescan(home: &Home, share: Option<String>) -> anyhow::Result<Vec<String>> {
    let names = ask(home, &Request::Rescan { share }, "rescanning").await?;
    Ok(names.as_array().into_iter().flatten().filter_map(|n| n.as_str().map(String::from)).collect())
}

/// Confirms a paused share's folder to the daemon of `home` (`meshsync share resume`).
pub async fn resume(home: &Home, share: String) -> anyhow::Result<()> {
    ask(home, &Request::Resume { share }, "resumed").await.map(drop)
}

/// Asks the daemon of `home` to revert a receive-only share's local changes; returns how many.
pub async fn revert(home: &Home, share: String) -> anyhow::Result<u64> {
    Ok(ask(home, &Request::Revert { share }, "reverting").await?.as_u64().unwrap_or(0))
}

/// Runs `meshsync bench` on the daemon of `home`, calling `on_event` for each event.
pub async fn bench(
    home: &Home,
    bytes: u64,
    probe_bytes: u64,
    mut on_event: impl FnMut(&BenchEvent),
) -> anyhow::Result<crate::daemon::bench::BenchReport> {
    let path = home.control_socket();
    let stream = UnixStream::connect(&path)
        .await
        .with_context(|| format!("no daemon answers on {} (start it with `meshsync run`)", path.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(serde_json::to_string(&Request::Bench { bytes, probe_bytes })?.as_bytes()).await?;
    w.write_all(b"\n").await?;
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let ev: BenchEvent = serde_json::from_str(&line).with_context(|| format!("daemon answered: {line}"))?;
        on_event(&ev);
        match ev {
            BenchEvent::Result(r) => return Ok(r),
            BenchEvent::Error { message } => anyhow::bail!("bench failed: {message}"),
            _ => {}
        }
    }
    anyhow::bail!("the daemon closed the bench before a result")
}
