//! The `Store` handle: opens a store (recovery, then the writer and scrub
//! threads), sends every change to the writer and waits for its answer,
//! and serves reads and pages through the shared state.
//!
//! A command carries the reply pump of the thread that sent it, if that
//! thread runs one (`answer_on_this_thread`): the writer then hands a
//! batch's answers for that thread to it at once, which wakes the thread
//! once instead of once per answer (each wake from another thread is a
//! syscall).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use compact_str::CompactString;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::read::Shared;
use super::recovery;
use super::scrub::scrub_loop;
use super::types::{
    ApplyMode, Change, Created, Cursor, ImportBatch, Link, Loc, Lookup, NewLink, OpenError, Patch, StoreOptions, StoreStats, Stored,
    WriteError,
};
use super::writer::{Command, Pump, Writer};
use crate::analytics::rollup::Rollups;
use crate::journal::record::{self, Body};
use crate::journal::segment;

pub struct Store {
    pub(super) shared: Arc<Shared>,
    tx: Option<Sender<(Command, Option<Pump>)>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Dropped to stop the scrub thread.
    scrub_stop: Mutex<Option<Sender<()>>>,
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

thread_local! {
    static PUMP: std::cell::RefCell<Option<Pump>> = const { std::cell::RefCell::new(None) };
}

/// From now on, commands sent from this thread have their answers handed
/// to `pump`, whose receiver this thread's event loop drains (see
/// `http::server`). Commands sent from threads without one are answered
/// by the writer itself.
pub fn answer_on_this_thread(pump: Pump) {
    PUMP.with(|p| *p.borrow_mut() = Some(pump));
}

fn stopped() -> WriteError {
    WriteError::Unavailable("the writer has stopped".into())
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
