//! The read side: state the readers and the writer thread share, and the
//! reads that run on the caller's thread against it (a lookup through the
//! index to the memory-mapped record, click totals, whether a lookup would
//! wait for the disk). Every read checks that the record it lands on is
//! the key's own.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use parking_lot::Mutex;

use super::index;
use super::types::{Idem, Link, Loc, Lookup, Stored, Version};
use crate::analytics::rollup::Rollups;
use crate::code::CodeKey;
use crate::hash::{Hasher, Map};
use crate::journal::record::{self, Body};
use crate::journal::segment::{Segment, Segments};
use crate::journal::{segment, table, Poison};

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

    pub(super) fn stored_from(&self, rec: &record::Record<'_>) -> Option<Stored> {
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
