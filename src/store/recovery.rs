//! Start-up of the store: the code key, the newest valid snapshot into the
//! index, then the log after it replayed into the index.
//!
//! The log's own rules (the directory lock, torn tails, damage and
//! `--repair`) are the journal's (`journal::open`); what a record means for
//! the index is decided here. A snapshot that fails its checksum is
//! reported and the next older one (or a full replay) is used instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use parking_lot::{Mutex, RwLock};

use super::index::Index;
use super::read::Shared;
use super::types::{Idem, Loc, OpenError, StoreOptions, ALIAS_ID};
use crate::analytics::rollup::{Hour, Rollups};
use crate::code::CodeKey;
use crate::journal::file;
use crate::journal::open::{self, io_err, ReplayRules};
use crate::journal::record::{self, Body, Record};
use crate::journal::segment::{Segments, SEGMENT_HEADER_LEN};
use crate::journal::snapshot::{self, Entry, Snapshot};
use crate::journal::table::{self, Table};

pub const KEY_FILE: &str = "code.key";

/// What the writer needs to carry on where the log ends.
pub struct Recovered {
    pub shared: Arc<Shared>,
    pub active: u32,
    pub write_off: u64,
    pub next_id: u64,
    pub next_lsn: u64,
    /// Bytes of records that the index points at, per segment.
    pub live: HashMap<u32, u64>,
    /// Records replayed after the snapshot.
    pub replayed: u64,
    _lock: Option<File>,
}

impl Recovered {
    pub fn take_lock(&mut self) -> Option<File> {
        self._lock.take()
    }
}

pub fn recover(opts: &StoreOptions) -> Result<Recovered, OpenError> {
    let dir = &opts.dir;
    let open::Opened { lock, segments, numbers } = open::open_segments(dir, opts.read_only)?;
    let (key, seed) = load_or_create_key(dir, opts.read_only)?;
    if !opts.read_only {
        remove_table_leftovers(dir);
    }
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        key,
        index: Index::new(seed),
        clicks: Default::default(),
        dirty_clicks: Mutex::default(),
        idem: Default::default(),
        segments,
        poisoned: Arc::new(RwLock::new(None)),
        live_links: AtomicU64::new(0),
        damage: Mutex::new(BTreeMap::new()),
        written: Arc::new(AtomicU64::new(0)),
        rollups: Rollups::new(opts.stats_top),
        index_damaged: AtomicBool::new(false),
    });

    let mut state = Replay { shared: &shared, live: HashMap::new(), next_id: 0, next_lsn: 1, replayed: 0, live_links: 0 };
    let mut start = Loc { seg: 0, off: 0 };
    for path in snapshot::list(dir).map_err(io_err(dir))? {
        match Snapshot::read(&path) {
            Ok(snap) => match state.load_snapshot(&snap, &shared.segments, opts.repair, dir) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "loaded snapshot");
                    start = Loc { seg: snap.meta.replay_seg, off: snap.meta.replay_off as u32 };
                    break;
                }
                Err(e) if opts.repair || matches!(e, OpenError::Table(_)) => {
                    tracing::warn!(file = %path.display(), error = %e, "snapshot unusable; trying an older one");
                    state.reset();
                }
                Err(e) => return Err(e),
            },
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "snapshot fails its check; trying an older one"),
        }
    }
    if start.seg == 0 {
        if let Some(&first) = numbers.first() {
            if first != 1 && !opts.repair {
                return Err(OpenError::Invalid(format!(
                    "no usable snapshot and the log starts at segment {first}: earlier segments are gone; start with --repair to load what is left"
                )));
            }
        }
    }

    let newest = numbers.last().copied();
    let mut write_off = SEGMENT_HEADER_LEN as u64;
    let rules = ReplayRules { repair: opts.repair, read_only: opts.read_only };
    for seg in shared.segments.all().into_iter().filter(|s| s.number >= start.seg) {
        let from = if seg.number == start.seg { (start.off as usize).max(SEGMENT_HEADER_LEN) } else { SEGMENT_HEADER_LEN };
        let end = open::replay_segment(&seg, from, Some(seg.number) == newest, rules, |rec, loc, len| state.apply(rec, loc, len))?;
        if Some(seg.number) == newest {
            write_off = end as u64;
        }
    }
    shared.live_links.store(state.live_links, Ordering::Relaxed);
    let (next_id, next_lsn, live, replayed) = (state.next_id, state.next_lsn, state.live, state.replayed);
    Ok(Recovered { active: newest.unwrap_or(0), write_off, next_id, next_lsn, live, replayed, shared, _lock: lock })
}

struct Replay<'a> {
    shared: &'a Shared,
    live: HashMap<u32, u64>,
    next_id: u64,
    next_lsn: u64,
    replayed: u64,
    live_links: u64,
}

impl Replay<'_> {
    fn reset(&mut self) {
        self.shared.index.replace_all(Default::default());
        self.shared.clicks.clear();
        self.shared.idem.clear();
        self.shared.rollups.clear();
        self.live.clear();
        self.next_id = 0;
        self.next_lsn = 1;
        self.live_links = 0;
    }

    fn load_snapshot(&mut self, snap: &Snapshot, segs: &Segments, repair: bool, dir: &Path) -> Result<(), OpenError> {
        let mut missing = HashSet::new();
        let mut locs = Vec::new();
        if snap.version >= 4 {
            let path = table::table_path(dir, snap.meta.next_lsn);
            let t = Table::open(&path, self.shared.index.seed()).map_err(|e| OpenError::Table(format!("{}: {e}", path.display())))?;
            tracing::info!(file = %path.display(), keys = t.len(), "mapped index table");
            self.shared.index.install_loaded(t);
        }
        // The image is fuzzy: it may hold locations the writer reached while
        // it was being written. Those lie at or past the replay position, in
        // records that may not have been synced (`never`, `interval`) and so
        // may be gone after a power loss, their offsets reused by later
        // records. Replay finds every one of them that survived.
        let replay_from = Loc { seg: snap.meta.replay_seg, off: snap.meta.replay_off as u32 };
        snap.for_each(|e| match e {
            Entry::Loc { seg, off, .. } if (Loc { seg, off }) >= replay_from => {}
            Entry::Loc { key, seg, off, live } => {
                if !segs.contains(seg) {
                    missing.insert(seg);
                    return;
                }
                self.live_links += live as u64;
                locs.push((key_of(key), Loc { seg, off }));
            }
            Entry::Clicks { key, total } => {
                self.shared.clicks.insert(key_of(key), AtomicU64::new(total));
            }
            Entry::Idem { key, body_hash, at_ms, code } => {
                let idem = Idem { code: key_of(code), body_hash, at_ms };
                self.shared.idem.insert(key_of(key), idem);
            }
            Entry::Live { seg, bytes } => {
                // Records the index points at lie in every segment with
                // live bytes: one that is gone takes links with it.
                if bytes > 0 && !segs.contains(seg) {
                    missing.insert(seg);
                }
                self.live.insert(seg, bytes);
            }
            Entry::Counts { live_links } => self.live_links = live_links,
            Entry::Rollup(bytes) => match record::decode_rollup(bytes) {
                Ok((r, _)) => self.shared.rollups.replace(key_of(r.key), r.hour, Hour::from_record(&r)),
                Err(e) => tracing::warn!(error = %e, "snapshot holds an unreadable rollup; skipped"),
            },
        })
        .map_err(|e| OpenError::Invalid(format!("snapshot: {e}")))?;
        // Older snapshots hold every location: they load into memory, and
        // the first merge writes them into a table.
        self.shared.index.load(&mut locs);
        if !missing.is_empty() {
            let msg = format!("snapshot points into missing segments {missing:?}");
            if repair {
                tracing::warn!("{msg}; dropping those links (--repair)");
                if snap.version >= 4 {
                    // The table cannot drop entries: rebuild from what is left.
                    return Err(OpenError::Table(format!("{msg}; rebuilding the index from the log")));
                }
                self.shared.index.retain_recent(|l| !missing.contains(&l.seg));
            } else {
                return Err(OpenError::Invalid(format!("{msg}; start with --repair to drop those links")));
            }
        }
        self.next_id = snap.meta.next_id;
        self.next_lsn = snap.meta.next_lsn;
        Ok(())
    }

    fn apply(&mut self, rec: &Record<'_>, loc: Loc, len: u64) {
        self.replayed += 1;
        self.next_lsn = self.next_lsn.max(rec.lsn.saturating_add(1));
        let key = match &rec.body {
            Body::Put(p) => {
                if p.id != ALIAS_ID {
                    self.next_id = self.next_id.max(p.id.saturating_add(1));
                }
                p.key
            }
            Body::Delete { key } => key,
            Body::Clicks(entries) => {
                for (key, total) in entries {
                    self.shared.click_entry(&key_of(key)).fetch_max(*total, Ordering::Relaxed);
                }
                return;
            }
            Body::Idempotency { key, body_hash, code } => {
                let idem = Idem { code: key_of(code), body_hash: *body_hash, at_ms: rec.time_ms };
                self.shared.idem.insert(key_of(key), idem);
                return;
            }
            // A Raft journal's record in a store's segment: not the store's
            // to read; sync marks never reach here (`replay_segment`).
            Body::Raft { .. } | Body::Synced { .. } => return,
            Body::Rollups(rollups) => {
                for r in rollups {
                    self.shared.rollups.replace(key_of(r.key), r.hour, Hour::from_record(r));
                }
                return;
            }
        };
        let is_put = matches!(rec.body, Body::Put(_));
        let key = key_of(key);
        let old = self.shared.loc_of(&key).ok().flatten();
        if old.is_some_and(|o| o >= loc) {
            return;
        }
        self.shared.index.set(key, loc, old.is_none());
        *self.live.entry(loc.seg).or_default() += len;
        let old_kind = old.and_then(|old| {
            let (old_len, kind) = self.shared.segments.record_len_at(old)?;
            let l = self.live.entry(old.seg).or_default();
            *l = l.saturating_sub(old_len);
            Some(kind)
        });
        let was_live = old_kind == Some(record::KIND_PUT);
        match (was_live, is_put) {
            (false, true) => self.live_links += 1,
            (true, false) => self.live_links = self.live_links.saturating_sub(1),
            _ => {}
        }
    }
}

/// A key from the log as a string; keys are written from `&str`, so the
/// lossy path only runs on damage that a checksum missed.
fn key_of(bytes: &[u8]) -> CompactString {
    match std::str::from_utf8(bytes) {
        Ok(s) => CompactString::new(s),
        Err(_) => CompactString::from_utf8_lossy(bytes),
    }
}

/// Removes index tables a merge left half-written (a crash mid-merge).
fn remove_table_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(|n| n.starts_with("index-") && n.ends_with(".idx.tmp")) {
            tracing::warn!(file = %e.path().display(), "removing an index table left by an interrupted merge");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The permutation key: 48 random bytes followed by their xxh3 checksum;
/// and the seed of the index tables' hash, derived from it.
fn load_or_create_key(dir: &Path, read_only: bool) -> Result<(CodeKey, u64), OpenError> {
    let path = dir.join(KEY_FILE);
    let mut bytes = [0u8; CodeKey::BYTES + 8];
    match File::open(&path) {
        Ok(mut f) => {
            let n = f.read(&mut bytes).map_err(io_err(&path))?;
            let sum = u64::from_le_bytes(bytes[CodeKey::BYTES..].try_into().expect("8 bytes"));
            if n != bytes.len() || sum != xxhash_rust::xxh3::xxh3_64(&bytes[..CodeKey::BYTES]) {
                return Err(OpenError::Invalid(format!("{} is damaged (checksum mismatch); restore it from a backup", path.display())));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !read_only => {
            getrandom::getrandom(&mut bytes[..CodeKey::BYTES])
                .map_err(|e| OpenError::Invalid(format!("no randomness for the code key: {e}")))?;
            let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..CodeKey::BYTES]);
            bytes[CodeKey::BYTES..].copy_from_slice(&sum.to_le_bytes());
            // The key makes codes unguessable: readable by this user only.
            file::write_atomic_private(&path, &[&bytes]).map_err(io_err(&path))?;
        }
        Err(e) => return Err(OpenError::Io { path, source: e }),
    }
    let mut k = [0u8; CodeKey::BYTES];
    k.copy_from_slice(&bytes[..CodeKey::BYTES]);
    let seed = xxhash_rust::xxh3::xxh3_64_with_seed(&k, 0x1d3e_7ab1_e5ee_d000);
    Ok((CodeKey::from_bytes(k), seed))
}
