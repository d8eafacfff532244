//! Opening a data directory's log: the lock, leftovers of interrupted
//! writes, the segments, and replay with the torn-tail rules.
//!
//! Rules (also in docs/storage.md):
//! - A torn or corrupt tail of the newest segment (a crash mid-write, garbage
//!   after the last good record, preallocation zeros), with no intact record
//!   after it, is cut off: logged, overwritten with zeros, and the log
//!   continues after the last record before it.
//! - Any other damage (in an older segment, or followed by intact records)
//!   stops the start with the file and offset, unless `repair` is set; then
//!   every intact record is kept and each skipped range is reported.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, DecodeError, Record};
use super::scan::next_record;
use super::segment::{self, Loc, Segment, Segments};

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
        let resume = next_record(data, at);
        // Intact records after the damage mean it is not a torn tail:
        // they may be acknowledged links, so never cut them silently.
        let mid_log = resume.is_some();
        if newest && !mid_log && !rules.read_only {
            let cut = data.len().saturating_sub(at);
            tracing::warn!(file = %seg.path.display(), offset = at, bytes = cut, reason = %problem, "cutting off a torn or corrupt tail");
            zero_tail(&seg.path, at as u64, data.len() as u64).map_err(io_err(&seg.path))?;
            return Ok(at);
        }
        if newest && !mid_log {
            return Ok(at);
        }
        if !rules.repair {
            return Err(OpenError::Damaged { file: seg.path.clone(), offset: at as u64, reason: problem });
        }
        let to = resume.unwrap_or(data.len());
        tracing::warn!(file = %seg.path.display(), from = at, to, reason = %problem, "repair: skipping a damaged range");
        match resume {
            Some(o) => at = o,
            None => return Ok(at),
        }
    }
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
