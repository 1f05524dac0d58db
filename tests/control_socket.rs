//! The control socket of a running daemon refuses what it must: oversized, silent
//! and malformed requests each get a JSON error and a closed connection; the socket
//! is owner-only as soon as the daemon has started.

mod common;

use common::*;
use meshsync::config::ShareMode::SendReceive;
use meshsync::ops::control::{ErrorAnswer, MAX_REQUEST};
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Sends `request` (from a task of its own: the daemon may stop reading part-way),
/// then reads everything the daemon answers until it closes the connection.
async fn exchange(node: &TestNode, request: Vec<u8>) -> String {
    let stream = UnixStream::connect(node.home.control_socket()).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&request).await;
        // Kept open (not shut down) so that only the daemon can end the exchange.
        w
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // Closing a Unix socket with our unread request in it resets it, after the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    drop(writer.await);
    String::from_utf8(answer).unwrap()
}

fn error_of(answer: &str) -> String {
    let e: ErrorAnswer = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
    e.error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_errors_and_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = first(dir.path(), "a", SendReceive);
    node.start().await;

    let mode = std::fs::metadata(node.home.control_socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode right after start: {mode:o}");

    let long = exchange(&node, vec![b'{'; 4 * MAX_REQUEST]).await;
    assert!(error_of(&long).contains("longer than 65536 bytes"), "{long}");

    let bad = exchange(&node, b"{\"cmd\":\"status\"\n".to_vec()).await;
    assert!(error_of(&bad).starts_with("bad request"), "{bad}");

    // Sends nothing: the daemon gives up after its deadline (10 s), not never.
    let silent = exchange(&node, Vec::new()).await;
    assert!(error_of(&silent).contains("no request line within 10 s"), "{silent}");

    let ok = exchange(&node, b"{\"cmd\":\"rescan\",\"share\":\"nope\"}\n".to_vec()).await;
    assert_eq!(error_of(&ok), "no share named \"nope\" on this node");
    node.stop().await;
}
