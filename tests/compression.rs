//! Chunks cross compressed when the sender's share says so and the data allows:
//! two daemons on 127.0.0.1, the wire bytes counted on both sides.

mod common;

use common::*;

/// Log-like text: timestamped lines with a few levels, paths and numbers, about
/// as compressible as a web server's access log (a fifth or less with zstd -1).
fn log_lines(n: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (levels, paths) =
        (["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"], ["/api/items", "/login", "/static/app.js"]);
    let mut out = String::with_capacity(n + 200);
    let mut t = 1_700_000_000u64;
    while out.len() < n {
        t += rng.gen_range(0..3);
        let (level, path) = (levels[rng.gen_range(0..levels.len())], paths[rng.gen_range(0..paths.len())]);
        let (id, ms, status) =
            (rng.gen_range(0..100_000), rng.gen_range(1..900), [200, 200, 304, 404][rng.gen_range(0..4)]);
        out.push_str(&format!("{t} {level} req={id} GET {path}?page={} status={status} took={ms}ms\n", id % 50));
    }
    out.truncate(n);
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compressible_file_crosses_in_under_two_fifths_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = pair_with(dir.path(), "compression = \"auto\"").await;
    let body = log_lines(8 << 20, 1);
    place(dir.path(), &nodes[0], "app.log", &body);
    wait_content(&nodes, "app.log", &body).await;
    let (a, b) = (nodes[0].status().counters, nodes[1].status().counters);
    println!(
        "8 MiB of log: alpha sent {} chunk bytes as {} wire bytes; beta received {} as {}",
        a.chunk_bytes_sent, a.chunk_wire_bytes_sent, b.chunk_bytes_received, b.chunk_wire_bytes_received
    );
    let size = body.len() as u64;
    assert!(a.chunk_bytes_sent >= size, "the whole file was served: {}", a.chunk_bytes_sent);
    assert!(a.chunk_wire_bytes_sent * 5 < size * 2, "sent {} wire bytes for {size}", a.chunk_wire_bytes_sent);
    assert!(b.chunk_wire_bytes_received * 5 < size * 2, "received {} wire bytes", b.chunk_wire_bytes_received);
    assert!(b.chunk_wire_bytes_received > 0);
    assert_eq!(a.chunks_corrupt + b.chunks_corrupt, 0);
    stop_all(&mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_compression_off_the_wire_carries_the_chunks_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = pair_with(dir.path(), "compression = \"off\"").await;
    let body = log_lines(4 << 20, 2);
    place(dir.path(), &nodes[0], "app.log", &body);
    wait_content(&nodes, "app.log", &body).await;
    let (a, b) = (nodes[0].status().counters, nodes[1].status().counters);
    let size = body.len() as u64;
    assert!(a.chunk_bytes_sent >= size, "the whole file was served: {}", a.chunk_bytes_sent);
    assert_eq!(a.chunk_wire_bytes_sent, a.chunk_bytes_sent, "nothing compressed");
    assert!(b.chunk_wire_bytes_received >= size, "received {} wire bytes for {size}", b.chunk_wire_bytes_received);
    stop_all(&mut nodes).await;
}
