//! The appender: records in, locations out, durability as configured.
//!
//! The store's writer thread owns one `Log`. It encodes records into one
//! buffer (`append` answers where each will lie), and `commit` writes the
//! buffer with one `pwrite` and syncs once when the durability mode asks:
//! group commit. When the active segment is full it is synced, sealed and
//! the next one, prepared meanwhile on a helper thread, put in its place
//! (`roll`).
//!
//! Every completed sync is followed by a sync mark (see `record`): the
//! offset up to which the active segment is on disk, written (not synced)
//! right after the sync, before the batch is acknowledged. After a power
//! loss, damage that no mark after it reaches past lies in data no
//! completed sync covered, which under `always` no client was told is
//! stored, so a start may cut it (`journal::open`); damage to synced data
//! has the mark after it and stops the start. A mark that could not be
//! written then opens the next batch.
//!
//! Failure is all or nothing per batch: the first failed write, sync or
//! roll fails every record of the batch (`commit` returns it), and any
//! failure but lack of space poisons the log until restart, because after
//! a failed `fdatasync` the kernel may have dropped the dirty pages
//! (fsyncgate): retrying would pretend.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::record::{self, Record};
use super::segment::{self, Loc, Segment, Segments, SEGMENT_HEADER_LEN};
use crate::metrics as m;

/// When a write is acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Acknowledge only after the record is on disk (group commit).
    Always,
    /// Acknowledge after the write; fsync every `fsync_interval`.
    Interval,
    /// Leave flushing to the operating system.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// The log refuses writes (poisoned, or no segment can be written).
    #[error("{0}")]
    Failed(String),
    #[error("a record of {0} bytes does not fit in a segment; raise --segment-bytes")]
    TooLarge(u64),
}

/// Why the log refuses writes, shared with readers (`/readyz`, the API).
pub type Poison = Arc<RwLock<Option<String>>>;

pub struct Log {
    dir: PathBuf,
    segments: Arc<Segments>,
    durability: Durability,
    segment_bytes: u64,
    poison: Poison,
    /// Where the written data ends (active << 32 | offset), for readers
    /// that walk the active segment (the scrub).
    written: Arc<AtomicU64>,
    file: Option<File>,
    active: u32,
    /// Where `buf` will be written in the active segment.
    buf_off: u64,
    buf: Vec<u8>,
    next_lsn: u64,
    dirty: bool,
    /// Offset in the active segment up to which a completed sync covers.
    synced: u64,
    /// The `to` of the active segment's last sync mark.
    marked: u64,
    /// Whether the active segment keeps sync marks (format 2 on).
    marks: bool,
    /// A mark was written since the last sync: a roll must sync it too.
    mark_unsynced: bool,
    last_sync: Instant,
    /// The batch's first failure: it fails the whole batch.
    failed: Option<LogError>,
    /// Sealed segments and where their data ends.
    sealed: std::collections::HashMap<u32, u64>,
    /// The next segment, being prepared on a helper thread.
    spare: Option<Spare>,
}

/// A segment prepared ahead of its roll: preallocating, zeroing and
/// syncing 64 MiB takes tens of milliseconds (more on a slow disk), which
/// in the roll itself would stall every write in flight.
struct Spare {
    number: u32,
    made: std::thread::JoinHandle<io::Result<File>>,
}

/// What the log shares with readers.
pub struct LogHandles {
    pub segments: Arc<Segments>,
    pub poison: Poison,
    /// Where the written data ends: active segment << 32 | offset.
    pub written: Arc<AtomicU64>,
}

/// Reads a `written` position.
pub fn written_loc(written: &AtomicU64) -> Loc {
    let w = written.load(Ordering::Acquire);
    Loc { seg: (w >> 32) as u32, off: w as u32 }
}

pub struct LogOptions {
    pub dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes: u64,
}

impl Log {
    /// Continues the log at `write_off` in segment `active` (0: no segment
    /// yet, the first append creates one).
    pub fn open(opts: LogOptions, handles: LogHandles, active: u32, write_off: u64, next_lsn: u64) -> Log {
        let LogHandles { segments, poison, written } = handles;
        let mut log = Log {
            dir: opts.dir,
            durability: opts.durability,
            segment_bytes: opts.segment_bytes,
            poison,
            written,
            file: None,
            active,
            buf_off: write_off,
            buf: Vec::with_capacity(1 << 20),
            next_lsn,
            dirty: false,
            // What an earlier process wrote may still sit in the page cache
            // unsynced: nothing counts as synced until this process syncs.
            synced: SEGMENT_HEADER_LEN as u64,
            marked: SEGMENT_HEADER_LEN as u64,
            marks: segments.get(active).is_some_and(|s| s.has_sync_marks()),
            mark_unsynced: false,
            last_sync: Instant::now(),
            failed: None,
            sealed: segments.all().iter().filter(|s| s.number != active).map(|s| (s.number, s.len() as u64)).collect(),
            segments,
            spare: None,
        };
        log.publish_written();
        let opened = if active == 0 {
            log.roll()
        } else {
            OpenOptions::new()
                .write(true)
                .open(segment::segment_path(&log.dir, active))
                .map(|f| log.file = Some(f))
                .map_err(|e| LogError::Failed(e.to_string()))
        };
        log.failed = None;
        m::segments(log.segments.len());
        match opened {
            // Out of space for a first segment: not poisoned; appends try again.
            Err(LogError::DiskFull(e)) => tracing::error!(error = %e, "no space for a log segment; creates fail until there is"),
            Err(e) => log.poison_with(format!("cannot open the log for writing: {e}")),
            Ok(()) if log.spare.is_none() => log.prepare_spare(log.active + 1),
            Ok(()) => {}
        }
        log
    }

    pub fn segments(&self) -> &Arc<Segments> {
        &self.segments
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The refusal every write gets, if the log is poisoned.
    pub fn refusal(&self) -> Option<LogError> {
        self.poison.read().as_ref().map(|r| LogError::Failed(r.clone()))
    }

    /// Where the next record after everything appended so far will lie.
    pub fn end(&self) -> Loc {
        Loc { seg: self.active, off: (self.buf_off + self.buf.len() as u64) as u32 }
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Sealed segments and where their data ends.
    pub fn sealed(&self) -> &std::collections::HashMap<u32, u64> {
        &self.sealed
    }

    /// True when written data waits for an `interval` sync.
    pub fn sync_due_in(&self, interval: Duration) -> Option<Duration> {
        (self.durability == Durability::Interval && self.dirty).then(|| interval.saturating_sub(self.last_sync.elapsed()))
    }

    /// Encodes `rec` (its LSN is assigned here) into the batch, rolling to
    /// a new segment when the active one is full. Returns where it will lie
    /// and its padded size.
    pub fn append(&mut self, mut rec: Record<'_>) -> Result<(Loc, u64), LogError> {
        self.place(|lsn, buf| {
            rec.lsn = lsn;
            record::encode(&rec, buf);
        })
    }

    /// `append` for a record `record::encode` made elsewhere (padding
    /// included, any LSN): it is numbered here.
    pub fn append_encoded(&mut self, rec: &[u8]) -> Result<(Loc, u64), LogError> {
        self.place(|lsn, buf| {
            let at = buf.len();
            buf.extend_from_slice(rec);
            record::renumber(&mut buf[at..], lsn);
        })
    }

    /// The bytes from `loc` on if they are still in the batch, not yet
    /// written to the segment.
    pub fn buffered(&self, loc: Loc) -> Option<&[u8]> {
        let off = (loc.off as u64).checked_sub(self.buf_off)?;
        (loc.seg == self.active).then(|| self.buf.get(off as usize..)).flatten()
    }

    fn place(&mut self, encode: impl FnOnce(u64, &mut Vec<u8>)) -> Result<(Loc, u64), LogError> {
        if let Some(e) = self.failed.clone().or_else(|| self.refusal()) {
            return Err(e);
        }
        if self.file.is_none() {
            self.roll()?;
        }
        if self.mark_due() {
            self.marked = self.synced;
            record::encode(&self.mark(), &mut self.buf);
        }
        let mut start = self.buf.len();
        encode(self.next_lsn, &mut self.buf);
        let size = (self.buf.len() - start) as u64;
        if size > self.segment_bytes - SEGMENT_HEADER_LEN as u64 {
            self.buf.truncate(start);
            return Err(LogError::TooLarge(size));
        }
        self.next_lsn += 1;
        if self.buf_off + self.buf.len() as u64 > self.active_len() {
            let tail = self.buf.split_off(start);
            self.flush()?;
            self.roll()?;
            self.buf = tail;
            start = 0;
        }
        Ok((Loc { seg: self.active, off: (self.buf_off + start as u64) as u32 }, size))
    }

    /// Rolls now unless `bytes` more fit in the active segment, so that
    /// records that must land together cannot be split by a roll.
    pub fn ensure_room(&mut self, bytes: u64) -> Result<(), LogError> {
        let mark = if self.mark_due() { record::SYNCED_LEN as u64 } else { 0 };
        if self.buf_off + self.buf.len() as u64 + mark + bytes > self.active_len() {
            self.flush()?;
            self.roll()?;
        }
        Ok(())
    }

    /// Writes the batch and syncs it when the durability mode (or `sync`)
    /// asks. `Err` means no record of the batch may be acknowledged.
    pub fn commit(&mut self, sync: bool) -> Result<(), LogError> {
        if self.failed.is_none() {
            let _ = self.flush();
        }
        if self.failed.is_none() && (sync || (self.durability == Durability::Always && self.dirty)) {
            let _ = self.sync();
        }
        self.buf.clear();
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Makes everything written so far durable, and says so in a mark.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.sync_data()?;
        self.write_mark();
        Ok(())
    }

    /// Writes a sync mark for the last completed sync now, between batches.
    /// A failed write poisons the log but fails no batch: the one the sync
    /// covered is durable.
    fn write_mark(&mut self) {
        if !self.mark_due() {
            return;
        }
        let Some(file) = &self.file else { return };
        let mut mark = Vec::with_capacity(record::SYNCED_LEN);
        record::encode(&self.mark(), &mut mark);
        if self.buf_off + mark.len() as u64 > self.active_len() {
            return;
        }
        match file.write_all_at(&mark, self.buf_off) {
            Ok(()) => {
                self.buf_off += mark.len() as u64;
                (self.marked, self.mark_unsynced) = (self.synced, true);
                self.publish_written();
            }
            Err(e) => self.poison_with(format!("write to segment {} failed: {e}", self.active)),
        }
    }

    fn sync_data(&mut self) -> Result<(), LogError> {
        let Some(file) = &self.file else { return Ok(()) };
        if !self.dirty && !self.mark_unsynced {
            return Ok(());
        }
        let started = Instant::now();
        let r = file.sync_data();
        m::fsync_seconds(started.elapsed());
        self.last_sync = Instant::now();
        match r {
            Ok(()) => {
                (self.dirty, self.mark_unsynced) = (false, false);
                self.synced = self.buf_off;
                Ok(())
            }
            Err(e) => Err(self.io_failed(format!("fdatasync of segment {} failed: {e}", self.active))),
        }
    }

    /// The sync mark for the last completed sync (marks take no LSN).
    fn mark(&self) -> Record<'static> {
        Record { lsn: 0, time_ms: 0, origin: 0, body: record::Body::Synced { to: self.synced } }
    }

    /// Whether the next record opens a batch that must carry a sync mark:
    /// a sync completed since the last mark, in a segment that keeps them.
    fn mark_due(&self) -> bool {
        self.marks && self.buf.is_empty() && self.synced > self.marked
    }

    /// Forgets a segment that compaction emptied and removes its file.
    pub fn remove_segment(&mut self, n: u32) {
        self.segments.remove(n);
        self.sealed.remove(&n);
        match std::fs::remove_file(segment::segment_path(&self.dir, n)) {
            Ok(()) => tracing::info!(segment = n, "compacted segment removed"),
            Err(e) => tracing::warn!(segment = n, error = %e, "cannot remove a compacted segment"),
        }
        m::segments(self.segments.len());
    }

    /// Refuses every later write, for `reason`.
    pub fn poison(&mut self, reason: String) {
        self.poison_with(reason);
    }

    fn poison_with(&mut self, reason: String) {
        tracing::error!(%reason, "store refuses writes until restart");
        *self.poison.write() = Some(reason);
    }

    /// A failed write, sync or segment creation: the log is poisoned and
    /// the batch under way fails as a whole.
    fn io_failed(&mut self, reason: String) -> LogError {
        self.poison_with(reason.clone());
        let e = LogError::Failed(reason);
        self.failed.get_or_insert_with(|| e.clone());
        e
    }

    fn publish_written(&self) {
        self.written.store((self.active as u64) << 32 | self.buf_off, Ordering::Release);
    }

    /// Bytes the active segment's file and map span: the log never writes
    /// past them, whatever the segment size setting says now (a file cut
    /// short by a crash, or made under another setting, is rolled over when
    /// full).
    fn active_len(&self) -> u64 {
        self.segments.get(self.active).map_or(self.segment_bytes, |s| s.len() as u64)
    }

    fn flush(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = &self.file else {
            self.buf.clear();
            let e = LogError::Failed("no writable segment".into());
            self.failed.get_or_insert_with(|| e.clone());
            return Err(e);
        };
        let written = file.write_all_at(&self.buf, self.buf_off);
        let n = self.buf.len() as u64;
        self.buf.clear();
        if written.is_ok() && self.durability == Durability::Never {
            // Start writing the pages back now, without waiting: the sync
            // at the segment's roll then has little left to do.
            // SAFETY: a plain syscall on an open descriptor.
            unsafe { libc::sync_file_range(file.as_raw_fd(), self.buf_off as i64, n as i64, libc::SYNC_FILE_RANGE_WRITE) };
        }
        match written {
            Ok(()) => {
                self.buf_off += n;
                self.publish_written();
                self.dirty = true;
                m::store_appended(n);
                Ok(())
            }
            Err(e) => Err(self.io_failed(format!("write to segment {} failed: {e}", self.active))),
        }
    }

    /// Seals the active segment and starts the next. Any failure fails the
    /// whole batch: commands earlier in it may sit in a segment whose sync
    /// or successor never came. Lack of space leaves the log usable (a
    /// later roll may find room); any other failure poisons it.
    fn roll(&mut self) -> Result<(), LogError> {
        let rolled = self.try_roll();
        if let Err(e) = &rolled {
            self.buf.clear();
            self.failed.get_or_insert_with(|| e.clone());
        }
        rolled
    }

    fn try_roll(&mut self) -> Result<(), LogError> {
        // Even under `never`: a snapshot syncs only the active segment, so a
        // sealed one must be on disk before any snapshot can cover it (one
        // fdatasync per segment, not per write). No mark after it: a
        // sealed segment holds only synced bytes.
        self.sync_data()?;
        let started = Instant::now();
        let next = self.active + 1;
        // A spare that failed is made again here, where its error is
        // classified and reported.
        let made = match self.take_spare(next) {
            Some(file) => Segment::install(&self.dir, next, file),
            None => Segment::create(&self.dir, next, self.segment_bytes, self.durability != Durability::Never),
        };
        let (seg, file) = match made {
            Ok(made) => made,
            Err(e) if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) => {
                return Err(LogError::DiskFull(format!("cannot create segment {next}: {e}")));
            }
            Err(e) => return Err(self.io_failed(format!("cannot create segment {next}: {e}"))),
        };
        if self.active != 0 {
            self.sealed.insert(self.active, self.buf_off);
        }
        let seg_marks = seg.has_sync_marks();
        self.segments.insert(seg);
        self.file = Some(file);
        self.active = next;
        self.buf_off = SEGMENT_HEADER_LEN as u64;
        (self.synced, self.marked, self.marks, self.mark_unsynced) = (self.buf_off, self.buf_off, seg_marks, false);
        self.publish_written();
        self.dirty = false;
        m::segments(self.segments.len());
        self.prepare_spare(next + 1);
        m::roll_seconds(started.elapsed());
        Ok(())
    }

    fn prepare_spare(&mut self, number: u32) {
        let (dir, size, zeros) = (self.dir.clone(), self.segment_bytes, self.durability != Durability::Never);
        let made = std::thread::Builder::new().name("shortd-segment".into()).spawn(move || Segment::prepare(&dir, number, size, zeros));
        // Without a thread the roll makes the segment itself.
        self.spare = made.ok().map(|made| Spare { number, made });
    }

    /// The prepared segment `number`, if its helper made it.
    fn take_spare(&mut self, number: u32) -> Option<File> {
        let spare = self.spare.take()?;
        let made = spare.made.join().ok()?.ok()?;
        if spare.number == number {
            return Some(made);
        }
        let _ = std::fs::remove_file(segment::temporary_path(&self.dir, spare.number));
        None
    }
}

impl Drop for Log {
    /// A spare that was never rolled into is not left taking disk space.
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            let _ = spare.made.join();
            let _ = std::fs::remove_file(segment::temporary_path(&self.dir, spare.number));
        }
    }
}
