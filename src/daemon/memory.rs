//! Giving freed memory back to the system. glibc's allocator keeps what a burst
//! freed (a full scan, a status count or a plan of a million paths, an index
//! exchange) in its per-thread arenas for reuse, and returns only what lies at the
//! top of each: measured on 100 000 files, a node that had indexed and exchanged
//! its share held 600-950 MiB resident for about 70 MiB of live heap.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often freed memory is given back, whatever ran.
const EVERY: Duration = Duration::from_secs(30);

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
