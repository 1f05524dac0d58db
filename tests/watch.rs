//! The file watcher with real daemons: a finished file (closed after writing)
//! goes out at once, one still being written waits, partial uploads never go, and
//! a file rewritten without pause is damped by the share's `min_interval`.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_file_goes_out_before_one_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = pair_with(dir.path(), "").await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Opened and written, and kept open: still being written.
    let mut busy = std::fs::File::create(a.path("a-busy")).unwrap();
    busy.write_all(b"partial").unwrap();
    let mut body = b"partial".to_vec();
    let mut tick = |busy: &mut std::fs::File| {
        busy.write_all(b".").unwrap();
        body.push(b'.');
    };
    for _ in 0..5 {
        tick(&mut busy);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Written and closed: finished. Then only its mode keeps changing, which does
    // not make it busy again. Neither is ever quiet, so by the quiet rule alone the
    // busy file, first to change, would go first (at the 10 s cap, half a second
    // before the other).
    std::fs::write(a.path("z-done"), b"complete").unwrap();
    std::fs::write(a.path("up.filepart"), b"half an upload").unwrap();
    let mut mode = 0o644;
    let mut looks = 0;
    while read(&b.path("z-done")).as_deref() != Some(b"complete".as_slice()) {
        assert!(!b.path("a-busy").exists(), "the file still being written went out before the finished one");
        tick(&mut busy);
        mode ^= 0o040;
        std::fs::set_permissions(a.path("z-done"), std::fs::Permissions::from_mode(mode)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        looks += 1;
        assert!(looks < 600, "z-done never arrived");
    }
    // Closed at last: it goes out, all of it.
    drop(busy);
    wait_content(&nodes, "a-busy", &body).await;
    wait_in_sync(&nodes).await;
    assert!(!b.path("up.filepart").exists(), "a partial upload never goes out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_rewritten_every_100ms_is_announced_once_per_min_interval_and_its_last_version_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = pair_with(dir.path(), "min_interval = \"1s\"").await;
    let a = &nodes[0];
    let sent_before = a.status().counters.entries_sent;
    let start = Instant::now();
    let writes = 30;
    for i in 0..writes {
        std::fs::write(a.path("hot"), format!("version {i}")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_content(&nodes, "hot", format!("version {}", writes - 1).as_bytes()).await;
    let elapsed = start.elapsed();
    let announced = a.status().counters.entries_sent - sent_before;
    // One version per second at most, and the first at once: a bound a slow
    // machine only loosens (it measures its own time). Without damping every
    // write would go out, 30 in about 3 s.
    let most = elapsed.as_secs() + 1;
    assert!(
        (1..=most).contains(&announced),
        "{announced} versions announced in {elapsed:?} for {writes} writes; at most {most} with min_interval 1s"
    );
}
