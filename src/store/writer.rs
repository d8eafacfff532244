//! The single writer: the link rules, batches, snapshots, compaction.
//!
//! All changes arrive over one channel. The writer takes every command that
//! is waiting (up to `MAX_BATCH`), checks each against the current state plus
//! the changes earlier in the same batch (alias claims, generated codes,
//! patch merges, versions, idempotency), hands the records to the journal's
//! `Log` (one write and at most one sync per batch), applies the batch to
//! the index only once the log has it, and answers. When the log fails a
//! batch, every command of it fails and nothing of it reaches the index.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::index::Frozen;
use super::recovery::Recovered;
use super::{
    ApplyMode, Change, Created, Idem, ImportBatch, ImportEntry, Imported, Link, Loc, Lookup, NewLink, Patch, Pump, Shared, StoreOptions,
    Version, WriteError, ALIAS_ID, IDEMPOTENCY_WINDOW_MS,
};
use crate::analytics::rollup::{Hour, Packed};
use crate::code::CODE_SPACE;
use crate::hash::Hasher;
use crate::journal::record::{self, Body, Put, Record};
use crate::journal::scan::{Found, Scan};
use crate::journal::segment::{Segment, SEGMENT_HEADER_LEN};
use crate::journal::snapshot::{SnapshotMeta, SnapshotWriter};
use crate::journal::table::{self, Builder, Slot, Table};
use crate::journal::{Log, LogHandles, LogOptions};
use crate::metrics as m;

const MAX_BATCH: usize = 1024;
const CLICKS_PER_RECORD: usize = 256;
const ROLLUPS_PER_RECORD: usize = 64;
const COMPACT_CHUNK: usize = 2048;
const TICK: Duration = Duration::from_millis(100);
const IDEM_PRUNE_EVERY: Duration = Duration::from_secs(60);

pub enum Command {
    Create {
        new: NewLink,
        reply: oneshot::Sender<Result<Created, WriteError>>,
    },
    Update {
        code: CompactString,
        patch: Patch,
        reply: oneshot::Sender<Result<Link, WriteError>>,
    },
    Delete {
        code: CompactString,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Apply {
        change: Change,
        mode: ApplyMode,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
    /// A bulk load's links, answered together (`shortd import`).
    /// `expected`: about how many links the whole load brings.
    Import {
        batch: ImportBatch,
        expected: u64,
        reply: oneshot::Sender<Vec<Result<(), WriteError>>>,
    },
    Clicks(Vec<(CompactString, u64)>),
    Rollups(Vec<(CompactString, u32, Packed)>),
    Sync {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Make `into` a copy of the store as of now (`Store::checkpoint`).
    Checkpoint {
        into: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

enum Reply {
    Created(oneshot::Sender<Result<Created, WriteError>>, Result<Created, WriteError>),
    Updated(oneshot::Sender<Result<Link, WriteError>>, Result<Link, WriteError>),
    Deleted(oneshot::Sender<Result<(), WriteError>>, Result<(), WriteError>),
    Applied(oneshot::Sender<Result<bool, WriteError>>, Result<bool, WriteError>),
    Imported(oneshot::Sender<Vec<Result<(), WriteError>>>, Vec<Result<(), WriteError>>),
}

impl Reply {
    fn send(self, failure: Option<&WriteError>) {
        match (self, failure) {
            (Reply::Created(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Updated(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Deleted(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Applied(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Imported(tx, r), None) => drop(tx.send(r)),
            (Reply::Imported(tx, r), Some(e)) => drop(tx.send(r.iter().map(|_| Err(e.clone())).collect())),
        }
    }
}

/// Answers of one batch for one thread, handed out there (`pump_replies`).
pub struct Delivery {
    replies: Vec<Reply>,
    failure: Option<WriteError>,
}

impl Delivery {
    pub fn deliver(self) {
        for reply in self.replies {
            reply.send(self.failure.as_ref());
        }
    }
}

/// A change to shared state that waits until its records are durable.
enum Effect {
    SetLoc {
        key: CompactString,
        loc: Loc,
        len: u64,
        /// The writer found no record of `key` anywhere (a create), so
        /// there is no older location to look up and discount.
        new_key: bool,
    },
    /// An imported link's click total (the next merge writes it).
    Clicks {
        key: CompactString,
        total: u64,
    },
    Hours {
        key: CompactString,
        hours: Vec<(u32, Hour)>,
    },
    Idem {
        key: CompactString,
        idem: Idem,
    },
    LiveLinks(i64),
}

/// A segment being copied out, a chunk per writer round.
struct Compaction {
    seg: Arc<Segment>,
    at: usize,
    /// The first damage met, if any.
    damage: Option<String>,
}

struct SnapshotJob {
    meta: SnapshotMeta,
    started: Instant,
    handle: JoinHandle<io::Result<(std::path::PathBuf, Table)>>,
}

pub struct Writer {
    opts: StoreOptions,
    shared: Arc<Shared>,
    log: Log,
    next_id: u64,
    /// Bytes of records that the index points at, per segment.
    live: HashMap<u32, u64>,
    since_snapshot: u64,
    last_snapshot: Instant,
    snapshot: Option<SnapshotJob>,
    compacting: Option<Compaction>,
    /// Damaged segments that compaction could not empty; kept until restart.
    held: HashSet<u32>,
    drained: Vec<(u32, u64)>,
    last_idem_prune: Instant,
    // Changes earlier in the current batch, seen by later commands in it.
    pending: HashMap<CompactString, Option<Link>, Hasher>,
    pending_ver: HashMap<CompactString, Version, Hasher>,
    pending_idem: HashMap<CompactString, (CompactString, u64), Hasher>,
    /// Click totals of the import batch under way, logged after its links.
    import_clicks: Vec<(CompactString, u64)>,
    /// Links of the import batch under way.
    import_links: u64,
    /// The bulk table took entries in the batch under way.
    bulk_touched: bool,
    /// The next index table, filled as a bulk load goes (the current
    /// table's slots first), so that no merge has to follow it.
    bulk: Option<Builder>,
    /// Set by shutdown: no work that only a running server needs.
    stopping: bool,
    effects: Vec<Effect>,
    /// Codes whose click totals this batch logs; pending again if it fails.
    batch_clicks: Vec<CompactString>,
    replies: Vec<Reply>,
    /// Where each of `replies` goes: the pump of the thread that asked, if any.
    reply_via: Vec<Option<Pump>>,
    sync_replies: Vec<oneshot::Sender<Result<(), WriteError>>>,
    _lock: Option<File>,
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

impl Writer {
    pub fn new(opts: StoreOptions, mut rec: Recovered) -> Writer {
        let lock = rec.take_lock();
        let log = Log::open(
            LogOptions { dir: opts.dir.clone(), durability: opts.durability, segment_bytes: opts.segment_bytes },
            LogHandles { segments: rec.shared.segments.clone(), poison: rec.shared.poisoned.clone(), written: rec.shared.written.clone() },
            rec.active,
            rec.write_off,
            rec.next_lsn,
        );
        Writer {
            shared: rec.shared.clone(),
            log,
            next_id: rec.next_id,
            live: std::mem::take(&mut rec.live),
            since_snapshot: rec.replayed,
            last_snapshot: Instant::now(),
            snapshot: None,
            compacting: None,
            held: HashSet::new(),
            drained: Vec::new(),
            last_idem_prune: Instant::now(),
            pending: HashMap::default(),
            pending_ver: HashMap::default(),
            pending_idem: HashMap::default(),
            import_clicks: Vec::new(),
            import_links: 0,
            bulk_touched: false,
            bulk: None,
            stopping: false,
            effects: Vec::new(),
            batch_clicks: Vec::new(),
            replies: Vec::new(),
            reply_via: Vec::new(),
            sync_replies: Vec::new(),
            _lock: lock,
            opts,
        }
    }

    fn refusal(&self) -> Option<WriteError> {
        self.log.refusal().map(WriteError::from)
    }

    pub fn run(mut self, rx: Receiver<(Command, Option<Pump>)>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let busy = self.compacting.is_some();
            let wait = self.log.sync_due_in(self.opts.fsync_interval).map_or(TICK, |d| d.min(TICK));
            let first = if busy { rx.try_recv().map_err(|_| RecvTimeoutError::Timeout) } else { rx.recv_timeout(wait) };
            match first {
                Ok(cmd) => {
                    batch.push(cmd);
                    // The first command woke this thread, maybe on the core
                    // of the worker still reading the rest of its requests:
                    // let it run once, so that they join this batch and its
                    // sync rather than wait a whole sync for the next one.
                    let mut yielded = false;
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(cmd) => batch.push(cmd),
                            Err(_) if !yielded => {
                                yielded = true;
                                std::thread::yield_now();
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut shutdown = None;
            for (cmd, via) in batch.drain(..) {
                match cmd {
                    Command::Shutdown { reply } => shutdown = Some(reply),
                    cmd => {
                        self.handle(cmd);
                        self.reply_via.resize(self.replies.len(), via);
                    }
                }
            }
            self.commit(false);
            if let Some(reply) = shutdown {
                self.shutdown();
                let _ = reply.send(());
                return;
            }
            self.housekeeping();
        }
        self.shutdown();
    }

    fn state(&self, code: &str) -> Result<Lookup, WriteError> {
        match self.pending.get(code) {
            Some(Some(link)) => Ok(Lookup::Live(link.clone())),
            Some(None) => Ok(Lookup::Deleted),
            None => match self.shared.lookup(code) {
                Lookup::Unavailable => Err(index_unavailable()),
                Lookup::Missing => Ok(self.bulk_loc(code).map_or(Lookup::Missing, |loc| self.shared.read_at(code, loc))),
                found => Ok(found),
            },
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Create { new, reply } => {
                let r = self.create(new);
                self.replies.push(Reply::Created(reply, r));
            }
            Command::Update { code, patch, reply } => {
                let r = self.update(code, patch);
                self.replies.push(Reply::Updated(reply, r));
            }
            Command::Delete { code, reply } => {
                let r = self.delete(code);
                self.replies.push(Reply::Deleted(reply, r));
            }
            Command::Apply { change, mode, reply } => {
                let r = self.apply_change(change, mode);
                self.replies.push(Reply::Applied(reply, r));
            }
            Command::Import { batch, expected, reply } => {
                let results = match self.start_bulk(expected) {
                    Ok(()) => self.import_batch(batch),
                    Err(e) => batch.entries.iter().map(|_| Err(e.clone())).collect(),
                };
                self.replies.push(Reply::Imported(reply, results));
            }
            Command::Clicks(totals) => {
                let mut appended = true;
                for chunk in totals.chunks(CLICKS_PER_RECORD) {
                    let entries = chunk.iter().map(|(k, n)| (k.as_bytes(), *n)).collect();
                    let rec = Record { lsn: 0, time_ms: now_ms(), origin: 0, body: Body::Clicks(entries) };
                    if let Err(e) = self.append(rec) {
                        tracing::warn!(error = %e, "click totals not logged; they stay pending");
                        appended = false;
                        break;
                    }
                }
                let keys = totals.into_iter().map(|(k, _)| k);
                if appended {
                    self.batch_clicks.extend(keys);
                } else {
                    self.shared.dirty_clicks.lock().extend(keys);
                }
            }
            Command::Rollups(hours) => {
                for (i, chunk) in hours.chunks(ROLLUPS_PER_RECORD).enumerate() {
                    let rollups = chunk.iter().map(|(code, hour, h)| h.to_record(code, *hour)).collect();
                    let rec = Record { lsn: 0, time_ms: now_ms(), origin: 0, body: Body::Rollups(rollups) };
                    if let Err(e) = self.append(rec) {
                        tracing::warn!(error = %e, "rollups not logged; they stay pending");
                        let rest = hours[i * ROLLUPS_PER_RECORD..].iter().map(|(c, h, _)| (c.clone(), *h));
                        self.shared.rollups.mark_dirty(rest);
                        break;
                    }
                }
            }
            Command::Sync { reply } => self.sync_replies.push(reply),
            Command::Checkpoint { into, reply } => {
                self.commit(true);
                let made = match self.refusal() {
                    Some(e) => Err(e),
                    // Between two batches and after a sync. A merge still
                    // running may have renamed its table in but not yet the
                    // snapshot naming it, or the other way round: recovery
                    // then uses the snapshot before.
                    None => super::copy_checkpoint(&self.shared.dir, &into)
                        .map_err(|e| WriteError::Unavailable(format!("cannot copy the store into {}: {e}", into.display()))),
                };
                let _ = reply.send(made);
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    fn create(&mut self, new: NewLink) -> Result<Created, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        if let Some((ikey, hash)) = &new.idempotency {
            let earlier = self.pending_idem.get(ikey.as_str()).cloned().or_else(|| {
                let i = self.shared.idem.get(ikey.as_str())?;
                (i.at_ms + IDEMPOTENCY_WINDOW_MS > now_ms()).then(|| (i.code.clone(), i.body_hash))
            });
            if let Some((code, earlier_hash)) = earlier {
                if earlier_hash != *hash {
                    return Err(WriteError::IdempotencyMismatch);
                }
                return match self.state(&code)? {
                    Lookup::Live(mut link) => {
                        link.clicks = self.shared.clicks_of(&code);
                        Ok(Created { link, replayed: true })
                    }
                    Lookup::Deleted => Err(WriteError::Gone),
                    Lookup::Missing | Lookup::Unavailable => Err(WriteError::NotFound),
                };
            }
        }
        let (code, id) = match &new.alias {
            Some(alias) => {
                if !matches!(self.state(alias)?, Lookup::Missing) {
                    return Err(WriteError::Taken);
                }
                (CompactString::from(alias.as_str()), ALIAS_ID)
            }
            None => loop {
                let id = self.next_id;
                if id >= CODE_SPACE {
                    return Err(WriteError::Exhausted);
                }
                self.next_id += 1;
                let code = self.shared.key.encode(id).expect("id is inside the code space");
                let code = CompactString::from_utf8_lossy(&code);
                // A code that spells a route (`healthz`, `metrics`) could never redirect.
                if crate::code::validate_alias(&code).is_ok() && matches!(self.state(&code)?, Lookup::Missing) {
                    break (code, id);
                }
            },
        };
        let link = Link {
            code: code.clone(),
            url: new.url,
            id,
            created_ms: now_ms(),
            expires_ms: new.expires_ms,
            max_clicks: new.max_clicks,
            redirect: new.redirect,
            disabled: new.disabled,
            clicks: 0,
        };
        if let Some((ikey, _)) = &new.idempotency {
            // The link and its idempotency record must land together: make
            // room for both first, so no roll can fail between them.
            let both = record::padded(record::HEADER_LEN + 40 + code.len() + link.url.len())
                + record::padded(record::HEADER_LEN + 10 + ikey.len() + code.len());
            self.log.ensure_room(both as u64)?;
        }
        self.put(&link, Version { ms: link.created_ms, origin: self.opts.origin }, true)?;
        self.effects.push(Effect::LiveLinks(1));
        if let Some((ikey, hash)) = new.idempotency {
            let at = now_ms();
            let rec = Record {
                lsn: 0,
                time_ms: at,
                origin: 0,
                body: Body::Idempotency { key: ikey.as_bytes(), body_hash: hash, code: code.as_bytes() },
            };
            self.append(rec)?;
            let key = CompactString::from(ikey);
            self.pending_idem.insert(key.clone(), (code.clone(), hash));
            self.effects.push(Effect::Idem { key, idem: Idem { code, body_hash: hash, at_ms: at } });
        }
        Ok(Created { link, replayed: false })
    }

    /// A chunk of a bulk load: each link's code kept (taken means refused),
    /// its click total and hourly stats carried over.
    fn import_batch(&mut self, batch: ImportBatch) -> Vec<Result<(), WriteError>> {
        let ImportBatch { records, entries, links } = batch;
        let asks_memory = self.shared.index.in_memory() > 0;
        let now = now_ms();
        let mut links = links.into_iter();
        let mut results = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            // The table is far larger than the caches: ask for the slots of
            // links a few ahead now.
            if let (Some(b), Some(ImportEntry::Record { hash, .. })) = (&self.bulk, entries.get(i + 16)) {
                b.prefetch(*hash);
            }
            results.push(match *entry {
                ImportEntry::Record { at, hash, clicks } => self.import_record(&records[at as usize..], hash, clicks, asks_memory),
                ImportEntry::Link => match links.next() {
                    Some(l) => self.import_link(l, asks_memory, now),
                    None => Err(WriteError::Unavailable("an import batch with fewer links than entries".into())),
                },
            });
        }
        let n = std::mem::take(&mut self.import_links);
        self.effects.push(Effect::LiveLinks(n as i64));
        // The totals are in the table too, but the log is what a start
        // falls back on if the table is lost.
        for chunk in std::mem::take(&mut self.import_clicks).chunks(CLICKS_PER_RECORD) {
            let entries = chunk.iter().map(|(k, n)| (k.as_bytes(), *n)).collect();
            // A failed append fails the whole batch at commit.
            let _ = self.append(Record { lsn: 0, time_ms: now, origin: 0, body: Body::Clicks(entries) });
        }
        results
    }

    /// A link of a bulk load as the put record its parser encoded.
    fn import_record(&mut self, rec: &[u8], hash: u64, clicks: u64, asks_memory: bool) -> Result<(), WriteError> {
        let malformed = || WriteError::Unavailable("an import batch's record is not an encoded put".into());
        let Ok((Some((key, _)), len)) = record::peek_put(rec, 0) else { return Err(malformed()) };
        let code = std::str::from_utf8(key).map_err(|_| malformed())?;
        if self.is_imported(code, hash, asks_memory) {
            return Err(WriteError::Taken);
        }
        let (loc, size) = self.log.append_encoded(&rec[..record::padded(len)])?;
        self.since_snapshot += 1;
        self.filed_import(code, Slot { hash, loc, clicks }, size)
    }

    /// A link of a bulk load that takes the full path: a generated code, or
    /// hourly stats to carry.
    fn import_link(&mut self, l: Imported, asks_memory: bool, now: i64) -> Result<(), WriteError> {
        let Imported { new, clicks, hours } = l;
        let Some(alias) = &new.alias else {
            let code = self.create(new)?.link.code;
            self.carry(code, clicks, hours);
            return Ok(());
        };
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let hash = self.shared.index.hash(alias);
        if self.is_imported(alias, hash, asks_memory) {
            return Err(WriteError::Taken);
        }
        let body = Body::Put(Put {
            key: alias.as_bytes(),
            url: new.url.as_bytes(),
            id: ALIAS_ID,
            created_ms: now,
            expires_ms: new.expires_ms,
            max_clicks: new.max_clicks,
            redirect: new.redirect,
            flags: if new.disabled { record::FLAG_DISABLED } else { 0 },
        });
        let (loc, size) = self.append(Record { lsn: 0, time_ms: now, origin: self.opts.origin, body })?;
        self.filed_import(alias, Slot { hash, loc, clicks }, size)?;
        self.carry(CompactString::from(alias.as_str()), 0, hours);
        Ok(())
    }

    /// Whether a bulk load already has `code`, in this batch or before.
    fn is_imported(&self, code: &str, hash: u64, asks_memory: bool) -> bool {
        // The bulk table holds the current table's keys too; what is in
        // memory is asked apart.
        self.pending.contains_key(code)
            || self.bulk.as_ref().is_some_and(|b| b.find(hash, |s| self.holds_key(code, s.loc).then_some(())).is_some())
            || asks_memory && self.shared.loc_of(code).ok().flatten().is_some()
    }

    /// An imported link's record is in the log: its slot goes straight into
    /// the bulk table, not after the commit (a batch that fails drops the
    /// whole table and stops the import: see `commit`).
    fn filed_import(&mut self, code: &str, slot: Slot, size: u64) -> Result<(), WriteError> {
        self.bulk_insert(slot)?;
        *self.live.entry(slot.loc.seg).or_default() += size;
        self.import_links += 1;
        if slot.clicks > 0 {
            self.import_clicks.push((code.into(), slot.clicks));
        }
        Ok(())
    }

    /// Whether the record at `loc`, written or still in the batch, is `code`'s.
    fn holds_key(&self, code: &str, loc: Loc) -> bool {
        match self.log.buffered(loc) {
            Some(b) => record::decode(b, 0).is_ok_and(|(rec, _)| rec.body.key() == Some(code.as_bytes())),
            None => self.shared.is_key(code, loc),
        }
    }

    fn bulk_insert(&mut self, slot: Slot) -> Result<(), WriteError> {
        let mut b = self.bulk.take().ok_or_else(|| WriteError::Unavailable("the import's index table is gone".into()))?;
        if b.len() >= b.capacity() {
            // More links than the load foresaw: room for twice as many.
            let more = b.len() * 2;
            b = b.grown(&self.opts.dir, more).map_err(|e| WriteError::Unavailable(format!("cannot grow the import's index table: {e}")))?;
        }
        b.insert(slot);
        self.bulk = Some(b);
        self.bulk_touched = true;
        self.shared.index.add_keys(1);
        Ok(())
    }

    /// Makes the bulk table, with the current table's slots, if there is none.
    fn start_bulk(&mut self, expected: u64) -> Result<(), WriteError> {
        if self.bulk.is_some() {
            return Ok(());
        }
        let table = self.shared.index.table();
        let fail = |e: String| WriteError::Unavailable(format!("cannot make the index table for the import: {e}"));
        let mut b = Builder::create_in_memory(&self.opts.dir, table.len() + expected).map_err(|e| fail(e.to_string()))?;
        table.for_each(|s| b.insert(s)).map_err(|d| {
            self.shared.table_damaged(d);
            fail(d.to_string())
        })?;
        self.bulk = Some(b);
        Ok(())
    }

    fn bulk_loc(&self, code: &str) -> Option<Loc> {
        let b = self.bulk.as_ref()?;
        b.find(self.shared.index.hash(code), |s| self.holds_key(code, s.loc).then_some(s.loc))
    }

    fn carry(&mut self, key: CompactString, clicks: u64, hours: Vec<(u32, Hour)>) {
        if clicks > 0 {
            self.effects.push(Effect::Clicks { key: key.clone(), total: clicks });
        }
        if !hours.is_empty() {
            self.effects.push(Effect::Hours { key, hours });
        }
    }

    /// The version of a key's newest record, this batch included.
    fn version_of(&self, code: &str) -> Option<Version> {
        if let Some(v) = self.pending_ver.get(code) {
            return Some(*v);
        }
        let loc = self.shared.loc_of(code).ok()??;
        self.shared.version_at(code, loc)
    }

    /// A version for a local change that orders after the key's current one
    /// even if the clock stepped back.
    fn next_version(&self, code: &str) -> Version {
        let now = now_ms();
        Version { ms: self.version_of(code).map_or(now, |v| now.max(v.ms.saturating_add(1))), origin: self.opts.origin }
    }

    /// A change made on another node: `Create` claims a free key, `Newer`
    /// applies it only over an older version (last writer wins). Click
    /// totals only grow. Returns whether the record was written.
    fn apply_change(&mut self, change: Change, mode: ApplyMode) -> Result<bool, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let before = self.state(&change.code)?;
        let current = self.version_of(&change.code);
        match mode {
            ApplyMode::Create if current.is_some() => {
                // A retried create that already landed here (its answer was
                // lost to a timeout) is the same change, not a conflict.
                let same =
                    current == Some(change.version) && matches!((&before, &change.link), (Lookup::Live(l), Some(c)) if l.url == c.url);
                return if same { Ok(false) } else { Err(WriteError::Taken) };
            }
            ApplyMode::Newer if current.is_some_and(|v| v >= change.version) => {
                self.raise_clicks(&change);
                return Ok(false);
            }
            _ => {}
        }
        let was_live = matches!(before, Lookup::Live(_));
        match &change.link {
            Some(link) => {
                self.put(link, change.version, false)?;
                if !was_live {
                    self.effects.push(Effect::LiveLinks(1));
                }
            }
            None => {
                self.tombstone(&change.code, change.version)?;
                if was_live {
                    self.effects.push(Effect::LiveLinks(-1));
                }
            }
        }
        self.raise_clicks(&change);
        Ok(true)
    }

    fn raise_clicks(&self, change: &Change) {
        let Some(n) = change.link.as_ref().map(|l| l.clicks).filter(|&n| n > 0) else { return };
        let before = self.shared.click_entry(&change.code).fetch_max(n, Ordering::Relaxed);
        if before < n {
            self.shared.dirty_clicks.lock().insert(change.code.clone());
        }
    }

    /// Logs `link`; `new_key` when `state` found no record of its code.
    fn put(&mut self, link: &Link, version: Version, new_key: bool) -> Result<(), WriteError> {
        let flags = if link.disabled { record::FLAG_DISABLED } else { 0 };
        let body = Body::Put(Put {
            key: link.code.as_bytes(),
            url: link.url.as_bytes(),
            id: link.id,
            created_ms: link.created_ms,
            expires_ms: link.expires_ms,
            max_clicks: link.max_clicks,
            redirect: link.redirect,
            flags,
        });
        let (loc, len) = self.append(Record { lsn: 0, time_ms: version.ms, origin: version.origin, body })?;
        self.pending.insert(link.code.clone(), Some(link.clone()));
        self.pending_ver.insert(link.code.clone(), version);
        self.effects.push(Effect::SetLoc { key: link.code.clone(), loc, len, new_key });
        Ok(())
    }

    fn update(&mut self, code: CompactString, patch: Patch) -> Result<Link, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let mut link = match self.state(&code)? {
            Lookup::Live(link) => link,
            Lookup::Deleted => return Err(WriteError::Gone),
            Lookup::Missing | Lookup::Unavailable => return Err(WriteError::NotFound),
        };
        if patch.is_empty() {
            return Ok(link);
        }
        if let Some(url) = patch.url {
            link.url = url;
        }
        if let Some(e) = patch.expires_ms {
            link.expires_ms = e;
        }
        if let Some(m) = patch.max_clicks {
            link.max_clicks = m;
        }
        if let Some(r) = patch.redirect {
            link.redirect = r;
        }
        if let Some(d) = patch.disabled {
            link.disabled = d;
        }
        self.put(&link, self.next_version(&code), false)?;
        link.clicks = self.shared.clicks_of(&code);
        Ok(link)
    }

    fn delete(&mut self, code: CompactString) -> Result<(), WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        match self.state(&code)? {
            Lookup::Missing | Lookup::Unavailable => return Err(WriteError::NotFound),
            Lookup::Deleted => return Ok(()),
            Lookup::Live(_) => {}
        }
        self.tombstone(&code, self.next_version(&code))?;
        self.effects.push(Effect::LiveLinks(-1));
        Ok(())
    }

    fn tombstone(&mut self, code: &CompactString, version: Version) -> Result<(), WriteError> {
        let rec = Record { lsn: 0, time_ms: version.ms, origin: version.origin, body: Body::Delete { key: code.as_bytes() } };
        let (loc, len) = self.append(rec)?;
        self.pending.insert(code.clone(), None);
        self.pending_ver.insert(code.clone(), version);
        self.effects.push(Effect::SetLoc { key: code.clone(), loc, len, new_key: false });
        Ok(())
    }

    /// Hands a record to the log; returns where it will lie and its
    /// padded size.
    fn append(&mut self, rec: Record<'_>) -> Result<(Loc, u64), WriteError> {
        let placed = self.log.append(rec)?;
        self.since_snapshot += 1;
        Ok(placed)
    }

    /// Writes the batch, syncs it as durability asks, applies it, answers.
    fn commit(&mut self, force_sync: bool) {
        let batch = self.replies.len();
        let failure = self.log.commit(force_sync || !self.sync_replies.is_empty()).err().map(WriteError::from);
        if failure.is_none() {
            // Kept for the next batch: a large vector made anew each time
            // costs its page faults again.
            let mut effects = std::mem::take(&mut self.effects);
            for effect in effects.drain(..) {
                self.apply(effect);
            }
            self.effects = effects;
            self.batch_clicks.clear();
        } else {
            self.effects.clear();
            if self.bulk.take().is_some() && self.bulk_touched {
                // Its entries of this batch name records that may not be
                // there: the load stops here, and is run again.
                self.log.poison(
                    "an import batch failed to be written; run the import again (lines already imported are refused as taken)".into(),
                );
            }
            self.shared.dirty_clicks.lock().extend(self.batch_clicks.drain(..));
        }
        self.pending.clear();
        self.pending_ver.clear();
        self.pending_idem.clear();
        self.bulk_touched = false;
        // Answers to the same thread go to its pump together.
        let mut pumps: Vec<(Pump, Vec<Reply>)> = Vec::new();
        let vias = self.reply_via.drain(..).chain(std::iter::repeat(None));
        for (reply, via) in self.replies.drain(..).zip(vias) {
            match via {
                Some(p) => match pumps.iter_mut().find(|(q, _)| q.same_channel(&p)) {
                    Some((_, replies)) => replies.push(reply),
                    None => pumps.push((p, vec![reply])),
                },
                None => reply.send(failure.as_ref()),
            }
        }
        for (pump, replies) in pumps {
            // A thread that stopped pumping is answered from here.
            if let Err(tokio::sync::mpsc::error::SendError(d)) = pump.send(Delivery { replies, failure: failure.clone() }) {
                d.deliver();
            }
        }
        for reply in self.sync_replies.drain(..) {
            let _ = reply.send(failure.clone().map_or(Ok(()), Err));
        }
        if batch > 0 {
            m::commit_batch(batch);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::SetLoc { key, loc, len, new_key } => {
                *self.live.entry(loc.seg).or_default() += len;
                let old = if new_key { None } else { self.shared.loc_of(&key).ok().flatten() };
                self.shared.index.set(key, loc, old.is_none());
                if let Some(old) = old {
                    if let Some((old_len, _)) = self.shared.segments.record_len_at(old) {
                        let l = self.live.entry(old.seg).or_default();
                        *l = l.saturating_sub(old_len);
                    }
                }
            }
            Effect::Clicks { key, total } => {
                self.shared.click_entry(&key).fetch_max(total, Ordering::Relaxed);
            }
            Effect::Hours { key, hours } => {
                let keys: Vec<_> = hours.iter().map(|(hour, _)| (key.clone(), *hour)).collect();
                for (hour, h) in hours {
                    self.shared.rollups.replace(key.clone(), hour, h);
                }
                self.shared.rollups.mark_dirty(keys);
            }
            Effect::Idem { key, idem } => {
                self.shared.idem.insert(key, idem);
            }
            Effect::LiveLinks(d) => {
                if d >= 0 {
                    self.shared.live_links.fetch_add(d as u64, Ordering::Relaxed);
                } else {
                    self.shared.live_links.fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        if self.log.sync_due_in(self.opts.fsync_interval) == Some(Duration::ZERO) {
            let _ = self.log.sync();
        }
        if self.shared.index_damaged.load(Ordering::Relaxed) {
            self.rebuild_index();
        }
        if let Some(job) = &self.snapshot {
            if job.handle.is_finished() {
                let job = self.snapshot.take().expect("checked above");
                self.snapshot_done(job);
            }
        }
        // A merge rewrites the whole table: past 8 M links, let the changes
        // grow to an eighth of it first, so that a link is rewritten about
        // eight times over, not once per million changes.
        let threshold = self.opts.snapshot_records.max(self.shared.index.table().len() / 8);
        let due = self.since_snapshot >= threshold
            || self.shared.index.in_memory() as u64 >= threshold
            || (self.since_snapshot > 0 && self.last_snapshot.elapsed() >= self.opts.snapshot_interval)
            || self.drained.iter().any(|&(_, lsn)| lsn <= self.log.next_lsn()) && self.last_snapshot.elapsed() >= TICK;
        if due && self.snapshot.is_none() && self.refusal().is_none() {
            self.start_snapshot();
        }
        if self.last_idem_prune.elapsed() >= IDEM_PRUNE_EVERY {
            let cutoff = now_ms() - IDEMPOTENCY_WINDOW_MS;
            self.shared.idem.retain(|_, i| i.at_ms > cutoff);
            self.last_idem_prune = Instant::now();
        }
        self.compact_step();
    }

    fn start_snapshot(&mut self) {
        if self.log.sync().is_err() {
            return;
        }
        let end = self.log.end();
        let meta = SnapshotMeta {
            replay_seg: end.seg,
            replay_off: end.off as u64,
            next_id: self.next_id,
            next_lsn: self.log.next_lsn(),
            created_ms: now_ms(),
        };
        let live: Vec<(u32, u64)> = self.live.iter().map(|(&s, &b)| (s, b)).collect();
        let shared = self.shared.clone();
        let dir = self.opts.dir.clone();
        let live_links = self.shared.live_links.load(Ordering::Relaxed);
        let frozen = self.shared.index.freeze();
        let bulk = self.bulk.take();
        let handle = std::thread::Builder::new()
            .name("shortd-snapshot".into())
            .spawn(move || merge(&shared, &dir, &meta, &live, live_links, frozen, bulk));
        match handle {
            Ok(handle) => {
                self.snapshot = Some(SnapshotJob { meta, started: Instant::now(), handle });
                self.since_snapshot = 0;
                self.last_snapshot = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a snapshot thread"),
        }
    }

    fn snapshot_done(&mut self, job: SnapshotJob) {
        match job.handle.join() {
            Ok(Ok((path, table))) => {
                m::snapshot_seconds(job.started.elapsed());
                tracing::info!(file = %path.display(), keys = table.len(), seconds = job.started.elapsed().as_secs_f64(), "snapshot and index table written");
                let table_path = table.path.clone();
                self.shared.index.install(table);
                if !self.stopping {
                    self.prune_clicks();
                }
                if let Ok(all) = super::snapshot::list(&self.opts.dir) {
                    for old in all.into_iter().filter(|p| *p != path) {
                        let _ = std::fs::remove_file(old);
                    }
                }
                for old in table::list(&self.opts.dir).unwrap_or_default().into_iter().filter(|p| Some(p) != table_path.as_ref()) {
                    let _ = std::fs::remove_file(old);
                }
                let covered = job.meta.next_lsn;
                let (gone, keep): (Vec<_>, Vec<_>) = self.drained.iter().partition(|&&(_, lsn)| lsn <= covered);
                self.drained = keep;
                for (seg, _) in gone {
                    self.live.remove(&seg);
                    self.log.remove_segment(seg);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "snapshot failed; the log still holds everything"),
            Err(_) => tracing::error!("snapshot thread panicked"),
        }
    }

    fn compact_step(&mut self) {
        if self.refusal().is_some() {
            return;
        }
        if self.compacting.is_none() {
            let candidate =
                self.log.sealed().iter().filter(|(s, _)| !self.drained.iter().any(|(d, _)| d == *s) && !self.held.contains(s)).find(
                    |(s, &total)| {
                        let data = total.saturating_sub(SEGMENT_HEADER_LEN as u64).max(1);
                        let live = self.live.get(s).copied().unwrap_or(0);
                        1.0 - live as f64 / data as f64 >= self.opts.compact_ratio
                    },
                );
            let Some((&seg, _)) = candidate else { return };
            let Some(seg) = self.shared.segment(seg) else { return };
            tracing::info!(segment = seg.number, "compacting");
            self.compacting = Some(Compaction { seg, at: SEGMENT_HEADER_LEN, damage: None });
        }
        let Some(mut job) = self.compacting.take() else { return };
        let seg = job.seg.clone();
        let started = Instant::now();
        let end = self.log.sealed().get(&seg.number).map_or(seg.len(), |&l| l as usize);
        let mut scan = Scan::new(seg.bytes(), job.at, end);
        let (mut stopped, mut done) = (false, false);
        for _ in 0..COMPACT_CHUNK {
            let (at, rec) = match scan.next() {
                None => {
                    done = true;
                    break;
                }
                Some(Found::Record { at, rec, .. }) => (at, rec),
                Some(Found::Damage { at, resume, reason }) => {
                    // Every intact record after the damage is still copied;
                    // whether the segment may go is settled at its end.
                    tracing::error!(file = %seg.path.display(), offset = at, ?resume, %reason, "compaction met damage; copying the intact records past it");
                    job.damage.get_or_insert_with(|| format!("byte {at}: {reason}"));
                    continue;
                }
            };
            let here = Loc { seg: seg.number, off: at as u32 };
            let Some(key) = rec.body.key() else { continue };
            let key = CompactString::from_utf8_lossy(key);
            if self.shared.loc_of(&key).ok().flatten() == Some(here) {
                let copy = Record { lsn: 0, time_ms: rec.time_ms, origin: rec.origin, body: rec.body.clone() };
                match self.append(copy) {
                    Ok((loc, len)) => self.effects.push(Effect::SetLoc { key, loc, len, new_key: false }),
                    Err(e) => {
                        tracing::warn!(error = %e, "compaction stopped; it starts over later");
                        stopped = true;
                        break;
                    }
                }
            }
        }
        // A chunk that ended on the last record finds that out next step
        // (asking the scan now would take a record from the next chunk).
        job.at = scan.position();
        self.commit(true);
        m::compaction_seconds(started.elapsed());
        if stopped {
            return;
        }
        if !done {
            self.compacting = Some(job);
            return;
        }
        if let Some(damage) = job.damage {
            // A link whose newest record lies in the damage could not be
            // copied, and its index entry still points here: removing the
            // segment would turn a damaged link into a lost one and leave
            // the next start pointing at a missing file.
            let stranded = self.pointing_into(seg.number);
            if stranded > 0 {
                tracing::error!(file = %seg.path.display(), stranded, %damage, "compaction keeps a damaged segment: links point into its damage; run `shortd check` and restore or delete them");
                m::compaction_refused();
                self.shared.report_damage(&seg.path, format!("{damage}; kept by compaction, {stranded} link(s) point into the damage"));
                self.held.insert(seg.number);
                return;
            }
            tracing::warn!(file = %seg.path.display(), %damage, "damaged segment drained: no live link pointed into the damage");
        }
        tracing::info!(segment = seg.number, "segment drained; removed after the next snapshot");
        self.drained.push((seg.number, self.log.next_lsn()));
    }

    /// Drops click totals the new table holds as they are: the table
    /// answers for them now.
    fn prune_clicks(&self) {
        let keys: Vec<CompactString> = self.shared.clicks.iter().map(|e| e.key().clone()).collect();
        for key in keys {
            self.shared.clicks.remove_if(&key, |k, v| {
                let n = v.load(Ordering::Relaxed);
                self.shared.index.table_clicks(k, |loc| self.shared.is_key(k, loc)).is_ok_and(|t| t == n)
            });
        }
    }

    /// Links whose newest record lies in segment `seg`, counting any
    /// location whose record cannot be read (it may be a link's only one).
    fn pointing_into(&self, seg: u32) -> usize {
        let mut n = 0;
        let walked = self.shared.index.for_each(|key, loc| {
            if loc.seg != seg {
                return;
            }
            let key = key.map(CompactString::from).or_else(|| self.shared.key_at(loc));
            if key.is_none_or(|k| self.shared.loc_of(&k).ok().flatten() == Some(loc)) {
                n += 1;
            }
        });
        n + walked.is_err() as usize
    }

    /// A read met a damaged index table block: the index is rebuilt from
    /// the log (every put and delete, the later one of a key winning), and
    /// a merge writes a sound table. Writes wait meanwhile; redirects of
    /// keys outside the damage carry on.
    fn rebuild_index(&mut self) {
        let started = Instant::now();
        if let Some(job) = self.snapshot.take() {
            // It reads the damaged table too; its result is not used.
            let _ = job.handle.join();
        }
        let old = self.shared.index.table();
        // Click totals the table held, from its intact blocks.
        old.for_each_intact(|s| {
            if let Some(key) = (s.clicks > 0).then(|| self.shared.key_at(s.loc)).flatten() {
                self.shared.clicks.entry(key).or_insert_with(|| s.clicks.into());
            }
        });
        let written = self.log.end();
        let index = super::Map::<Loc>::default();
        for seg in self.shared.segments.all().into_iter().filter(|s| s.number <= written.seg) {
            let end = if seg.number == written.seg { written.off as usize } else { seg.len() };
            for found in Scan::new(seg.bytes(), SEGMENT_HEADER_LEN, end) {
                if let Found::Record { rec, at, .. } = found {
                    let Some(key) = rec.body.key() else { continue };
                    index.insert(CompactString::from_utf8_lossy(key), Loc { seg: seg.number, off: at as u32 });
                }
            }
        }
        let keys = index.len();
        self.shared.index.replace_all(index);
        self.shared.index_damaged.store(false, Ordering::Relaxed);
        if let Some(path) = &old.path {
            self.shared.damage.lock().remove(path);
        }
        tracing::warn!(keys, seconds = started.elapsed().as_secs_f64(), "index rebuilt from the log; writing a new table");
        self.start_snapshot();
    }

    fn shutdown(&mut self) {
        self.stopping = true;
        self.commit(true);
        if let Some(job) = self.snapshot.take() {
            let _ = job.handle.join();
        }
        if (self.since_snapshot > 0 || self.shared.index.in_memory() > 0) && self.refusal().is_none() {
            self.start_snapshot();
            if let Some(job) = self.snapshot.take() {
                self.snapshot_done(job);
            }
        }
        // The merge met a damaged table: rebuild, and leave a sound one.
        if self.shared.index_damaged.load(Ordering::Relaxed) && self.refusal().is_none() {
            self.rebuild_index();
            if let Some(job) = self.snapshot.take() {
                self.snapshot_done(job);
            }
        }
    }
}

/// Writes the next index table (the previous one plus the frozen changes
/// and the click totals), then the snapshot that names it.
fn merge(
    shared: &Shared,
    dir: &std::path::Path,
    meta: &SnapshotMeta,
    live: &[(u32, u64)],
    live_links: u64,
    frozen: Frozen,
    bulk: Option<Builder>,
) -> io::Result<(std::path::PathBuf, Table)> {
    let seed = shared.index.seed();
    let changes = frozen.changes.len() as u64;
    let mut b = match bulk {
        // It holds the frozen table's slots already.
        Some(b) if b.len() + changes <= b.capacity() => b,
        Some(b) => {
            let room = b.len() + changes;
            b.grown(dir, room)?
        }
        None => {
            let mut b = Builder::create(dir, frozen.table.len() + changes)?;
            frozen.table.for_each(|s| b.insert(s)).map_err(|d| {
                shared.table_damaged(d);
                io::Error::other(d.to_string())
            })?;
            b
        }
    };
    for e in frozen.changes.iter() {
        let (key, loc) = (e.key().as_str(), *e.value());
        let hash = table::hash_key(seed, key.as_bytes());
        // The slot of the same key, told by the record it points at; a
        // record that cannot be read leaves its slot behind (readers skip
        // it the same way).
        let moved = b.update(hash, |s| {
            let same = shared.is_key(key, s.loc);
            if same {
                s.loc = loc;
            }
            same
        });
        if !moved {
            b.insert(Slot { hash, loc, clicks: 0 });
        }
    }
    drop(frozen);
    // Each total's slot is told by the record it points at. Taken in the
    // order of those records, the reads go through the log front to back
    // (readahead helps) instead of one random page each, which on a cold
    // page cache made a stop after a uniform load take minutes.
    let mut clicks: Vec<(Option<Loc>, u64, CompactString, u64)> = shared
        .clicks
        .iter()
        .map(|e| {
            let hash = table::hash_key(seed, e.key().as_bytes());
            (b.find(hash, |s| Some(s.loc)), hash, e.key().clone(), e.value().load(Ordering::Relaxed))
        })
        .collect();
    clicks.sort_unstable_by_key(|c| c.0.map(|l| (l.seg, l.off)));
    let mut left = Vec::new();
    for (_, hash, key, total) in clicks {
        let set = b.update(hash, |s| {
            let same = shared.is_key(&key, s.loc);
            if same {
                s.clicks = total;
            }
            same
        });
        if !set {
            // A link made after the freeze: its total goes in the snapshot.
            left.push((key, total));
        }
    }
    let table = Table::open(&b.finish(&table::table_path(dir, meta.next_lsn), seed)?, seed).map_err(io::Error::other)?;
    let mut w = SnapshotWriter::create(dir, meta)?;
    w.counts(live_links)?;
    for (key, total) in left {
        w.clicks(key.as_bytes(), total)?;
    }
    let cutoff = now_ms() - IDEMPOTENCY_WINDOW_MS;
    for e in shared.idem.iter().filter(|e| e.value().at_ms > cutoff) {
        w.idem(e.key().as_bytes(), e.value().body_hash, e.value().at_ms, e.value().code.as_bytes())?;
    }
    for &(seg, bytes) in live {
        w.live(seg, bytes)?;
    }
    // Encoded under the table's lock (compact, and no disk wait while the
    // aggregator waits); rollups of links gone from the index go with them.
    let (mut bytes, mut ends) = (Vec::new(), Vec::new());
    // Keys up to the freeze (and a bulk load's) are in the new table, not
    // installed yet; later ones are in memory. A table slot is taken on its
    // 64-bit hash alone: reading each record to confirm would cost a random
    // page per clicked link, and a collision only keeps a gone link's stats
    // until they age out.
    let known = |code: &str| {
        shared.index.in_memory_loc(code).is_some() || table.find(shared.index.hash(code), |_| Some(())).is_ok_and(|f| f.is_some())
    };
    shared.rollups.for_all(|code, rec| {
        if known(code) {
            record::encode_rollup(&rec, &mut bytes);
            ends.push(bytes.len());
        }
    });
    let mut start = 0;
    for end in ends {
        w.rollup(&bytes[start..end])?;
        start = end;
    }
    Ok((w.finish()?, table))
}

fn index_unavailable() -> WriteError {
    WriteError::Unavailable("the index is being rebuilt after damage; retry shortly".into())
}
