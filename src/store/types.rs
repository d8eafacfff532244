//! The store's vocabulary: a link, its versions and lookups, what a client
//! asks (a new link, a patch, a bulk load's batch), what a write answers,
//! and the options a store opens with. Plain data, shared by the read
//! side, the writer, the cluster and the HTTP handlers.

use std::path::PathBuf;
use std::time::Duration;

use compact_str::CompactString;

use crate::journal::Durability;

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

/// Figures for metrics and `shortd check`.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub links: u64,
    pub keys: u64,
    pub segments: u64,
    pub segment_bytes: u64,
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
