//! The redirect cache: ready-to-serve entries for hot codes.
//!
//! An entry holds the prebuilt `Location` header value, so a hit clones a
//! reference count, not a buffer. The map is a `DashMap` (sharded
//! read-write locks). Entries live for a TTL plus random jitter so that keys
//! loaded together do not expire together; an expired entry is still served
//! while the one request that claimed its refresh reloads it
//! (stale-while-revalidate). Concurrent misses on one key share one load
//! (`coalesce`). Size is bounded by entries and by bytes; over a bound, an
//! insert evicts by CLOCK (second chance): keys wait in a FIFO, a hit sets
//! the entry's reference bit, and eviction pops keys from the front, giving
//! each referenced one a second round. The hit path only reads a bit it
//! rarely has to write; the FIFO's lock is taken on inserts (misses) only.

mod coalesce;
pub mod ttl;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use dashmap::DashMap;
use http::{HeaderValue, StatusCode};
use parking_lot::Mutex;

pub use coalesce::{Coalescer, Role};

use crate::hash::Hasher;
use crate::store::Lookup;

/// Most evictions one insert performs.
const MAX_EVICTIONS_PER_INSERT: usize = 64;
/// Fixed cost per entry beyond key and URL bytes, for the byte bound.
const ENTRY_OVERHEAD: usize = 96;

/// What a redirect needs, ready to send.
pub struct Entry {
    pub location: HeaderValue,
    pub status: StatusCode,
    /// Unix ms at which the link expires; 0 for never.
    pub expires_ms: i64,
    /// Click limit, 0 for none: such links are counted exactly in the store.
    pub max_clicks: u64,
    /// Deleted or disabled: answer 410.
    pub gone: bool,
    fresh_until_ms: i64,
    refreshing: AtomicU32,
    referenced: AtomicBool,
    bytes: usize,
}

impl Entry {
    pub fn new(location: HeaderValue, status: StatusCode, expires_ms: i64, max_clicks: u64, gone: bool) -> Entry {
        // A HeaderValue made from an owned buffer becomes shared on its first
        // clone, which allocates; do that now, not on the first hit.
        drop(location.clone());
        Entry {
            bytes: location.len() + ENTRY_OVERHEAD,
            location,
            status,
            expires_ms,
            max_clicks,
            gone,
            fresh_until_ms: 0,
            refreshing: AtomicU32::new(0),
            referenced: AtomicBool::new(false),
        }
    }

    /// The entry for what the store (or a peer) holds: deleted, missing
    /// and unservable links all answer 410.
    pub fn from_lookup(found: Lookup) -> Entry {
        match found {
            Lookup::Missing | Lookup::Deleted | Lookup::Unavailable => {
                Entry::new(HeaderValue::from_static(""), StatusCode::GONE, 0, 0, true)
            }
            Lookup::Live(link) => {
                let status = StatusCode::from_u16(link.redirect).unwrap_or(StatusCode::FOUND);
                match HeaderValue::from_maybe_shared(Bytes::from(link.url)) {
                    Ok(location) => Entry::new(location, status, link.expires_ms, link.max_clicks, link.disabled),
                    Err(_) => {
                        tracing::error!(code = %link.code, "stored URL is not a valid header value");
                        Entry::new(HeaderValue::from_static(""), StatusCode::GONE, 0, 0, true)
                    }
                }
            }
        }
    }

    pub fn fresh_until_ms(&self) -> i64 {
        self.fresh_until_ms
    }

    /// Lets the next request claim the refresh again (the last one failed).
    pub fn retry_refresh(&self) {
        self.refreshing.store(0, Ordering::Release);
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

/// What a coalesced load yields: the entry, or `None` for an unknown code.
pub type Loaded = Option<Arc<Entry>>;

pub enum Hit {
    /// Serve it.
    Fresh(Arc<Entry>),
    /// Serve it, and this caller should refresh it (only one caller is told).
    StaleRefresh(Arc<Entry>),
    Miss,
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub max_bytes: usize,
    pub ttl: Duration,
    pub jitter: Duration,
}

pub struct Cache {
    map: DashMap<CompactString, Arc<Entry>, Hasher>,
    cfg: CacheConfig,
    entries: AtomicUsize,
    bytes: AtomicUsize,
    /// Bumped by every invalidation; a load that started before a bump does
    /// not insert what it read, so a change is never hidden by a slow load.
    generation: AtomicU64,
    clock: Mutex<VecDeque<CompactString>>,
    pub coalescer: Coalescer<Loaded>,
}

impl Cache {
    pub fn new(cfg: CacheConfig) -> Cache {
        Cache {
            map: DashMap::with_hasher(Hasher::default()),
            cfg,
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            clock: Mutex::new(VecDeque::new()),
            coalescer: Coalescer::default(),
        }
    }

    #[inline]
    pub fn get(&self, code: &str, now_ms: i64) -> Hit {
        let Some(e) = self.map.get(code) else { return Hit::Miss };
        let entry = e.value();
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        if now_ms < entry.fresh_until_ms {
            return Hit::Fresh(entry.clone());
        }
        if entry.refreshing.swap(1, Ordering::AcqRel) == 0 {
            Hit::StaleRefresh(entry.clone())
        } else {
            Hit::Fresh(entry.clone())
        }
    }

    /// Like `get` but never claims a refresh; for re-checks inside a load.
    pub fn peek(&self, code: &str) -> Option<Arc<Entry>> {
        self.map.get(code).map(|e| e.value().clone())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Inserts a freshly loaded entry unless an invalidation happened since
    /// `generation` was read.
    pub fn insert(&self, code: &str, mut entry: Entry, generation: u64, now_ms: i64) -> Arc<Entry> {
        entry.fresh_until_ms = now_ms + ttl::with_jitter(self.cfg.ttl, self.cfg.jitter).as_millis() as i64;
        let bytes = entry.bytes + code.len();
        let entry = Arc::new(entry);
        if self.cfg.max_entries == 0 || bytes > self.cfg.max_bytes || self.generation() != generation {
            return entry;
        }
        let old = self.map.insert(code.into(), entry.clone());
        match old {
            Some(old) => {
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                self.bytes.fetch_sub(old.bytes + code.len(), Ordering::Relaxed);
            }
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                self.clock.lock().push_back(code.into());
            }
        }
        if self.generation() != generation {
            self.remove(code);
        }
        self.evict_if_needed(code);
        entry
    }

    /// Drops a code's entry at once (after a patch, delete or disable).
    pub fn invalidate(&self, code: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.remove(code);
    }

    /// Drops the entries of every code `doomed` names.
    pub fn invalidate_where(&self, doomed: impl Fn(&str) -> bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let codes: Vec<CompactString> = self.map.iter().filter(|e| doomed(e.key())).map(|e| e.key().clone()).collect();
        for code in codes {
            self.remove(&code);
        }
    }

    fn remove(&self, code: &str) {
        if let Some((k, old)) = self.map.remove(code) {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(old.bytes + k.len(), Ordering::Relaxed);
        }
    }

    fn over_bounds(&self) -> bool {
        self.entries.load(Ordering::Relaxed) > self.cfg.max_entries || self.bytes.load(Ordering::Relaxed) > self.cfg.max_bytes
    }

    fn evict_if_needed(&self, just_inserted: &str) {
        let mut evicted = 0;
        let mut clock = self.clock.lock();
        let mut budget = clock.len() * 2;
        while self.over_bounds() && evicted < MAX_EVICTIONS_PER_INSERT && budget > 0 {
            budget -= 1;
            let Some(key) = clock.pop_front() else { break };
            let second_chance = match self.map.get(key.as_str()) {
                None => continue,
                Some(e) => key == just_inserted || e.referenced.swap(false, Ordering::Relaxed),
            };
            if second_chance {
                clock.push_back(key);
            } else {
                self.remove(&key);
                evicted += 1;
            }
        }
        if clock.len() > 2 * self.entries.load(Ordering::Relaxed) + 1024 {
            clock.retain(|k| self.map.contains_key(k.as_str()));
        }
        drop(clock);
        if evicted > 0 {
            crate::metrics::evicted(evicted as u64);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize) -> Cache {
        Cache::new(CacheConfig { max_entries, max_bytes: 1 << 30, ttl: Duration::from_secs(60), jitter: Duration::from_secs(10) })
    }

    fn entry(url: &'static str) -> Entry {
        Entry::new(HeaderValue::from_static(url), StatusCode::FOUND, 0, 0, false)
    }

    #[test]
    fn hit_after_insert_and_gone_after_invalidate() {
        let c = cache(10);
        let g = c.generation();
        c.insert("abc", entry("https://a.example/"), g, 1_000);
        assert!(matches!(c.get("abc", 1_001), Hit::Fresh(e) if e.location == "https://a.example/"));
        c.invalidate("abc");
        assert!(matches!(c.get("abc", 1_002), Hit::Miss));
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let c = cache(10);
        let g = c.generation();
        c.invalidate("abc");
        c.insert("abc", entry("https://old.example/"), g, 1_000);
        assert!(matches!(c.get("abc", 1_001), Hit::Miss));
    }

    #[test]
    fn stale_entries_are_served_and_exactly_one_caller_refreshes() {
        let c = cache(10);
        c.insert("abc", entry("https://a.example/"), c.generation(), 0);
        let later = 200_000;
        assert!(matches!(c.get("abc", later), Hit::StaleRefresh(_)));
        assert!(matches!(c.get("abc", later), Hit::Fresh(_)));
    }

    #[test]
    fn bounded_by_entries() {
        let c = cache(100);
        for i in 0..1000 {
            c.insert(&format!("k{i}"), entry("https://a.example/"), c.generation(), i);
        }
        assert!(c.len() <= 100, "{}", c.len());
        assert_eq!(c.len(), c.map.len());
    }

    #[test]
    fn bounded_by_bytes() {
        let c = Cache::new(CacheConfig { max_entries: 1 << 20, max_bytes: 10_000, ttl: Duration::from_secs(60), jitter: Duration::ZERO });
        for i in 0..1000 {
            c.insert(&format!("k{i}"), entry("https://a.example/some/longer/path"), c.generation(), i);
        }
        assert!(c.bytes() <= 10_000, "{}", c.bytes());
    }
}
