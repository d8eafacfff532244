//! Verifying files at rest: every record of a segment, every snapshot.
//!
//! A sealed segment is read only when compaction copies it or a start
//! replays it, and a start that loads a snapshot replays none of them, so
//! a flipped bit in an old segment could sleep until the day its link is
//! read or compacted. The store runs these checks in the background, paced
//! so that the scrub's page-cache and disk traffic stays small next to the
//! redirects'; `shortd check` runs them offline.

use std::path::Path;
use std::time::{Duration, Instant};

use super::scan::{Found, Scan};
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::snapshot::{Snapshot, SnapshotError};

/// Bytes verified between two looks at the pace.
const STEP_BYTES: usize = 1 << 20;

/// Keeps a scrub at or below `bytes_per_second` by sleeping between steps.
pub struct Pace {
    bytes_per_second: u64,
    started: Instant,
    done: u64,
}

impl Pace {
    pub fn new(bytes_per_second: u64) -> Pace {
        Pace { bytes_per_second: bytes_per_second.max(1), started: Instant::now(), done: 0 }
    }

    /// Counts `bytes` as verified and returns how long to wait before more.
    pub fn took(&mut self, bytes: usize) -> Duration {
        self.done += bytes as u64;
        let due = Duration::from_secs_f64(self.done as f64 / self.bytes_per_second as f64);
        due.saturating_sub(self.started.elapsed())
    }
}

/// Damage in one file: where it starts and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// Walks `seg` up to `end`, calling `wait` with the pause the pace asks
/// for after each step (the caller sleeps, or stops when told to quit:
/// `wait` returns false). Returns the damaged ranges found, and whether the
/// walk ran to the end.
pub fn verify_segment(seg: &Segment, end: usize, pace: &mut Pace, mut wait: impl FnMut(Duration) -> bool) -> (Vec<Damage>, bool) {
    let mut damage = Vec::new();
    let mut since_pause = 0usize;
    let mut last = SEGMENT_HEADER_LEN;
    for found in Scan::new(seg.bytes(), SEGMENT_HEADER_LEN, end) {
        let at = match found {
            Found::Record { at, len, .. } => at + len,
            Found::Damage { at, reason, resume } => {
                damage.push(Damage { offset: at as u64, reason });
                resume.unwrap_or(end)
            }
        };
        since_pause += at.saturating_sub(last);
        last = at;
        if since_pause >= STEP_BYTES {
            let pause = pace.took(since_pause);
            since_pause = 0;
            if !wait(pause) {
                return (damage, false);
            }
        }
    }
    pace.took(since_pause);
    (damage, true)
}

/// Reads and checks one snapshot file; a file already removed (a newer
/// snapshot replaced it) is no damage.
pub fn verify_snapshot(path: &Path, pace: &mut Pace) -> Option<Damage> {
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    let result = Snapshot::read(path);
    pace.took(bytes);
    match result {
        Ok(_) => None,
        Err(SnapshotError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Damage { offset: 0, reason: e.to_string() }),
    }
}
