//! The index rebuilt from the log after a read met a damaged index table
//! block, followed by a merge that writes a sound table.

use std::sync::atomic::Ordering;
use std::time::Instant;

use compact_str::CompactString;

use super::Writer;
use crate::journal::scan::{Found, Scan};
use crate::journal::segment::SEGMENT_HEADER_LEN;
use crate::journal::Loc;

impl Writer {
    /// A read met a damaged index table block: the index is rebuilt from
    /// the log (every put and delete, the later one of a key winning), and
    /// a merge writes a sound table. Writes wait meanwhile; redirects of
    /// keys outside the damage carry on.
    pub(super) fn rebuild_index(&mut self) {
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
        let index = crate::hash::Map::<Loc>::default();
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
}
