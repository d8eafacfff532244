//! Heavy hitters: which codes are most requested right now.
//!
//! A Space-Saving sketch (Metwally et al.) keeps at most `CAPACITY`
//! counters: a new code that finds the table full takes over the smallest
//! counter, inheriting its count as possible overcount. Any code requested
//! more than 1/CAPACITY of the time is guaranteed to be in the table. Two
//! sketches rotate every `WINDOW`, so the answer covers the last one to two
//! windows. The click aggregator feeds it batched deltas; the redirect path
//! never touches it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use parking_lot::Mutex;

use crate::hash::Hasher;

pub const CAPACITY: usize = 1024;
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct SpaceSaving {
    counts: HashMap<CompactString, u64, Hasher>,
    /// Codes whose count was the table's minimum at the last scan. Counts
    /// only grow and a newcomer enters at the minimum or above, so one of
    /// these whose count is unchanged is still a minimum: eviction scans
    /// the table once per batch of such codes, not once per newcomer.
    at_floor: Vec<CompactString>,
    floor: u64,
}

impl SpaceSaving {
    fn add(&mut self, code: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(code) {
            *c += n;
            return;
        }
        if self.counts.len() < CAPACITY {
            self.counts.insert(code.into(), n);
            return;
        }
        let victim = loop {
            match self.at_floor.pop() {
                Some(k) if self.counts.get(&k) == Some(&self.floor) => break k,
                Some(_) => continue,
                None => {
                    let Some(&floor) = self.counts.values().min() else { return };
                    self.floor = floor;
                    self.at_floor = self.counts.iter().filter(|(_, &c)| c == floor).map(|(k, _)| k.clone()).collect();
                }
            }
        };
        self.counts.remove(&victim);
        self.counts.insert(code.into(), self.floor + n);
    }
}

pub struct HotKeys {
    inner: Mutex<(SpaceSaving, SpaceSaving, Instant)>,
    window: Duration,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys::new(WINDOW)
    }
}

impl HotKeys {
    pub fn new(window: Duration) -> HotKeys {
        HotKeys { inner: Mutex::new((SpaceSaving::default(), SpaceSaving::default(), Instant::now())), window }
    }

    fn rotate(inner: &mut (SpaceSaving, SpaceSaving, Instant), window: Duration) {
        if inner.2.elapsed() >= window {
            inner.1 = std::mem::take(&mut inner.0);
            if inner.2.elapsed() >= window * 2 {
                inner.1 = SpaceSaving::default();
            }
            inner.2 = Instant::now();
        }
    }

    pub fn record(&self, code: &str, n: u64) {
        self.batch().record(code, n);
    }

    /// Records many codes under one lock and one look at the clock (the
    /// aggregator's batch: under uniform load, a few thousand codes).
    pub fn batch(&self) -> Batch<'_> {
        let mut inner = self.inner.lock();
        HotKeys::rotate(&mut inner, self.window);
        Batch(inner)
    }

    /// The `limit` most requested codes with their counts over `covered()`.
    pub fn top(&self, limit: usize) -> Vec<(CompactString, u64)> {
        let mut inner = self.inner.lock();
        HotKeys::rotate(&mut inner, self.window);
        let mut merged: HashMap<&CompactString, u64> = HashMap::new();
        for (k, &c) in inner.0.counts.iter().chain(inner.1.counts.iter()) {
            *merged.entry(k).or_default() += c;
        }
        let mut all: Vec<(CompactString, u64)> = merged.into_iter().map(|(k, c)| (k.clone(), c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }

    /// The span of time the counts cover.
    pub fn window(&self) -> Duration {
        let inner = self.inner.lock();
        (self.window + inner.2.elapsed()).max(Duration::from_secs(1))
    }
}

pub struct Batch<'a>(parking_lot::MutexGuard<'a, (SpaceSaving, SpaceSaving, Instant)>);

impl Batch<'_> {
    pub fn record(&mut self, code: &str, n: u64) {
        self.0 .0.add(code, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_hitter_rises_to_the_top_among_many_rare_codes() {
        let hot = HotKeys::default();
        for i in 0..50_000u64 {
            hot.record(&format!("rare{i}"), 1);
            if i % 10 == 0 {
                hot.record("viral", 1);
            }
            if i % 50 == 0 {
                hot.record("warm", 1);
            }
        }
        let top = hot.top(2);
        assert_eq!(top[0].0, "viral");
        assert!(top[0].1 >= 5_000);
        assert_eq!(top[1].0, "warm");
    }

    #[test]
    fn eviction_takes_a_smallest_counter_like_a_full_scan_would() {
        // The same stream through the sketch and through the textbook
        // version (scan for the minimum on every eviction) gives the same
        // multiset of counts; ties may pick different codes.
        let mut fast = SpaceSaving::default();
        let mut slow: HashMap<String, u64> = HashMap::new();
        let mut x = 12345u64;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let code = format!("c{}", (x >> 33) % 5000);
            let n = 1 + (x >> 60);
            fast.add(&code, n);
            if let Some(c) = slow.get_mut(&code) {
                *c += n;
            } else if slow.len() < CAPACITY {
                slow.insert(code, n);
            } else {
                let (victim, floor) = slow.iter().min_by_key(|(_, &c)| c).map(|(k, &c)| (k.clone(), c)).unwrap();
                slow.remove(&victim);
                slow.insert(code, floor + n);
            }
        }
        let mut a: Vec<u64> = fast.counts.values().copied().collect();
        let mut b: Vec<u64> = slow.values().copied().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a.iter().sum::<u64>(), b.iter().sum::<u64>());
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn counts_age_out_after_two_windows() {
        let hot = HotKeys::new(Duration::from_millis(50));
        hot.record("old", 100);
        std::thread::sleep(Duration::from_millis(120));
        hot.record("new", 1);
        assert_eq!(hot.top(5).iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["new"]);
    }
}
