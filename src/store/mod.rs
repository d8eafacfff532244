//! The store: an in-memory index over the append-only journal.
//!
//! Reads (`lookup`, `page`, click counts) run on the caller's thread against
//! shared maps and memory-mapped segments. Every change goes to the single
//! writer thread (`journal::writer`), which checks it against the current
//! state, appends it, syncs per the durability setting, applies it to the
//! index and only then answers; that one thread is why an alias is claimed
//! atomically and why the index always matches the log's order.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use compact_str::CompactString;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::analytics::rollup::Rollups;
use crate::code::CodeKey;
use crate::hash::{Hasher, Map};
use crate::journal::record::{self, Body};
use crate::journal::segment::{Segment, Segments};
use crate::journal::{scrub, segment, snapshot, table, Durability, Poison};

pub mod index;
mod recovery;
mod search;
mod writer;

pub use recovery::KEY_FILE;
pub use search::Order;
use writer::{Command, Delivery, Writer};

/// Idempotency keys are remembered this long.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Where a key's newest record lies (the journal's record location).
pub use crate::journal::Loc;

/// Redirect statuses a link may ask for.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// A link as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub code: CompactString,
    pub url: String,
    pub id: u64,
    pub created_ms: i64,
    /// 0 when the link never expires.
    pub expires_ms: i64,
    /// 0 when unlimited.
    pub max_clicks: u64,
    pub redirect: u16,
    pub disabled: bool,
    pub clicks: u64,
}

impl Link {
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

/// Id of links created under a custom alias, which take no counter value.
pub const ALIAS_ID: u64 = u64::MAX;

/// A change's version: the later time wins, then the higher origin (a hash
/// of the node id), so every node picks the same winner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub ms: i64,
    pub origin: u32,
}

/// A key's newest record: the link, or `None` for a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub code: CompactString,
    pub link: Option<Link>,
    pub version: Version,
}

impl Stored {
    pub fn into_lookup(self) -> Lookup {
        match self.link {
            Some(l) => Lookup::Live(l),
            None => Lookup::Deleted,
        }
    }
}

/// A change made on another node, to apply here (`Store::apply`).
pub type Change = Stored;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Claim a key nobody holds: `Taken` if it exists, deleted or not.
    Create,
    /// Last writer wins: written only over an older version.
    Newer,
    /// Written whatever is there: a Raft state machine applies changes in
    /// log order, which already decided.
    Replace,
}

pub enum Lookup {
    Missing,
    Deleted,
    Live(Link),
    /// The index table is damaged where this key would be; the store is
    /// rebuilding it from the log (answer 503, try again shortly).
    Unavailable,
}

/// A create request after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLink {
    pub url: String,
    pub alias: Option<String>,
    pub expires_ms: i64,
    pub max_clicks: u64,
    pub redirect: u16,
    pub disabled: bool,
    /// `(Idempotency-Key, hash of the request body)`.
    pub idempotency: Option<(String, u64)>,
}

impl NewLink {
    /// A plain 302 link to `url` with a generated code and no limits.
    pub fn to(url: impl Into<String>) -> NewLink {
        NewLink { url: url.into(), alias: None, expires_ms: 0, max_clicks: 0, redirect: 302, disabled: false, idempotency: None }
    }
}

/// A link of a bulk load (`shortd import`), with what it carries over.
#[derive(Clone, Debug)]
pub struct Imported {
    pub new: NewLink,
    pub clicks: u64,
    pub hours: Vec<(u32, crate::analytics::rollup::Hour)>,
}

/// One chunk of a bulk load (`shortd import`), in file order: put records
/// its parser encoded, and links that take the writer's full path.
#[derive(Debug, Default)]
pub struct ImportBatch {
    /// Put records as `journal::record::encode_unsealed` makes them (any
    /// LSN, origin 0), one after another; the writer numbers and sums them.
    pub records: Vec<u8>,
    pub entries: Vec<ImportEntry>,
    /// The links of the `ImportEntry::Link` entries, in their order.
    pub links: Vec<Imported>,
}

#[derive(Clone, Copy, Debug)]
pub enum ImportEntry {
    /// The put record at `at` in `records`; `hash` is its key's
    /// `Store::key_hash`, `clicks` its click total.
    Record { at: u32, hash: u64, clicks: u64 },
    /// The next of `links`.
    Link,
}

/// A change to a link; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    pub url: Option<String>,
    /// `Some(0)` removes the expiry.
    pub expires_ms: Option<i64>,
    /// `Some(0)` removes the limit.
    pub max_clicks: Option<u64>,
    pub redirect: Option<u16>,
    pub disabled: Option<bool>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.url.is_none() && self.expires_ms.is_none() && self.max_clicks.is_none() && self.redirect.is_none() && self.disabled.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the alias is already taken")]
    Taken,
    #[error("no link has this code")]
    NotFound,
    #[error("the link was deleted")]
    Gone,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("every short code has been handed out")]
    Exhausted,
    #[error("the disk is full: {0}")]
    DiskFull(String),
    #[error("the store refuses writes: {0}")]
    Unavailable(String),
}

impl From<crate::journal::LogError> for WriteError {
    fn from(e: crate::journal::LogError) -> WriteError {
        match e {
            crate::journal::LogError::DiskFull(m) => WriteError::DiskFull(m),
            other => WriteError::Unavailable(other.to_string()),
        }
    }
}

pub struct Created {
    pub link: Link,
    /// True when an earlier request with the same Idempotency-Key made it.
    pub replayed: bool,
}

/// Why the store could not open (the data directory's files).
pub use crate::journal::OpenError;

/// The writer's queue of a store that serves an API: 64 batches' worth.
pub const DEFAULT_QUEUE: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub dir: PathBuf,
    pub durability: Durability,
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
    pub snapshot_records: u64,
    pub snapshot_interval: Duration,
    pub compact_ratio: f64,
    pub repair: bool,
    /// Written into every change's version; 0 on a single node.
    pub origin: u32,
    /// Open without a writer thread and without changing any file.
    pub read_only: bool,
    /// Background verification pace in bytes per second; 0 turns it off.
    pub scrub_rate: u64,
    /// Pause between the end of one scrub pass and the start of the next.
    pub scrub_interval: Duration,
    /// Values kept per dimension per hour in rollups, besides `other`.
    pub stats_top: usize,
    /// Commands the writer's queue holds; past that a write is refused
    /// (503). Its slots are allocated up front.
    pub queue: usize,
}

impl StoreOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            dir: dir.into(),
            durability: Durability::Always,
            fsync_interval: Duration::from_millis(10),
            segment_bytes: 64 << 20,
            snapshot_records: 1_000_000,
            snapshot_interval: Duration::from_secs(300),
            compact_ratio: 0.5,
            repair: false,
            origin: 0,
            read_only: false,
            scrub_rate: 16 << 20,
            scrub_interval: Duration::from_secs(24 * 3600),
            stats_top: crate::analytics::rollup::DEFAULT_TOP,
            queue: DEFAULT_QUEUE,
        }
    }
}

pub struct Idem {
    pub code: CompactString,
    pub body_hash: u64,
    pub at_ms: i64,
}

/// State shared by readers and the writer thread.
pub struct Shared {
    pub dir: PathBuf,
    pub key: CodeKey,
    pub index: index::Index,
    /// Click totals changed since the index table was written (the table
    /// holds the rest).
    pub clicks: Map<AtomicU64>,
    pub dirty_clicks: Mutex<HashSet<CompactString, Hasher>>,
    pub idem: Map<Idem>,
    pub segments: Arc<Segments>,
    /// Why the store refuses writes, once it does (set by the log).
    pub poisoned: Poison,
    pub live_links: AtomicU64,
    /// Damage found while serving (scrub, compaction), by file.
    pub damage: Mutex<BTreeMap<PathBuf, String>>,
    /// Where the log's written data ends (see `journal::log::written_loc`).
    pub written: Arc<AtomicU64>,
    /// Hourly click analytics per link, logged like click totals.
    pub rollups: Rollups,
    /// Set when a read meets a damaged index table block; the writer then
    /// rebuilds the index from the log.
    pub index_damaged: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn written(&self) -> Loc {
        crate::journal::log::written_loc(&self.written)
    }

    /// Records damage for `/readyz` and the damaged-segments gauge.
    pub fn report_damage(&self, file: &std::path::Path, what: String) {
        let mut damage = self.damage.lock();
        damage.insert(file.to_path_buf(), what);
        crate::metrics::damaged_segments(damage.keys().filter(|p| p.extension().is_some_and(|e| e == "log")).count());
    }

    pub fn segment(&self, seg: u32) -> Option<Arc<Segment>> {
        self.segments.get(seg)
    }

    /// Calls `f` with the record at `loc` if it is readable and is
    /// `code`'s. A record of another key there (a location that outlived
    /// its record, say after a power loss under `never`) is logged, counted
    /// and treated as absent: never answered as the other link.
    fn with_record<T>(&self, code: &str, loc: Loc, f: impl FnOnce(&record::Record<'_>) -> T) -> Option<T> {
        let Some(seg) = self.segment(loc.seg) else {
            tracing::error!(seg = loc.seg, code, "index points into a missing segment");
            return None;
        };
        match record::decode(seg.bytes(), loc.off as usize) {
            Ok((rec, _)) => {
                let key = rec.body.key().unwrap_or_default();
                if key == code.as_bytes() {
                    return Some(f(&rec));
                }
                tracing::error!(seg = loc.seg, off = loc.off, code, found = %String::from_utf8_lossy(key), "the record under the index is another key's");
                crate::metrics::key_mismatch();
                None
            }
            Err(e) => {
                tracing::error!(seg = loc.seg, off = loc.off, code, error = %e, "record under the index is unreadable");
                None
            }
        }
    }

    /// The key of the put or delete at `loc`.
    pub fn key_at(&self, loc: Loc) -> Option<CompactString> {
        let seg = self.segment(loc.seg)?;
        record::decode(seg.bytes(), loc.off as usize).ok()?.0.body.key().map(CompactString::from_utf8_lossy)
    }

    /// Whether the record at `loc` is `code`'s (a table candidate).
    pub fn is_key(&self, code: &str, loc: Loc) -> bool {
        let Some(seg) = self.segment(loc.seg) else { return false };
        match record::decode(seg.bytes(), loc.off as usize) {
            Ok((rec, _)) => rec.body.key() == Some(code.as_bytes()),
            Err(_) => false,
        }
    }

    /// Where `code`'s newest record lies.
    pub fn loc_of(&self, code: &str) -> Result<Option<Loc>, table::Damaged> {
        self.index.get(code, |loc| self.is_key(code, loc)).inspect_err(|d| self.table_damaged(*d))
    }

    pub fn contains(&self, code: &str) -> bool {
        self.loc_of(code).ok().flatten().is_some()
    }

    pub fn table_damaged(&self, d: table::Damaged) {
        if !self.index_damaged.swap(true, Ordering::Relaxed) {
            let file = self.index.table().path.clone().unwrap_or_default();
            tracing::error!(file = %file.display(), block = d.block, "index table damaged; rebuilding the index from the log");
            self.report_damage(&file, format!("{d}; the index is rebuilt from the log"));
        }
    }

    /// `code`'s click total.
    pub fn clicks_of(&self, code: &str) -> u64 {
        match self.clicks.get(code) {
            Some(c) => c.load(Ordering::Relaxed),
            None => self.table_clicks(code),
        }
    }

    fn table_clicks(&self, code: &str) -> u64 {
        self.index.table_clicks(code, |loc| self.is_key(code, loc)).inspect_err(|d| self.table_damaged(*d)).unwrap_or(0)
    }

    /// `code`'s entry in the click totals, made from the table's total.
    pub fn click_entry(&self, code: &str) -> dashmap::mapref::one::Ref<'_, CompactString, AtomicU64> {
        if let Some(e) = self.clicks.get(code) {
            return e;
        }
        self.clicks.entry(code.into()).or_insert_with(|| AtomicU64::new(self.table_clicks(code))).downgrade()
    }

    /// What the record at `loc` says of `code`.
    pub fn read_at(&self, code: &str, loc: Loc) -> Lookup {
        self.with_record(code, loc, |rec| match &rec.body {
            Body::Put(p) => Lookup::Live(self.link_from(p)),
            _ => Lookup::Deleted,
        })
        .unwrap_or(Lookup::Missing)
    }

    pub fn version_at(&self, code: &str, loc: Loc) -> Option<Version> {
        self.with_record(code, loc, |r| Version { ms: r.time_ms, origin: r.origin })
    }

    /// The newest record of a key, tombstones included.
    pub fn stored(&self, code: &str) -> Option<Stored> {
        let loc = self.loc_of(code).ok()??;
        self.with_record(code, loc, |rec| self.stored_from(rec)).flatten()
    }

    fn stored_from(&self, rec: &record::Record<'_>) -> Option<Stored> {
        let version = Version { ms: rec.time_ms, origin: rec.origin };
        match &rec.body {
            Body::Put(p) => {
                let link = self.link_from(p);
                Some(Stored { code: link.code.clone(), link: Some(link), version })
            }
            Body::Delete { key } => Some(Stored { code: CompactString::from_utf8_lossy(key), link: None, version }),
            _ => None,
        }
    }

    pub fn link_from(&self, p: &record::Put<'_>) -> Link {
        let code = CompactString::from_utf8_lossy(p.key);
        let clicks = self.clicks_of(&code);
        Link {
            url: String::from_utf8_lossy(p.url).into_owned(),
            id: p.id,
            created_ms: p.created_ms,
            expires_ms: p.expires_ms,
            max_clicks: p.max_clicks,
            redirect: p.redirect,
            disabled: p.flags & record::FLAG_DISABLED != 0,
            clicks,
            code,
        }
    }

    /// Whether `lookup(code)` would read only pages in memory: the index
    /// entry and the first `RECORD_PEEK` bytes of the record. A lookup that
    /// would wait for the disk belongs off an event loop.
    pub fn lookup_resident(&self, code: &str) -> bool {
        let record = |loc: Loc| {
            self.segment(loc.seg).is_none_or(|seg| {
                let rest = seg.bytes().get(loc.off as usize..).unwrap_or_default();
                segment::resident(&rest[..rest.len().min(RECORD_PEEK)])
            })
        };
        match self.index.in_memory_loc(code) {
            Some(loc) => record(loc),
            None => self.index.table().resident(self.index.hash(code), record),
        }
    }

    pub fn lookup(&self, code: &str) -> Lookup {
        match self.loc_of(code) {
            Ok(Some(loc)) => self.read_at(code, loc),
            Ok(None) => Lookup::Missing,
            Err(_) => Lookup::Unavailable,
        }
    }
}

/// Bytes of a record `lookup_resident` checks: most records are shorter.
const RECORD_PEEK: usize = 256;

/// Figures for metrics and `shortd check`.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub links: u64,
    pub keys: u64,
    pub segments: u64,
    pub segment_bytes: u64,
}

pub struct Store {
    shared: Arc<Shared>,
    tx: Option<Sender<(Command, Option<Pump>)>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Dropped to stop the scrub thread.
    scrub_stop: Mutex<Option<Sender<()>>>,
}

/// An opaque position in the log for paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub Loc);

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{:x}.{:x}", self.0.seg, self.0.off)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (s, o) = text.split_once('.')?;
        if s.is_empty() || o.is_empty() || s.len() > 8 || o.len() > 8 {
            return None;
        }
        Some(Cursor(Loc { seg: u32::from_str_radix(s, 16).ok()?, off: u32::from_str_radix(o, 16).ok()? }))
    }
}

impl Store {
    /// Opens the store. On a read-only file system it still opens, serving
    /// reads and refusing writes (503) with the reason.
    pub fn open(mut opts: StoreOptions) -> Result<Store, OpenError> {
        let recovered = match recovery::recover(&opts) {
            Err(OpenError::ReadOnly(dir)) if !opts.read_only => {
                tracing::warn!(dir = %dir.display(), "data directory is read-only: serving redirects, refusing writes");
                opts.read_only = true;
                let r = recovery::recover(&opts)?;
                *r.shared.poisoned.write() = Some(format!("data directory {} is on a read-only file system", dir.display()));
                r
            }
            other => other?,
        };
        let shared = recovered.shared.clone();
        if opts.read_only {
            return Ok(Store { shared, tx: None, writer: Mutex::new(None), scrub_stop: Mutex::new(None) });
        }
        let (tx, rx) = crossbeam_channel::bounded(opts.queue);
        let (scrub_rate, scrub_interval) = (opts.scrub_rate, opts.scrub_interval);
        let writer = Writer::new(opts, recovered);
        // After the writer is made: it publishes where the data ends, which
        // the scrub must not read past.
        let scrub_stop = (scrub_rate > 0).then(|| {
            let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
            let (shared, rate, every) = (shared.clone(), scrub_rate, scrub_interval);
            std::thread::Builder::new().name("shortd-scrub".into()).spawn(move || scrub_loop(&shared, rate, every, &stopped)).map(|_| stop)
        });
        let scrub_stop = scrub_stop.transpose().map_err(|e| OpenError::Invalid(format!("cannot start the scrub thread: {e}")))?;
        let handle = std::thread::Builder::new()
            .name("shortd-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { shared, tx: Some(tx), writer: Mutex::new(Some(handle)), scrub_stop: Mutex::new(scrub_stop) })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// True while a damaged index table is being rebuilt from the log.
    pub fn index_rebuilding(&self) -> bool {
        self.shared.index_damaged.load(Ordering::Relaxed)
    }

    pub fn lookup(&self, code: &str) -> Lookup {
        self.shared.lookup(code)
    }

    pub fn lookup_resident(&self, code: &str) -> bool {
        self.shared.lookup_resident(code)
    }

    /// Damage found while serving, by file.
    pub fn damage(&self) -> BTreeMap<PathBuf, String> {
        self.shared.damage.lock().clone()
    }

    /// Why the store refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.read().clone()
    }

    fn send(&self, cmd: Command) -> Result<(), WriteError> {
        let tx = self.tx.as_ref().ok_or_else(|| WriteError::Unavailable(self.poisoned().unwrap_or_else(|| "opened read-only".into())))?;
        // Never block: the caller is a worker thread that also serves redirects.
        let via = PUMP.with(|p| p.borrow().clone());
        tx.try_send((cmd, via)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => WriteError::Unavailable("the writer's queue is full; retry shortly".into()),
            crossbeam_channel::TrySendError::Disconnected(_) => WriteError::Unavailable("the writer has stopped".into()),
        })
    }

    pub async fn create(&self, new: NewLink) -> Result<Created, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Create { new, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// For bulk loaders outside a runtime: queues the create and returns a
    /// receiver, so that many can be in flight for group commit.
    pub fn create_queued(&self, new: NewLink) -> Result<tokio::sync::oneshot::Receiver<Result<Created, WriteError>>, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Create { new, reply })?;
        Ok(rx)
    }

    /// For bulk loaders: queues links to be written in one batch; the
    /// answer holds one result per link, in order.
    /// `expected` is about how many links the whole load brings.
    pub fn import_queued(
        &self,
        batch: ImportBatch,
        expected: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Result<(), WriteError>>>, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Import { batch, expected, reply })?;
        Ok(rx)
    }

    /// The index's hash of `key`, for `ImportEntry::Record`.
    pub fn key_hash(&self, key: &str) -> u64 {
        self.shared.index.hash(key)
    }

    pub async fn update(&self, code: &str, patch: Patch) -> Result<Link, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Update { code: code.into(), patch, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn delete(&self, code: &str) -> Result<(), WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Delete { code: code.into(), reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies a change made on another node (see `ApplyMode`); true if it
    /// was written, false if what is here is as new or newer.
    pub async fn apply(&self, change: Change, mode: ApplyMode) -> Result<bool, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Apply { change, mode, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    pub fn stored(&self, code: &str) -> Option<Stored> {
        self.shared.stored(code)
    }

    /// Like `page`, but every key's newest record, tombstones included,
    /// for which `want` holds: what a peer streams to another. A page ends
    /// after `limit` matches or `max_scan` records looked at, whichever
    /// comes first, so one call never walks a whole large log.
    pub fn records(
        &self,
        cursor: Option<Cursor>,
        limit: usize,
        max_scan: usize,
        want: impl Fn(&str) -> bool,
    ) -> (Vec<Stored>, Option<Cursor>) {
        let mut out = Vec::new();
        let next = self.walk_newest(cursor, max_scan, |key, rec| {
            if want(key) {
                out.extend(self.shared.stored_from(rec));
            }
            out.len() == limit
        });
        (out, next)
    }

    /// Walks the log from `cursor` in order and calls `visit` with every
    /// put or delete that is still its key's newest record, until `visit`
    /// says stop (the cursor then points past that record), `max_scan`
    /// records have been looked at (the cursor points at the next one), or
    /// the log ends (`None`).
    fn walk_newest(
        &self,
        cursor: Option<Cursor>,
        max_scan: usize,
        mut visit: impl FnMut(&str, &record::Record<'_>) -> bool,
    ) -> Option<Cursor> {
        let segments = self.shared.segments.all();
        let start = cursor.map_or(Loc { seg: 0, off: 0 }, |c| c.0);
        let mut scanned = 0usize;
        for seg in segments.iter().filter(|s| s.number >= start.seg) {
            let mut at =
                if seg.number == start.seg { (start.off as usize).max(segment::SEGMENT_HEADER_LEN) } else { segment::SEGMENT_HEADER_LEN };
            while let Ok((rec, len)) = record::decode(seg.bytes(), at) {
                let here = Loc { seg: seg.number, off: at as u32 };
                at += record::padded(len);
                scanned += 1;
                if scanned > max_scan {
                    return Some(Cursor(here));
                }
                let Some(key) = rec.body.key() else { continue };
                let key = std::str::from_utf8(key).unwrap_or_default();
                if self.shared.loc_of(key).ok().flatten() == Some(here) && visit(key, &rec) {
                    return Some(Cursor(Loc { seg: seg.number, off: at as u32 }));
                }
            }
        }
        None
    }

    /// Adds clicks counted elsewhere (the click aggregator).
    pub fn add_clicks(&self, code: &str, delta: u64) {
        self.shared.click_entry(code).fetch_add(delta, Ordering::Relaxed);
        self.shared.dirty_clicks.lock().insert(code.into());
    }

    /// Counts one click on a link with a click limit, unless the limit is
    /// reached; exact however many threads race.
    pub fn try_click_limited(&self, code: &str, max_clicks: u64) -> bool {
        let counted = {
            let entry = self.shared.click_entry(code);
            entry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_clicks).then_some(n + 1)).is_ok()
        };
        if counted {
            self.shared.dirty_clicks.lock().insert(code.into());
        }
        counted
    }

    pub fn clicks(&self, code: &str) -> u64 {
        self.shared.clicks_of(code)
    }

    /// Hands changed click totals to the writer to be logged.
    pub fn persist_clicks(&self) {
        // Drained, not taken: the set keeps its room for the next second's
        // codes instead of growing again from nothing.
        let mut dirty = self.shared.dirty_clicks.lock();
        if dirty.is_empty() {
            return;
        }
        let taken = dirty.len();
        let mut totals: Vec<(CompactString, u64)> = Vec::with_capacity(taken);
        totals.extend(dirty.drain().filter_map(|k| {
            let n = self.shared.clicks.get(k.as_str())?.load(Ordering::Relaxed);
            Some((k, n))
        }));
        // Room for about this second's codes stays; a past burst's goes.
        dirty.shrink_to(2 * taken);
        drop(dirty);
        let keys: Vec<CompactString> = totals.iter().map(|(k, _)| k.clone()).collect();
        if let Err(e) = self.send(Command::Clicks(totals)) {
            // Still dirty: the next round logs them.
            tracing::warn!(error = %e, "click totals not logged this round");
            self.shared.dirty_clicks.lock().extend(keys);
        }
    }

    pub fn rollups(&self) -> &Rollups {
        &self.shared.rollups
    }

    /// Hands changed rollups to the writer to be logged; `current` is the
    /// hour now, the first one not yet trimmed to its top values.
    pub fn persist_rollups(&self, current: u32) {
        let dirty = self.shared.rollups.take_dirty(current);
        if dirty.is_empty() {
            return;
        }
        let keys: Vec<(CompactString, u32)> = dirty.iter().map(|(c, h, _)| (c.clone(), *h)).collect();
        if let Err(e) = self.send(Command::Rollups(dirty)) {
            tracing::warn!(error = %e, "rollups not logged this round");
            self.shared.rollups.mark_dirty(keys);
        }
    }

    /// Waits until everything sent so far is written and synced.
    pub async fn sync(&self) -> Result<(), WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Sync { reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Makes `into` (a directory not there yet) a copy of this store as of
    /// every write answered so far, click totals included. Opening it
    /// gives this store's state at that point. It takes a sync, a copy of
    /// the active segment and a hard link per other file; every file
    /// linked is immutable, so `into` stays as it is while this store goes
    /// on (and compacts).
    pub async fn checkpoint(&self, into: PathBuf) -> Result<(), WriteError> {
        self.persist_clicks();
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Checkpoint { into, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Up to `limit` live links from `cursor` on, in log order, and the
    /// cursor of the next page. A link changed while paging may show up
    /// twice (at its new place too); none is skipped.
    pub fn page(&self, cursor: Option<Cursor>, limit: usize) -> (Vec<Link>, Option<Cursor>) {
        let mut out = Vec::new();
        let next = self.walk_newest(cursor, usize::MAX, |_, rec| {
            if let Body::Put(p) = &rec.body {
                out.push(self.shared.link_from(p));
            }
            out.len() == limit
        });
        (out, next)
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            links: self.shared.live_links.load(Ordering::Relaxed),
            keys: self.shared.index.len(),
            segments: self.shared.segments.len() as u64,
            segment_bytes: self.shared.segments.bytes(),
        }
    }

    /// Persists click totals, writes a final snapshot and stops the writer.
    pub fn close(&self) {
        self.scrub_stop.lock().take();
        self.persist_clicks();
        if let Some(tx) = &self.tx {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if tx.send((Command::Shutdown { reply }, None)).is_ok() {
                let _ = rx.blocking_recv();
            }
        }
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

/// Where the writer sends the answers for one thread's commands: a task on
/// that thread (`pump_replies`) hands them out, so that a batch wakes the
/// thread once instead of once per answer (each wake from another thread
/// is a syscall).
type Pump = tokio::sync::mpsc::UnboundedSender<Delivery>;

thread_local! {
    static PUMP: std::cell::RefCell<Option<Pump>> = const { std::cell::RefCell::new(None) };
}

/// Hands out the writer's answers to this thread's commands, for as long as
/// it runs; spawn it on each worker thread's `LocalSet`. Commands sent from
/// threads without one are answered by the writer itself.
pub async fn pump_replies() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    PUMP.with(|p| *p.borrow_mut() = Some(tx));
    while let Some(delivery) = rx.recv().await {
        delivery.deliver();
    }
}

/// Verifies every segment and snapshot, pass after pass, until `stop` is
/// dropped. Damage is logged, counted and kept for `/readyz`, once per file.
fn scrub_loop(shared: &Shared, rate: u64, every: Duration, stop: &crossbeam_channel::Receiver<()>) {
    let wait = |d: Duration| !matches!(stop.recv_timeout(d), Err(crossbeam_channel::RecvTimeoutError::Disconnected));
    loop {
        let mut pace = scrub::Pace::new(rate);
        let segments = shared.segments.all();
        let mut found = Vec::new();
        for seg in segments {
            let written = shared.written();
            let end = match seg.number.cmp(&written.seg) {
                std::cmp::Ordering::Less => seg.len(),
                std::cmp::Ordering::Equal => written.off as usize,
                std::cmp::Ordering::Greater => continue,
            };
            let (damage, finished) = scrub::verify_segment(&seg, end, &mut pace, wait);
            crate::metrics::scrubbed(end as u64);
            found.extend(damage.into_iter().map(|d| (seg.path.clone(), "segment", d)));
            if !finished {
                return;
            }
        }
        for path in snapshot::list(&shared.dir).unwrap_or_default() {
            found.extend(scrub::verify_snapshot(&path, &mut pace).map(|d| (path, "snapshot", d)));
        }
        if let Err(d) = shared.index.table().verify() {
            shared.table_damaged(d);
        }
        for (file, kind, d) in found {
            if shared.damage.lock().contains_key(&file) {
                continue;
            }
            tracing::error!(file = %file.display(), offset = d.offset, reason = %d.reason, "scrub found damage; run `shortd check` (the link there cannot be read)");
            crate::metrics::scrub_damage(kind);
            shared.report_damage(&file, format!("byte {}: {} (found by scrub)", d.offset, d.reason));
        }
        crate::metrics::scrub_pass_done(crate::clock::now_ms() as f64 / 1000.0);
        if !wait(every) {
            return;
        }
    }
}

fn stopped() -> WriteError {
    WriteError::Unavailable("the writer has stopped".into())
}

/// Makes `into` a copy of the store directory `from` (a live store's, or a
/// checkpoint made by `Store::checkpoint`), which stays as it is: the
/// newest segment, which a store writes to, is copied; every other file is
/// immutable once in place (sealed segments, index tables, snapshots, the
/// code key), so it is hard-linked. Temporary files and the lock are left
/// out; whatever was in `into` goes.
pub fn copy_checkpoint(from: &std::path::Path, into: &std::path::Path) -> std::io::Result<()> {
    use crate::journal::file::sync_dir;
    use crate::journal::segment::segment_number;
    match std::fs::remove_dir_all(into) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(into)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        match entry.file_name().into_string() {
            Ok(n) if !n.ends_with(".tmp") && n != "lock" && entry.file_type()?.is_file() => names.push(n),
            _ => {}
        }
    }
    let newest = names.iter().filter_map(|n| segment_number(n)).max();
    for name in &names {
        let segment = segment_number(name);
        if segment.is_some() && segment == newest {
            std::fs::copy(from.join(name), into.join(name))?;
            std::fs::File::open(into.join(name))?.sync_data()?;
        } else {
            std::fs::hard_link(from.join(name), into.join(name))?;
        }
    }
    sync_dir(into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(store: &Store, url: &str) -> Link {
        store.create_queued(NewLink::to(url)).unwrap().blocking_recv().unwrap().unwrap().link
    }

    #[test]
    fn a_location_that_leads_to_another_keys_record_is_a_miss_not_that_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let a = create(&store, "https://a.example/");
        let b = create(&store, "https://b.example/");
        let b_loc = store.shared.loc_of(&b.code).unwrap().unwrap();
        // What a fuzzy snapshot could leave after a power loss: a's entry
        // pointing at offsets that b's record now occupies.
        store.shared.index.set(a.code.clone(), b_loc, false);
        assert!(matches!(store.lookup(&a.code), Lookup::Missing));
        assert!(store.stored(&a.code).is_none());
        assert!(matches!(store.lookup(&b.code), Lookup::Live(l) if l.url == "https://b.example/"));
        store.close();
    }
}
