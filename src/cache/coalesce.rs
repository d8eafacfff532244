//! Request coalescing (single flight): concurrent misses on one key run one
//! load; the others wait for its result, for a bounded time.
//!
//! Loads from the local store are synchronous and take microseconds, so the
//! waiters block on the leader's slot mutex rather than parking a future. A
//! waiter that times out (or finds the leader gone without a result) loads
//! for itself: a slow load can delay a request, never wedge it.

use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::hash::Hasher;

type Slot<T> = Arc<Mutex<Option<T>>>;

pub struct Coalescer<T> {
    inflight: DashMap<CompactString, Slot<T>, Hasher>,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer { inflight: DashMap::with_hasher(Hasher::default()) }
    }
}

/// How a `load` call got its value.
#[derive(Debug, PartialEq, Eq)]
pub enum Role {
    /// Ran the load.
    Leader,
    /// Used another caller's load.
    Waiter,
    /// Waited in vain and loaded for itself.
    TimedOut,
}

impl<T: Clone> Coalescer<T> {
    pub fn load(&self, key: &str, wait: Duration, load: impl FnOnce() -> T) -> (T, Role) {
        let slot: Slot<T> = Arc::new(Mutex::new(None));
        let mut guard = slot.lock();
        let existing = match self.inflight.entry(key.into()) {
            MapEntry::Occupied(e) => Some(e.get().clone()),
            MapEntry::Vacant(v) => {
                v.insert(slot.clone());
                None
            }
        };
        if let Some(other) = existing {
            drop(guard);
            if let Some(done) = other.try_lock_for(wait) {
                if let Some(v) = done.as_ref() {
                    return (v.clone(), Role::Waiter);
                }
            }
            return (load(), Role::TimedOut);
        }
        let value = load();
        *guard = Some(value.clone());
        self.inflight.remove(key);
        drop(guard);
        (value, Role::Leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn concurrent_misses_on_one_key_run_one_load() {
        let c: Arc<Coalescer<u64>> = Arc::new(Coalescer::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let n = 16;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (c, loads, barrier) = (c.clone(), loads.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.load("hot", Duration::from_secs(5), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        42
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.iter().all(|(v, _)| *v == 42));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|(_, r)| *r == Role::Leader).count(), 1);
        assert_eq!(results.iter().filter(|(_, r)| *r == Role::Waiter).count(), n - 1);
    }

    #[test]
    fn a_waiter_gives_up_after_its_timeout_and_loads_itself() {
        let c: Arc<Coalescer<u64>> = Arc::new(Coalescer::default());
        let c2 = c.clone();
        let slow = std::thread::spawn(move || {
            c2.load("k", Duration::from_secs(5), || {
                std::thread::sleep(Duration::from_millis(500));
                1
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let (v, role) = c.load("k", Duration::from_millis(20), || 2);
        assert_eq!((v, role), (2, Role::TimedOut));
        assert_eq!(slow.join().unwrap(), (1, Role::Leader));
    }
}
