//! Rate limits (`upload_limit_mbit`, `download_limit_mbit`), like rsync's
//! `--bwlimit`: a token bucket shared by every upload, or every download, of the node.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes the bucket may send at once after an idle spell.
const BURST: f64 = 256.0 * 1024.0;

/// A shared budget of bytes per second.
#[derive(Debug)]
pub struct RateLimit {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// `None`: unlimited.
    bytes_per_sec: Option<f64>,
    /// The instant at which everything reserved so far has been sent.
    next_free: Instant,
}

fn bytes_per_sec(mbit: Option<u64>) -> Option<f64> {
    mbit.filter(|m| *m > 0).map(|m| m as f64 * 1_000_000.0 / 8.0)
}

impl RateLimit {
    /// A limit of `mbit` megabits per second (0 or `None`: unlimited).
    pub fn new(mbit: Option<u64>) -> Self {
        Self { bucket: Mutex::new(Bucket { bytes_per_sec: bytes_per_sec(mbit), next_free: Instant::now() }) }
    }

    /// Changes the limit (a reload); sends already paced keep their place.
    pub fn set(&self, mbit: Option<u64>) {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).bytes_per_sec = bytes_per_sec(mbit);
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: u64) {
        let wait_until = {
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let Some(rate) = b.bytes_per_sec else { return };
            let next = &mut b.next_free;
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
        // Capped later (a reload): paced from then on; uncapped again: at once.
        u.set(Some(8));
        let s3 = Instant::now();
        for _ in 0..20 {
            u.acquire(100_000).await;
        }
        assert!(s3.elapsed() > Duration::from_secs(1), "paced after the cap was set");
        u.set(None);
        let s4 = Instant::now();
        u.acquire(u64::MAX).await;
        assert_eq!(s4.elapsed(), Duration::ZERO);
    }
}
