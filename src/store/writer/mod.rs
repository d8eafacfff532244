//! The single writer's loop: a batch of commands in, one commit out, the
//! changes applied to the index once they are durable, housekeeping
//! between batches. What a command does lives beside this file: the link
//! rules (`rules`), the commands and their answers (`protocol`), bulk
//! loads (`import`), snapshots and the table merge (`snapshot`),
//! compaction (`compaction`) and the index rebuild after damage
//! (`rebuild`).
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

use super::read::Shared;
use super::recovery::Recovered;
use super::types::{Idem, Link, Loc, Lookup, StoreOptions, Version, WriteError, IDEMPOTENCY_WINDOW_MS};
use crate::analytics::rollup::Hour;
use crate::hash::Hasher;
use crate::journal::record::{Body, Record};
use crate::journal::segment::Segment;
use crate::journal::snapshot::SnapshotMeta;
use crate::journal::table::{Builder, Table};
use crate::journal::{Log, LogHandles, LogOptions};
use crate::metrics as m;

mod compaction;
mod import;
mod protocol;
mod rebuild;
mod rules;
mod snapshot;

use protocol::Reply;
pub use protocol::{Command, Delivery, Pump};

const MAX_BATCH: usize = 1024;
const CLICKS_PER_RECORD: usize = 256;
const ROLLUPS_PER_RECORD: usize = 64;
const COMPACT_CHUNK: usize = 2048;
const TICK: Duration = Duration::from_millis(100);
const IDEM_PRUNE_EVERY: Duration = Duration::from_secs(60);

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
                    None => super::checkpoint::copy_checkpoint(&self.shared.dir, &into)
                        .map_err(|e| WriteError::Unavailable(format!("cannot copy the store into {}: {e}", into.display()))),
                };
                let _ = reply.send(made);
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
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

fn index_unavailable() -> WriteError {
    WriteError::Unavailable("the index is being rebuilt after damage; retry shortly".into())
}
