//! Click counting that never makes a redirect wait.
//!
//! Each worker thread counts into its own map (`ClickBuffer`, no lock, no
//! allocation once warm: the map keeps its capacity and short codes are
//! stored inline). Every `FLUSH_EVERY`, or when the map fills, the worker
//! swaps it for an empty one from a pool and sends the full one over a
//! bounded crossbeam channel to the aggregator thread, which adds the deltas
//! to the store's totals, hands the emptied map back to the pool, and once a
//! second has the store log the changed totals. Links with `max_clicks` are
//! not batched: they are counted exactly in the store at redirect time.
//!
//! With analytics on, a click goes into the batch's `Visits` instead (see
//! `analytics::capture`), and the aggregator counts it in the link's total
//! only once it knows it was no bot; a click whose breakdown does not fit
//! is counted the plain way. The aggregator also logs changed rollups
//! once a second and drops hours past `--stats-retention` once a minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::analytics::capture::{Visit, Visits, BOT, COUNTED};
use crate::analytics::rollup::hour_of;
use crate::analytics::{Aggregation, Analytics};
use crate::cluster::Cluster;
use crate::hash::Hasher;
use crate::hot::HotKeys;
use crate::store::Store;

pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
const PERSIST_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const BUFFER_KEYS: usize = 4096;
const QUEUE: usize = 256;

/// What a worker hands over: plain click deltas and captured visits.
pub struct Batch {
    pub counts: HashMap<CompactString, u64, Hasher>,
    pub visits: Visits,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.visits.is_empty()
    }
}

fn new_batch() -> Batch {
    Batch { counts: HashMap::with_capacity_and_hasher(BUFFER_KEYS, Hasher::default()), visits: Visits::default() }
}

/// The channel ends every worker shares.
#[derive(Clone)]
pub struct ClickSink {
    tx: Sender<Batch>,
    pool: Receiver<Batch>,
}

/// One worker's pending click deltas.
pub struct ClickBuffer {
    batch: Batch,
    sink: ClickSink,
}

impl ClickBuffer {
    pub fn new(sink: ClickSink) -> ClickBuffer {
        ClickBuffer { batch: new_batch(), sink }
    }

    /// One click, total only.
    #[inline]
    pub fn count(&mut self, code: &str) {
        match self.batch.counts.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.batch.counts.insert(code.into(), 1);
                if self.batch.counts.len() >= BUFFER_KEYS * 3 / 4 {
                    self.flush();
                }
            }
        }
    }

    /// One click with its breakdown; `flags` say whether the hot path
    /// already counted it (`COUNTED`) or found a bot (`BOT`). When the
    /// batch is full, only the count is kept.
    #[inline]
    pub fn visit(&mut self, code: &str, visit: &Visit<'_>, ip: std::net::IpAddr, now_ms: i64, flags: u8) {
        let sec = (now_ms / 1000).max(0) as u32;
        if !self.batch.visits.record(code, visit, ip, sec, flags) {
            crate::metrics::breakdown_dropped();
            if flags & (COUNTED | BOT) == 0 {
                self.count(code);
            }
            return;
        }
        if self.batch.visits.nearly_full() {
            self.flush();
        }
    }

    /// Hands the pending deltas to the aggregator; keeps them if it is busy.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let fresh = self.sink.pool.try_recv().unwrap_or_else(|_| new_batch());
        let full = std::mem::replace(&mut self.batch, fresh);
        if let Err(TrySendError::Full(full) | TrySendError::Disconnected(full)) = self.sink.tx.try_send(full) {
            self.batch = full;
        }
    }
}

/// The thread that folds worker deltas into the store.
pub struct Aggregator {
    sink: ClickSink,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Aggregator {
    pub fn start(store: Arc<Store>, hot: Arc<HotKeys>, cluster: Option<Arc<Cluster>>, analytics: Arc<Analytics>) -> Aggregator {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("shortd-clicks".into())
            .spawn(move || aggregate(store, hot, cluster, analytics, rx, pool_tx, stop2))
            .expect("spawning the click aggregator at start-up");
        Aggregator { sink: ClickSink { tx, pool: pool_rx }, stop, handle: Some(handle) }
    }

    pub fn sink(&self) -> ClickSink {
        self.sink.clone()
    }

    /// Applies everything sent so far, logs the totals and stops.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn aggregate(
    store: Arc<Store>,
    hot: Arc<HotKeys>,
    cluster: Option<Arc<Cluster>>,
    analytics: Arc<Analytics>,
    rx: Receiver<Batch>,
    pool: Sender<Batch>,
    stop: Arc<AtomicBool>,
) {
    // In a cluster, clicks are reported to the code's partition and counted
    // when it applies the report, not here.
    let count = |code: &str, n: u64| {
        if cluster.as_ref().is_none_or(|c| c.on_clicks(code, n)) {
            store.add_clicks(code, n);
        }
    };
    let mut folder = Aggregation::default();
    let mut apply = |batch: &mut Batch| {
        let mut hot = hot.batch();
        for (code, n) in batch.counts.drain() {
            count(&code, n);
            hot.record(&code, n);
        }
        if !batch.visits.is_empty() {
            let now_sec = (crate::clock::now_ms() / 1000) as u32;
            let folded = folder.fold(&analytics, &batch.visits, store.rollups(), now_sec, |code, n, human| {
                if human {
                    count(code, n);
                }
                hot.record(code, n);
            });
            if folded.bots > 0 {
                crate::metrics::bots(folded.bots);
            }
            crate::metrics::analytics_lag(folded.lag_seconds);
            batch.visits.clear();
        }
    };
    let prune = || {
        let now = hour_of(crate::clock::now_ms());
        store.rollups().prune(now.saturating_sub(analytics.retention_hours), now);
        analytics.geo.report_age();
    };
    prune();
    let (mut last_persist, mut last_prune) = (Instant::now(), Instant::now());
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(mut batch) => {
                apply(&mut batch);
                let _ = pool.try_send(batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::Acquire) {
            while let Ok(mut batch) = rx.try_recv() {
                apply(&mut batch);
            }
            break;
        }
        if last_persist.elapsed() >= PERSIST_EVERY {
            store.persist_clicks();
            store.persist_rollups(hour_of(crate::clock::now_ms()));
            last_persist = Instant::now();
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            prune();
            last_prune = Instant::now();
        }
    }
    store.persist_clicks();
    store.persist_rollups(hour_of(crate::clock::now_ms()));
}
