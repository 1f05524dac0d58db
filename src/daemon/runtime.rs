//! The async runtime the daemon (and every command) runs on.
//!
//! Its worker threads carry QUIC and the coordination between tasks; reading and
//! writing files, hashing and compressing go to tokio's blocking pool, which grows
//! as needed. So few workers are enough, and each one more costs CPU: tasks that
//! wake each other across workers go through futexes, and every idle worker parks
//! in `epoll_wait` and is woken again. In the bandwidth lab (N = 8 at 100 Mbit/s,
//! 9 daemons on 2 cores, alternating runs) one worker instead of two took the CPU
//! per GiB delivered from 10.9 / 11.6 to 10.3 / 9.7 CPU-s at the same time
//! (25.7 s); 20 000 small files synced in 4.26 / 4.29 s against 4.33 / 6.72 s, a
//! million files indexed in 51.1 s against 55.0 s, and a 256 MiB copy at 1 Gbit/s
//! took 2.40 s either way. Two nodes exchanging the index of a million files took
//! 176.0 / 178.6 s to reach sync against 147.3 s (and 170.5 s the day before) with
//! two: within that bench's spread, but perhaps a cost; the exchange decodes each
//! batch on a worker.

/// Cores per async worker thread.
const CORES_PER_WORKER: usize = 4;

/// Async worker threads for a machine with `cores` cores: one per
/// [`CORES_PER_WORKER`], at least one, so a big machine still spreads its
/// connections' packet work over several cores.
pub fn workers_for(cores: usize) -> usize {
    (cores / CORES_PER_WORKER).max(1)
}

/// A multi-threaded runtime with [`workers_for`] this machine's cores.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers_for(cores)).enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_four_cores_and_never_none() {
        assert_eq!(workers_for(0), 1);
        assert_eq!(workers_for(1), 1);
        assert_eq!(workers_for(2), 1);
        assert_eq!(workers_for(7), 1);
        assert_eq!(workers_for(8), 2);
        assert_eq!(workers_for(64), 16);
    }
}
