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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::cluster::Cluster;
use crate::hot::HotKeys;
use crate::store::{Hasher, Store};

pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
const PERSIST_EVERY: Duration = Duration::from_secs(1);
const BUFFER_KEYS: usize = 4096;
const QUEUE: usize = 256;

pub type Batch = HashMap<CompactString, u64, Hasher>;

fn new_batch() -> Batch {
    HashMap::with_capacity_and_hasher(BUFFER_KEYS, Hasher::default())
}

/// The channel ends every worker shares.
#[derive(Clone)]
pub struct ClickSink {
    tx: Sender<Batch>,
    pool: Receiver<Batch>,
}

/// One worker's pending click deltas.
pub struct ClickBuffer {
    counts: Batch,
    sink: ClickSink,
}

impl ClickBuffer {
    pub fn new(sink: ClickSink) -> ClickBuffer {
        ClickBuffer { counts: new_batch(), sink }
    }

    #[inline]
    pub fn count(&mut self, code: &str) {
        match self.counts.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(code.into(), 1);
                if self.counts.len() >= BUFFER_KEYS * 3 / 4 {
                    self.flush();
                }
            }
        }
    }

    /// Hands the pending deltas to the aggregator; keeps them if it is busy.
    pub fn flush(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let fresh = self.sink.pool.try_recv().unwrap_or_else(|_| new_batch());
        let full = std::mem::replace(&mut self.counts, fresh);
        if let Err(TrySendError::Full(full) | TrySendError::Disconnected(full)) = self.sink.tx.try_send(full) {
            self.counts = full;
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
    pub fn start(store: Arc<Store>, hot: Arc<HotKeys>, cluster: Option<Arc<Cluster>>) -> Aggregator {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("shortd-clicks".into())
            .spawn(move || aggregate(store, hot, cluster, rx, pool_tx, stop2))
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
    rx: Receiver<Batch>,
    pool: Sender<Batch>,
    stop: Arc<AtomicBool>,
) {
    // In a cluster, clicks also go to the code's other holders, and only a
    // holder counts them in its own store.
    let count = |code: &str, n: u64| {
        if cluster.as_ref().is_none_or(|c| c.on_clicks(code, n)) {
            store.add_clicks(code, n);
        }
    };
    let mut last_persist = Instant::now();
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(mut batch) => {
                for (code, n) in batch.drain() {
                    count(&code, n);
                    hot.record(&code, n);
                }
                let _ = pool.try_send(batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::Acquire) {
            while let Ok(batch) = rx.try_recv() {
                for (code, n) in batch {
                    count(&code, n);
                }
            }
            break;
        }
        if last_persist.elapsed() >= PERSIST_EVERY {
            store.persist_clicks();
            last_persist = Instant::now();
        }
    }
    store.persist_clicks();
}
