//! The upload rate limit of `sync --limit-upload`: every upload reserves
//! its bytes and waits until the average rate since the run began is back
//! under the limit. Parallel uploads share one budget.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Limiter {
    bytes_per_second: u64,
    began: Instant,
    reserved: Mutex<u64>,
}

impl Limiter {
    pub fn new(bytes_per_second: u64) -> Limiter {
        Limiter {
            bytes_per_second: bytes_per_second.max(1),
            began: Instant::now(),
            reserved: Mutex::new(0),
        }
    }

    /// How long an upload of `bytes` must wait before it starts, given what
    /// was reserved before it.
    fn reserve(&self, bytes: u64) -> Duration {
        let mut r = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let before = *r;
        *r += bytes;
        let due = Duration::from_secs_f64(before as f64 / self.bytes_per_second as f64);
        due.saturating_sub(self.began.elapsed())
    }

    /// Waits until `bytes` more may be sent.
    pub async fn wait(&self, bytes: u64) {
        let d = self.reserve(bytes);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_uploads_wait_for_earlier_bytes() {
        let l = Limiter::new(1000);
        assert!(l.reserve(2000).is_zero());
        let d = l.reserve(10);
        assert!(
            d > Duration::from_millis(1900) && d <= Duration::from_secs(2),
            "{d:?}"
        );
    }
}
