//! TTL with random jitter, so that entries loaded together spread their
//! expiry over `[ttl, ttl + jitter)` instead of all missing at once.

use std::time::Duration;

pub fn with_jitter(ttl: Duration, jitter: Duration) -> Duration {
    let j = jitter.as_millis() as u64;
    if j == 0 {
        return ttl;
    }
    ttl + Duration::from_millis(fastrand::u64(0..j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_expiry_over_the_whole_window() {
        let ttl = Duration::from_secs(60);
        let jitter = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..10_000).map(|_| with_jitter(ttl, jitter)).collect();
        assert!(samples.iter().all(|d| *d >= ttl && *d < ttl + jitter));
        let mut buckets = [0u32; 10];
        for d in &samples {
            buckets[((d.as_millis() - 60_000) / 1000) as usize] += 1;
        }
        // Each one-second slot gets about a tenth; none is empty or crowded.
        assert!(buckets.iter().all(|&n| (700..1300).contains(&n)), "{buckets:?}");
    }

    #[test]
    fn no_jitter_means_exact_ttl() {
        assert_eq!(with_jitter(Duration::from_secs(5), Duration::ZERO), Duration::from_secs(5));
    }
}
