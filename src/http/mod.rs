//! The HTTP edge: sockets and connections (`server`), routing (`router`),
//! the redirect hot path (`redirect`), the JSON API (`api`), click stats and
//! QR codes (`stats`) and errors (`problem`).

pub mod access;
pub mod api;
mod auth;
mod body;
mod health;
pub mod internal;
mod json;
mod links;
pub mod problem;
pub mod redirect;
pub mod router;
pub mod server;
pub mod stats;

/// How often each worker's coarse clock is refreshed.
pub const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(10);

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use crate::analytics::Analytics;
use crate::cache::{Cache, CacheConfig};
use crate::clicks::{ClickBuffer, ClickSink};
use crate::clock;
use crate::config::{Config, Switch};
use crate::hot::HotKeys;
use crate::links::Links;
use crate::metrics::{Metrics, WorkerStats};
use crate::store::{Store, StoreOptions};

/// Why a server could not start (`App::open`, `Server::start`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] crate::store::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start worker threads: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Access(String),
    #[error("{0}")]
    Cluster(String),
}

/// Everything a request handler may use, shared by all workers.
pub struct App {
    pub cfg: Config,
    pub access: access::Access,
    /// This node's own store: every link on a single node; in a cluster,
    /// what is this node's alone (its click rollups), the links being in
    /// the partitions' stores (`links.store_of`).
    pub store: Arc<Store>,
    pub cache: Arc<Cache>,
    pub hot: Arc<HotKeys>,
    pub analytics: Arc<Analytics>,
    pub metrics: Arc<Metrics>,
    pub cache_control: HeaderValue,
    /// `public_url` with a trailing slash; a code appended makes `short_url`.
    pub public_base: String,
    /// The public host, which targets may not point at.
    pub own_host: Option<String>,
    /// Where links are read and written: this node, or the cluster.
    pub links: Links,
    shutting_down: AtomicBool,
}

impl App {
    /// Opens the store and builds everything the handlers share.
    pub fn open(cfg: Config) -> Result<App, StartError> {
        // The recorder first, so that what the store reports while opening counts.
        let metrics = crate::metrics::install();
        let raft_log = match &cfg.cluster {
            Some(c) => Some(crate::cluster::open_log(&cfg.data_dir, c, cfg.durability, cfg.segment_bytes).map_err(StartError::Cluster)?),
            None => None,
        };
        let options = |dir: std::path::PathBuf, durability, segment_bytes| StoreOptions {
            dir,
            durability,
            fsync_interval: cfg.fsync_interval,
            segment_bytes,
            snapshot_records: cfg.snapshot_records,
            snapshot_interval: cfg.snapshot_interval,
            compact_ratio: cfg.compact_ratio,
            repair: cfg.repair,
            origin: 0,
            read_only: false,
            scrub_rate: cfg.scrub_rate,
            scrub_interval: cfg.scrub_interval,
            stats_top: cfg.stats_top,
            queue: crate::store::DEFAULT_QUEUE,
        };
        // A cluster node keeps each partition's replica in a store of its
        // own, never synced: the Raft journal and snapshots are what is
        // durable (see `cluster::raft`). What is this node's alone (its
        // click rollups) stays in `DATA_DIR/local/`.
        let (store_dir, partitions) = match (&cfg.cluster, &raft_log) {
            (Some(c), Some(log)) => {
                let segment_bytes = (cfg.segment_bytes / u64::from(c.partitions)).max(cfg.least_segment_bytes());
                // Only the group's state machine writes to a replica, one
                // entry at a time: a short queue (at 64 k slots of about 180
                // bytes each, sixteen of them held 180 MB).
                // The replicas' scrubs share `--scrub-rate` between them.
                let scrub_rate = match cfg.scrub_rate {
                    0 => 0,
                    r => (r / u64::from(c.partitions)).max(1),
                };
                let template = StoreOptions {
                    queue: 1024,
                    scrub_rate,
                    ..options(std::path::PathBuf::new(), crate::config::Durability::Never, segment_bytes)
                };
                let open: crate::cluster::raft::OpenReplica = Box::new(move |dir| Store::open(StoreOptions { dir, ..template.clone() }));
                let partitions = crate::cluster::open_partitions(&cfg.data_dir.join("state"), log, c.partitions, open)?;
                (cfg.data_dir.join("local"), Some(partitions))
            }
            _ => (cfg.data_dir.clone(), None),
        };
        let store = Arc::new(Store::open(options(store_dir, cfg.durability, cfg.segment_bytes))?);
        let analytics = Arc::new(
            Analytics::new(cfg.analytics == Switch::On, cfg.count_bots, cfg.geoip_db.clone(), cfg.stats_retention)
                .map_err(StartError::Access)?,
        );
        let cache = Arc::new(Cache::new(CacheConfig {
            max_entries: cfg.cache_entries,
            max_bytes: cfg.cache_bytes,
            ttl: cfg.cache_ttl,
            jitter: cfg.cache_ttl_jitter,
        }));
        let links = match (&cfg.cluster, raft_log, partitions) {
            (Some(c), Some(log), Some(partitions)) => {
                Links::Clustered(crate::cluster::Cluster::start(c.clone(), log, partitions, cache.clone()).map_err(StartError::Cluster)?)
            }
            _ => Links::Local { store: store.clone(), cache: cache.clone() },
        };
        let mut public_base = cfg.public_url().to_string();
        if !public_base.ends_with('/') {
            public_base.push('/');
        }
        Ok(App {
            access: access::Access::new(&cfg).map_err(StartError::Access)?,
            cache,
            cache_control: HeaderValue::from_str(&cfg.cache_control)
                .map_err(|_| StartError::Access("--cache-control is not a header value".into()))?,
            own_host: cfg.public_url().host_str().map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string()),
            public_base,
            hot: Arc::new(HotKeys::default()),
            analytics,
            metrics,
            store,
            links,
            cfg,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Every store this node has open: those of the links, then, in a
    /// cluster, the node's own.
    pub fn every_store(&self) -> Vec<Arc<Store>> {
        let mut stores = self.links.stores().into_owned();
        if self.links.cluster().is_some() {
            stores.push(self.store.clone());
        }
        stores
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

impl Worker {
    /// A worker's state; `sink` is where its click buffer drains to.
    pub fn new(app: &App, sink: ClickSink) -> Worker {
        Worker {
            stats: app.metrics.register_worker(),
            clicks: RefCell::new(ClickBuffer::new(sink)),
            now_ms: Cell::new(clock::now_ms()),
            resident_streak: Cell::new(0),
            unchecked: Cell::new(0),
        }
    }

    /// Whether this miss should ask the kernel if its pages are in memory.
    /// The asking costs two system calls, a sixth of a cached miss here:
    /// after `RESIDENT_STREAK` misses in a row found everything in memory
    /// (the store is all in the page cache) only one miss in
    /// `RESIDENT_SAMPLE` asks, until one finds a page out.
    pub fn check_residency(&self) -> bool {
        if self.resident_streak.get() < RESIDENT_STREAK {
            return true;
        }
        let n = self.unchecked.get() + 1;
        self.unchecked.set(n % RESIDENT_SAMPLE);
        n == RESIDENT_SAMPLE
    }

    /// What the check found.
    pub fn residency_checked(&self, resident: bool) {
        self.resident_streak.set(if resident { self.resident_streak.get().saturating_add(1) } else { 0 });
    }

    /// Unix ms as of the last `tick`. Reading the system clock costs tens
    /// of nanoseconds on a virtual machine, a tenth of a cached redirect, so
    /// the redirect path reads this instead; the server ticks it every
    /// `CLOCK_TICK`, which bounds how late an expiry can be noticed.
    #[inline]
    pub fn now_ms(&self) -> i64 {
        self.now_ms.get()
    }

    pub fn tick(&self) {
        self.now_ms.set(clock::now_ms());
    }
}

/// Misses in a row found in memory before residency is only sampled. A
/// fault that waits for the disk costs thousands of checks (10 ms against
/// about 2 µs here), so sampling starts only when one miss in tens of
/// thousands, at most, finds a page out.
const RESIDENT_STREAK: u32 = 1 << 16;
/// One miss in this many asks once the streak is long.
const RESIDENT_SAMPLE: u32 = 16;

/// What one worker thread owns: its counters, its click buffer and its
/// coarse clock.
pub struct Worker {
    pub stats: Arc<WorkerStats>,
    pub clicks: RefCell<ClickBuffer>,
    now_ms: Cell<i64>,
    /// Misses in a row whose pages were found in memory, and misses since
    /// the last check once that streak is long (`check_residency`).
    resident_streak: Cell<u32>,
    unchecked: Cell<u32>,
}
