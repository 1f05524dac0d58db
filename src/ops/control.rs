//! The local control socket (`$MESHSYNC_HOME/control.sock`, mode 0600): one JSON
//! request line in, one JSON answer out.

use crate::daemon::bench::BenchEvent;
use crate::daemon::{Handle, LeaveReport, MembersChange, ReloadReport};
use crate::home::Home;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
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
    /// Confirm the deletions that paused a share; answers `{"resumed": name}`.
    ConfirmDeletes {
        /// The share.
        share: String,
    },
    /// Put the mesh's versions back over a receive-only share's local changes;
    /// answers `{"reverting": count}`.
    Revert {
        /// The share.
        share: String,
    },
    /// Re-read the config and apply what can change while the node runs; answers
    /// a [`ReloadReport`].
    Reload,
    /// This node leaves the mesh: it tells its peers, answers a [`LeaveReport`],
    /// then stops.
    Leave,
    /// Forget a member that is gone; answers `{"forgotten": name}`.
    ForgetPeer {
        /// Its name, id, or the start of its id.
        peer: String,
    },
    /// (An admin) removes a node from the mesh; answers `{"removed": {"id", "name"}}`.
    PeerRemove {
        /// Its name or node id.
        peer: String,
    },
    /// Shows or (an admin) changes a share's members; answers a [`SharePeers`].
    SharePeers {
        /// The share.
        share: String,
        /// What to change.
        change: PeersChange,
    },
}

/// A change asked with [`Request::SharePeers`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeersChange {
    /// None: only show them.
    Show,
    /// Exactly these nodes (names or ids) and the admin itself.
    Set(Vec<String>),
    /// Add one node.
    Add(String),
    /// Remove one node.
    Remove(String),
}

/// A node, by id and name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRef {
    /// Node id.
    pub id: String,
    /// Name.
    pub name: String,
}

impl SharePeers {
    /// One line for a person.
    pub fn human(&self) -> String {
        match &self.members {
            None => format!("share {}: every member of the mesh\n", self.share),
            Some(m) => {
                let names: Vec<String> =
                    m.iter().map(|n| format!("{} ({})", n.name, n.id.get(..7).unwrap_or(&n.id))).collect();
                format!("share {}: {} (version {})\n", self.share, names.join(", "), self.version)
            }
        }
    }
}

/// `{"removed": {"id", "name"}}`: the node every member refuses from now on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removed {
    /// The node.
    pub removed: NodeRef,
}

/// A share's members: `members` null means every member of the mesh.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharePeers {
    /// The share.
    pub share: String,
    /// The members, or null for every member of the mesh.
    pub members: Option<Vec<NodeRef>>,
    /// How many times an admin set them (0: never).
    pub version: u64,
}

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the control socket: no daemon runs with this home.
    #[error("no daemon answers on {path} (start it with `meshsync run`): {source}")]
    NotRunning {
        /// The socket.
        path: String,
        /// Why the connection failed.
        source: std::io::Error,
    },
}

/// Longest request line the daemon reads (the newline not counted); a longer one is refused.
pub const MAX_REQUEST: usize = 64 << 10;
/// How long a client has to send its request line, and the daemon to write a
/// one-line answer: a client that connects and goes quiet must not hold a task.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// True when `e` says that no daemon runs with the home (its control socket does not answer).
pub fn not_running(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<ControlError>(), Some(ControlError::NotRunning { .. })))
}

/// The answer to a request that failed: `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// What went wrong, for the user.
    pub error: String,
}

/// An answer: what was asked for, or `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Answer<T> {
    /// It worked.
    Ok(T),
    /// It did not, and why.
    Error(ErrorAnswer),
}

/// `{"rescanning": [names]}`: the shares now being scanned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rescanning {
    /// Share names.
    pub rescanning: Vec<String>,
}

/// `{"resumed": name}`: the share's folder is confirmed and the share runs again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resumed {
    /// The share.
    pub resumed: String,
}

/// `{"forgotten": name}`: the member is forgotten.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Forgotten {
    /// Its name.
    pub forgotten: String,
}

/// `{"reverting": count}`: local changes being put back to the mesh's versions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reverting {
    /// How many.
    pub reverting: u64,
}

/// Why a request line was not read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes without a newline.
    #[error("request longer than {MAX_REQUEST} bytes; expected one JSON object on one line")]
    TooLong,
    /// No complete line within the deadline.
    #[error("no request line within {} s", DEADLINE.as_secs())]
    Timeout,
    /// The line is not a request.
    #[error("bad request: {0}; expected e.g. {{\"cmd\":\"status\"}}")]
    Malformed(#[from] serde_json::Error),
    /// The connection failed or closed before a newline.
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes, within `deadline`.
pub async fn read_request<R: AsyncRead + Unpin>(r: R, deadline: Duration) -> Result<Request, RequestError> {
    let mut line = Vec::new();
    // One byte past the limit tells a line of exactly MAX_REQUEST from a longer one.
    let mut limited = BufReader::new(r).take(MAX_REQUEST as u64 + 1);
    let n = tokio::time::timeout(deadline, limited.read_until(b'\n', &mut line))
        .await
        .map_err(|_| RequestError::Timeout)??;
    if n == 0 {
        return Err(RequestError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if n > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    Ok(serde_json::from_slice(&line)?)
}

/// One answer line: `v` as JSON, or an [`ErrorAnswer`] saying why it could not be encoded.
fn json_line<T: Serialize>(v: &T) -> String {
    let mut line = serde_json::to_string(v)
        .or_else(|e| serde_json::to_string(&ErrorAnswer { error: format!("cannot encode the answer: {e}") }))
        .unwrap_or_default();
    line.push('\n');
    line
}

/// Binds the control socket of a started node (before its start is reported, so
/// callers can use it at once).
pub fn bind(home: &Home) -> Option<UnixListener> {
    let path = home.control_socket();
    match bind_private(&path) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(path = %path.display(), error = %format!("{e:#}"), "control socket unavailable; `meshsync status` will not work");
            None
        }
    }
}

/// Binds a Unix socket at `path` that only its owner can connect to, from the
/// moment it exists at `path`.
///
/// It is bound inside a fresh 0700 folder beside `path`, made 0600 there, and
/// renamed into place. Setting the umask around `bind` would do it too, but the
/// umask is per process, and by now share workers run on other threads and create
/// files (downloads, index) that would get the temporary umask.
pub fn bind_private(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path.with_extension(std::process::id().to_string());
    // Left over by a daemon of the same pid that died (after a reboot).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let r = (|| {
        let inner = dir.join("s");
        let listener = UnixListener::bind(&inner).with_context(|| format!("binding {}", inner.display()))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {} to its owner", inner.display()))?;
        // Replaces a stale socket of a previous run atomically.
        std::fs::rename(&inner, path).with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Serves the control socket until the node stops.
pub async fn serve(node: Handle, listener: Option<UnixListener>) {
    let Some(listener) = listener else { return };
    loop {
        tokio::select! {
            _ = node.stopped() => break,
            c = listener.accept() => {
                let Ok((stream, _)) = c else { continue };
                tokio::spawn(handle(node.clone(), stream));
            }
        }
    }
    let _ = std::fs::remove_file(node.home().control_socket());
}

async fn handle(node: Handle, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let answer = match read_request(r, DEADLINE).await {
        Ok(Request::Bench { bytes, probe_bytes }) => {
            let mut rx = node.bench(bytes, probe_bytes);
            while let Some(ev) = rx.recv().await {
                if w.write_all(json_line(&ev).as_bytes()).await.is_err() {
                    // The CLI went away; the run finishes and cleans up on its own.
                    break;
                }
            }
            return;
        }
        Ok(Request::Status) => {
            let n = node.clone();
            let now = chrono::Local::now();
            match tokio::task::spawn_blocking(move || super::status::build(&n.snapshot(), now)).await {
                Ok(st) => json_line(&st),
                Err(e) => json_line(&ErrorAnswer { error: format!("status failed: {e}") }),
            }
        }
        Ok(Request::Rescan { share }) => {
            json_line(&answer(node.rescan(share.as_deref()).map(|r| Rescanning { rescanning: r })))
        }
        Ok(Request::Resume { share }) => json_line(&answer(node.resume(&share).map(|()| Resumed { resumed: share }))),
        Ok(Request::ConfirmDeletes { share }) => {
            json_line(&answer(node.confirm_deletes(&share).map(|()| Resumed { resumed: share })))
        }
        Ok(Request::Revert { share }) => {
            json_line(&answer(node.revert(&share).map(|n| Reverting { reverting: n as u64 })))
        }
        Ok(Request::PeerRemove { peer }) => {
            let r = node.remove_peer(&peer).await;
            json_line(&answer(r.map(|p| Removed { removed: NodeRef { id: p.id.to_string(), name: p.name } })))
        }
        Ok(Request::SharePeers { share, change }) => {
            let change = match change {
                PeersChange::Show => MembersChange::Show,
                PeersChange::Set(names) => MembersChange::Set(names),
                PeersChange::Add(p) => MembersChange::Add(p),
                PeersChange::Remove(p) => MembersChange::Remove(p),
            };
            let view = node.share_members(&share, change).map(|v| SharePeers {
                share: v.share,
                members: v
                    .members
                    .map(|m| m.into_iter().map(|(id, name)| NodeRef { id: id.to_string(), name }).collect()),
                version: v.version,
            });
            json_line(&answer(view))
        }
        Ok(Request::Reload) => json_line(&answer(node.reload().await)),
        Ok(Request::ForgetPeer { peer }) => {
            json_line(&answer(node.forget_peer(&peer).await.map(|n| Forgotten { forgotten: n })))
        }
        Ok(Request::Leave) => {
            let report = node.leave().await;
            // Answered before the node stops, which ends this task with the runtime.
            let _ = tokio::time::timeout(DEADLINE, w.write_all(json_line(&report).as_bytes())).await;
            let _ = w.shutdown().await;
            node.stop();
            return;
        }
        Err(RequestError::Io(_)) => return,
        Err(e) => json_line(&ErrorAnswer { error: e.to_string() }),
    };
    // Dropping the stream afterwards closes the connection, refused or answered.
    let _ = tokio::time::timeout(DEADLINE, w.write_all(answer.as_bytes())).await;
}

fn answer<T, E: std::fmt::Display>(r: Result<T, E>) -> Answer<T> {
    r.map_or_else(|e| Answer::Error(ErrorAnswer { error: format!("{e:#}") }), Answer::Ok)
}

/// Connects to the control socket of the daemon of `home`.
async fn connect(home: &Home) -> Result<UnixStream, ControlError> {
    let path = home.control_socket();
    UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::NotRunning { path: path.display().to_string(), source })
}

/// Sends a request to the daemon of `home` and returns the raw JSON answer.
pub async fn request(home: &Home, req: &Request) -> anyhow::Result<String> {
    let stream = connect(home).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(serde_json::to_string(req)?.as_bytes()).await?;
    w.write_all(b"\n").await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    anyhow::ensure!(!line.is_empty(), "the daemon closed the control socket without an answer");
    Ok(line)
}

/// Fetches and decodes the status of the daemon of `home`.
pub async fn status(home: &Home) -> anyhow::Result<super::status::Status> {
    let raw = request(home, &Request::Status).await?;
    serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))
}

/// Waits until every peer has this node's versions of `share` (all shares if None),
/// polling the daemon of `home`; after `timeout`, fails saying what is still behind.
pub async fn wait(
    home: &Home,
    share: Option<String>,
    timeout: Option<std::time::Duration>,
    waiting: super::status::Waiting,
) -> anyhow::Result<()> {
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
        let why = st.behind_as(share.as_deref(), waiting);
        if why.is_empty() {
            return Ok(());
        }
        if let Some(t) = timeout.filter(|t| start.elapsed() >= *t) {
            anyhow::bail!("not caught up after {} s: {}", t.as_secs(), why.join("; "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Sends a request and decodes its answer, or fails with the daemon's error.
async fn ask<T: serde::de::DeserializeOwned>(home: &Home, req: &Request) -> anyhow::Result<T> {
    let raw = request(home, req).await?;
    match serde_json::from_str(&raw).with_context(|| format!("daemon answered: {raw}"))? {
        Answer::Ok(v) => Ok(v),
        Answer::Error(e) => anyhow::bail!("{}", e.error),
    }
}

/// Asks the daemon of `home` to scan now; returns the shares it started scanning.
pub async fn rescan(home: &Home, share: Option<String>) -> anyhow::Result<Vec<String>> {
    Ok(ask::<Rescanning>(home, &Request::Rescan { share }).await?.rescanning)
}

/// Confirms a paused share's folder to the daemon of `home` (`meshsync share resume`).
pub async fn resume(home: &Home, share: String) -> anyhow::Result<()> {
    ask::<Resumed>(home, &Request::Resume { share }).await.map(drop)
}

/// Confirms the deletions that paused a share (`meshsync share confirm-deletes`).
pub async fn confirm_deletes(home: &Home, share: String) -> anyhow::Result<()> {
    ask::<Resumed>(home, &Request::ConfirmDeletes { share }).await.map(drop)
}

/// Asks the daemon of `home` to revert a receive-only share's local changes; returns how many.
pub async fn revert(home: &Home, share: String) -> anyhow::Result<u64> {
    Ok(ask::<Reverting>(home, &Request::Revert { share }).await?.reverting)
}

/// Asks the daemon of `home` to apply its config file now.
pub async fn reload(home: &Home) -> anyhow::Result<ReloadReport> {
    ask(home, &Request::Reload).await
}

/// Asks the daemon of `home` to leave the mesh (it stops afterwards); returns who heard.
pub async fn leave(home: &Home) -> anyhow::Result<LeaveReport> {
    ask(home, &Request::Leave).await
}

/// Asks the daemon of `home` to forget a member that is gone; returns its name.
pub async fn forget_peer(home: &Home, peer: String) -> anyhow::Result<String> {
    Ok(ask::<Forgotten>(home, &Request::ForgetPeer { peer }).await?.forgotten)
}

/// Asks the daemon of `home` (an admin) to remove a node from the mesh.
pub async fn remove_peer(home: &Home, peer: String) -> anyhow::Result<NodeRef> {
    Ok(ask::<Removed>(home, &Request::PeerRemove { peer }).await?.removed)
}

/// Shows or changes a share's members through the daemon of `home`.
pub async fn share_peers(home: &Home, share: String, change: PeersChange) -> anyhow::Result<SharePeers> {
    ask::<SharePeers>(home, &Request::SharePeers { share, change }).await
}

/// Runs `meshsync bench` on the daemon of `home`, calling `on_event` for each event.
pub async fn bench(
    home: &Home,
    bytes: u64,
    probe_bytes: u64,
    mut on_event: impl FnMut(&BenchEvent),
) -> anyhow::Result<crate::daemon::bench::BenchReport> {
    let stream = connect(home).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncWriteExt};

    async fn read(input: Vec<u8>) -> Result<Request, RequestError> {
        let (mut client, server) = duplex(1 << 20);
        // The server may stop reading part-way: the rest is refused, not an error here.
        tokio::spawn(async move { client.write_all(&input).await });
        read_request(server, DEADLINE).await
    }

    #[tokio::test]
    async fn a_request_of_the_limit_is_read_and_one_byte_more_is_refused() {
        let mut at_limit = br#"{"cmd":"status"}"#.to_vec();
        at_limit.resize(MAX_REQUEST, b' ');
        let mut line = at_limit.clone();
        line.push(b'\n');
        assert_eq!(read(line).await.unwrap(), Request::Status);
        let mut over = at_limit;
        over.extend_from_slice(b" \n");
        assert!(matches!(read(over).await, Err(RequestError::TooLong)));
        let no_newline = vec![b'x'; 10 * MAX_REQUEST];
        let e = read(no_newline).await.unwrap_err();
        assert!(e.to_string().contains("longer than 65536 bytes"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_refused_at_the_deadline() {
        let (client, server) = duplex(64);
        let e = read_request(server, DEADLINE).await.unwrap_err();
        assert!(matches!(e, RequestError::Timeout), "{e}");
        assert!(e.to_string().contains("within 10 s"), "{e}");
        drop(client);
    }

    #[tokio::test]
    async fn malformed_requests_say_what_is_expected() {
        for bad in [&b"{not json\n"[..], b"{\"cmd\":\"format_disk\"}\n", b"\xff\xfe\n"] {
            let e = read(bad.to_vec()).await.unwrap_err();
            assert!(matches!(e, RequestError::Malformed(_)), "{e}");
            assert!(e.to_string().contains(r#"expected e.g. {"cmd":"status"}"#), "{e}");
        }
        assert!(matches!(read(Vec::new()).await, Err(RequestError::Io(_))));
        let rescan = read(b"{\"cmd\":\"rescan\",\"share\":\"www\"}".to_vec()).await.unwrap();
        assert_eq!(rescan, Request::Rescan { share: Some("www".into()) });
    }

    #[test]
    fn error_answers_are_json_whatever_the_message_holds() {
        let error = "share \"a\\b\"\nnot found".to_string();
        let line = json_line(&ErrorAnswer { error: error.clone() });
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'), "{line:?}");
        let back: Answer<Rescanning> = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Answer::Error(ErrorAnswer { error }));
        let ok: Answer<Rescanning> = serde_json::from_str(&json_line(&rescan_answer_of(&["a", "b"]))).unwrap();
        assert_eq!(ok, rescan_answer_of(&["a", "b"]));
        let n: Answer<Reverting> = serde_json::from_str(&json_line(&Answer::Ok(Reverting { reverting: 3 }))).unwrap();
        assert_eq!(n, Answer::Ok(Reverting { reverting: 3 }));
    }

    fn rescan_answer_of(names: &[&str]) -> Answer<Rescanning> {
        Answer::Ok(Rescanning { rescanning: names.iter().map(|n| n.to_string()).collect() })
    }

    #[tokio::test]
    async fn the_socket_is_owner_only_when_it_appears_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"stale").unwrap();
        let _listener = bind_private(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("control.sock")], "the private folder is gone");
        UnixStream::connect(&path).await.unwrap();
    }
}
