//! Upload rate limit (`upload_limit_mbit`), like rsync's `--bwlimit`: a token bucket
//! shared by every upload of the node.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes the bucket may send at once after an idle spell.
const BURST: f64 = 256.0 * 1024.0;

/// A shared upload budget; `None` rate means unlimited.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: Option<f64>,
    /// The instant at which everything reserved so far has been sent.
    next_free: Mutex<Instant>,
}

impl RateLimit {
    /// A limit of `mbit` megabits per second (0 or `None`: unlimited).
    pub fn new(mbit: Option<u64>) -> Self {
        let bytes_per_sec = mbit.filter(|m| *m > 0).map(|m| m as f64 * 1_000_000.0 / 8.0);
        Self { bytes_per_sec, next_free: Mutex::new(Instant::now()) }
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: u64) {
        let Some(rate) = self.bytes_per_sec else { return };
        let wait_until = {
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            // An idle bucket refills up to BURST, no further.
            let floor = now - Duration::from_secs_f64(BURST / rate);
            if *next < floor {
                *next = floor;
            }
            *next += Duration::from_secs_f64(bytes as f64 / rate);
            next.checked_sub(Duration::from_secs_f64(BURST / rate)).unwrap_or(now)
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let l = RateLimit::new(Some(8)); // 1 MB/s
        let start = Instant::now();
        for _ in 0..20 {
            l.acquire(100_000).await;
        }
        // 2 MB at 1 MB/s, minus the burst allowance.
        let took = start.elapsed().as_secs_f64();
        assert!((1.6..2.1).contains(&took), "took {took} s of paused time");
        let u = RateLimit::new(None);
        let s2 = Instant::now();
        u.acquire(u64::MAX).await;
        assert_eq!(s2.elapsed(), Duration::ZERO);
    }
}
