//! Opening a data directory's log: the lock, leftovers of interrupted
//! writes, the segments, and replay with the torn-tail rules.
//!
//! Rules (also in docs/storage.md):
//! - Damage in the newest segment that no completed sync covered is a torn
//!   tail: a crash mid-write, or a power loss that kept some pages of the
//!   last batches and lost others. It is cut off: logged, counted
//!   (`shortd_store_tail_cuts_total`), overwritten with zeros, and the log
//!   continues after the last record before it. In a segment with sync
//!   marks (format 2), "no completed sync covered it" means no mark after
//!   the damage reaches past it, so intact records after the damage that
//!   were never synced go too: under `always` none was acknowledged. In a
//!   format 1 segment only damage with no intact record after it counts.
//! - Any other damage (in an older segment, which its roll synced, or in
//!   data a sync covered) stops the start with the file and offset, unless
//!   `repair` is set; then every intact record is kept and each skipped
//!   range is reported.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Body, DecodeError, Record};
use super::scan::{next_record, past_damage, PastDamage};
use super::segment::{self, Loc, Segment, Segments};
use crate::metrics as m;

const LOCK_FILE: &str = "lock";
const LOCK_TRIES: usize = 20;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file} is damaged at byte {offset}: {reason}; start with --repair to keep every intact record and drop the rest")]
    Damaged { file: PathBuf, offset: u64, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("data directory {} is on a read-only file system", .0.display())]
    ReadOnly(PathBuf),
    #[error("index table unusable: {0}")]
    Table(String),
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// How replay treats damage.
#[derive(Clone, Copy, Debug)]
pub struct ReplayRules {
    /// Skip damaged ranges (reported) instead of refusing to start.
    pub repair: bool,
    /// Change no file: a torn tail is left as it is.
    pub read_only: bool,
}

/// A data directory's log, opened.
pub struct Opened {
    /// Held while the process runs (none when opened read-only).
    pub lock: Option<File>,
    pub segments: Arc<Segments>,
    /// Segment numbers, oldest first.
    pub numbers: Vec<u32>,
}

/// Takes the directory's lock (one process per data directory), removes
/// what interrupted writes left and maps every segment.
pub fn open_segments(dir: &Path, read_only: bool) -> Result<Opened, OpenError> {
    if !read_only {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if !dir.is_dir() {
        return Err(OpenError::Invalid(format!("data directory {} does not exist", dir.display())));
    }
    let lock = if read_only { None } else { Some(lock_dir(dir)?) };
    if !read_only {
        remove_leftovers(dir);
    }
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment::segment_number))
        .collect();
    numbers.sort_unstable();
    if let (Some(&last), false) = (numbers.last(), read_only) {
        if unfinished_roll(dir, last) {
            tracing::warn!(segment = last, "removing an empty newest segment without a header (interrupted roll)");
            std::fs::remove_file(segment::segment_path(dir, last)).map_err(io_err(&segment::segment_path(dir, last)))?;
            numbers.pop();
        }
    }
    let segments = Arc::new(Segments::default());
    let opened = Segment::open_many(dir, &numbers).map_err(|(n, e)| OpenError::Damaged {
        file: segment::segment_path(dir, n),
        offset: 0,
        reason: e.to_string(),
    })?;
    for seg in opened {
        segments.insert(seg);
    }
    Ok(Opened { lock, segments, numbers })
}

/// Replays one segment from `from`, calling `visit` with every intact
/// record, its location and padded length; returns where its data ends.
pub fn replay_segment(
    seg: &Segment,
    from: usize,
    newest: bool,
    rules: ReplayRules,
    mut visit: impl FnMut(&Record<'_>, Loc, u64),
) -> Result<usize, OpenError> {
    let data = seg.bytes();
    let mut at = from;
    loop {
        let problem = match record::decode(data, at) {
            Ok((Record { body: Body::Synced { .. }, .. }, len)) => {
                at += record::padded(len);
                continue;
            }
            Ok((rec, len)) => {
                visit(&rec, Loc { seg: seg.number, off: at as u32 }, record::padded(len) as u64);
                at += record::padded(len);
                continue;
            }
            Err(DecodeError::End) => match data[at.min(data.len())..].iter().position(|&b| b != 0) {
                None => return Ok(at),
                Some(_) => "data after the end of the log".to_string(),
            },
            Err(e) => e.to_string(),
        };
        let (unsynced, past) = unsynced_damage(seg, at);
        if newest && unsynced {
            if !rules.read_only {
                let cut = data.len().saturating_sub(at);
                tracing::warn!(
                    file = %seg.path.display(),
                    offset = at,
                    bytes = cut,
                    dropped_records = past.records,
                    reason = %problem,
                    "cutting off a tail no completed sync covered (a crash or power loss mid-write)"
                );
                zero_tail(&seg.path, at as u64, data.len() as u64).map_err(io_err(&seg.path))?;
                m::tail_cut(past.records);
            }
            return Ok(at);
        }
        if !rules.repair {
            return Err(OpenError::Damaged { file: seg.path.clone(), offset: at as u64, reason: problem });
        }
        let resume = next_record(data, at);
        let to = resume.unwrap_or(data.len());
        tracing::warn!(file = %seg.path.display(), from = at, to, reason = %problem, "repair: skipping a damaged range");
        match resume {
            Some(o) => at = o,
            None => return Ok(at),
        }
    }
}

/// Whether damage at `at` lies where no completed sync covered it (the
/// rules above), with what lies past it. Intact records after the damage
/// may be acknowledged links, so only then may they go.
pub fn unsynced_damage(seg: &Segment, at: usize) -> (bool, PastDamage) {
    let past = past_damage(seg.bytes(), at);
    let unsynced = if seg.has_sync_marks() { past.synced_to <= at as u64 } else { past.records == 0 && past.synced_to == 0 };
    (unsynced, past)
}

fn zero_tail(path: &Path, from: u64, to: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// A segment file with no valid header and nothing but zeros: a roll that
/// never finished (segments made before rolls used a temporary name).
fn unfinished_roll(dir: &Path, n: u32) -> bool {
    if Segment::open(dir, n).is_ok() {
        return false;
    }
    match std::fs::read(segment::segment_path(dir, n)) {
        Ok(bytes) => bytes.iter().all(|&b| b == 0),
        Err(_) => false,
    }
}

/// Removes temporary files of a snapshot or segment roll that a crash
/// interrupted; they were never renamed into place, so nothing refers to them.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("snapshot-") || name.ends_with(".log.tmp")) && name.ends_with(".tmp") {
            tracing::warn!(file = %name, "removing a temporary file left by an interrupted write");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) {
            OpenError::ReadOnly(dir.to_path_buf())
        } else {
            OpenError::Io { path: path.clone(), source: e }
        }
    })?;
    // A lock belongs to the open file, which a child forked by this
    // process (between fork and exec) briefly shares: a reopen right after
    // a close can meet that for microseconds. Another shortd holds it for
    // good, so a short retry tells the two apart.
    for _ in 0..LOCK_TRIES {
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            return Ok(file);
        }
        std::thread::sleep(LOCK_RETRY);
    }
    Err(OpenError::Invalid(format!("data directory {} is in use by another shortd process", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::log::{Durability, Log, LogHandles, LogOptions};
    use crate::journal::segment::SEGMENT_HEADER_LEN;

    const RULES: ReplayRules = ReplayRules { repair: false, read_only: false };

    fn delete(key: &str) -> Record<'_> {
        Record { lsn: 0, time_ms: 1, origin: 0, body: Body::Delete { key: key.as_bytes() } }
    }

    /// Writes `batches` into a fresh log in `dir`, each synced but the
    /// last (the one a power loss can tear); returns where each record lies.
    fn write(dir: &Path, batches: &[&[&str]]) -> Vec<Loc> {
        let opened = open_segments(dir, false).unwrap();
        let handles = LogHandles { segments: opened.segments, poison: Default::default(), written: Default::default() };
        let opts = LogOptions { dir: dir.to_path_buf(), durability: Durability::Never, segment_bytes: 1 << 20 };
        let mut log = Log::open(opts, handles, 0, SEGMENT_HEADER_LEN as u64, 1);
        let mut locs = vec![];
        for (i, batch) in batches.iter().enumerate() {
            for key in *batch {
                locs.push(log.append(delete(key)).unwrap().0);
            }
            log.commit(i + 1 < batches.len()).unwrap();
        }
        locs
    }

    /// Replays the data directory's one segment; the keys it found, or the error.
    fn replay(dir: &Path) -> Result<Vec<String>, OpenError> {
        let opened = open_segments(dir, false)?;
        let seg = opened.segments.get(opened.numbers[0]).unwrap();
        let mut keys = vec![];
        replay_segment(&seg, SEGMENT_HEADER_LEN, true, RULES, |rec, _, _| {
            keys.push(String::from_utf8_lossy(rec.body.key().unwrap()).into_owned());
        })?;
        Ok(keys)
    }

    fn smash(dir: &Path, loc: Loc) {
        let path = segment::segment_path(dir, loc.seg);
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0xAA; 16], loc.off as u64 + 20).unwrap();
    }

    #[test]
    fn damage_no_sync_covered_is_cut_with_the_records_after_it() {
        let tmp = tempfile::tempdir().unwrap();
        // The last batch is what a power loss may tear: its first record
        // lost, its second kept.
        let locs = write(tmp.path(), &[&["a", "b"], &["c"], &["d", "e"]]);
        smash(tmp.path(), locs[3]);
        assert_eq!(replay(tmp.path()).unwrap(), ["a", "b", "c"]);
        // The cut is for good: the next start finds a clean end there.
        assert_eq!(replay(tmp.path()).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn damage_in_the_last_synced_batch_stops_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        // The mark written after the last sync covers "c" and "d".
        let locs = write(tmp.path(), &[&["a", "b"], &["c", "d"], &[]]);
        smash(tmp.path(), locs[2]);
        assert!(matches!(replay(tmp.path()), Err(OpenError::Damaged { .. })), "damage to the last synced batch was cut");
    }

    #[test]
    fn damage_a_later_sync_mark_covers_stops_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let locs = write(tmp.path(), &[&["a", "b"], &["c"], &["d", "e"]]);
        // "b" was synced before the batch holding "c" was written.
        smash(tmp.path(), locs[1]);
        match replay(tmp.path()) {
            Err(OpenError::Damaged { offset, .. }) => assert_eq!(offset, locs[1].off as u64),
            other => panic!("damage to synced data was not refused: {:?}", other.map_err(|e| e.to_string())),
        }
        let rules = ReplayRules { repair: true, read_only: false };
        let opened = open_segments(tmp.path(), false).unwrap();
        let seg = opened.segments.get(opened.numbers[0]).unwrap();
        let mut keys = vec![];
        replay_segment(&seg, SEGMENT_HEADER_LEN, true, rules, |rec, _, _| keys.push(rec.body.key().unwrap().to_vec())).unwrap();
        assert_eq!(keys, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]);
    }
}
