//! Giving freed memory back to the system. glibc's allocator keeps what a burst
//! freed (a full scan, a status count or a plan of a million paths, an index
//! exchange) in its per-thread arenas for reuse, and returns only what lies at the
//! top of each: measured on 100 000 files, a node that had indexed and exchanged
//! its share held 600-950 MiB resident for about 70 MiB of live heap.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often freed memory is given back, whatever ran.
pub const EVERY: Duration = Duration::from_secs(30);

/// Allocator arenas the daemon uses at most (glibc's default is 8 per core).
/// Memory a thread frees goes back to the arena it came from, so with one arena
/// per thread (the scan, the index database's flushers, the runtime's workers)
/// each keeps its own peak. At a million files and a 64 MiB index cache: 276 MiB
/// resident after the initial index with 2 arenas, against about 440 MiB. One
/// arena: two nodes that exchanged the index of a million files rest at 274 and
/// 305 MiB against 352 and 392 MiB with two (glibc counted 225 and 208 MB in use,
/// the rest lies free between live allocations); the index, the small-file pair
/// and the N = 8 lab's CPU per GiB measured the same or better (threads mostly
/// allocate from their own tcache, not the arena).
const ARENAS: i32 = 1;

/// Caps the allocator's arenas (see [`ARENAS`]); call it before the runtime
/// starts its threads. glibc only: others keep their own counsel.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`; other
/// allocators return theirs by themselves). Takes milliseconds: call it after a
/// burst, off the async runtime's workers.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives freed memory back every [`EVERY`] until `cancel`, for what no burst's
/// end does (an index exchange is many small batches).
pub async fn give_back_loop(cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let _ = tokio::task::spawn_blocking(give_back).await;
    }
}
