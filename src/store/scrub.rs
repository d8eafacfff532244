//! The scrub thread: verifies every segment, snapshot and the index table
//! at a set pace, pass after pass, so that damage at rest is found before
//! a read meets it.

use std::time::Duration;

use super::read::Shared;
use crate::journal::{scrub, snapshot};

/// Verifies every segment and snapshot, pass after pass, until `stop` is
/// dropped. Damage is logged, counted and kept for `/readyz`, once per file.
pub(super) fn scrub_loop(shared: &Shared, rate: u64, every: Duration, stop: &crossbeam_channel::Receiver<()>) {
    let wait = |d: Duration| !matches!(stop.recv_timeout(d), Err(crossbeam_channel::RecvTimeoutError::Disconnected));
    loop {
        let mut pace = scrub::Pace::new(rate);
        let segments = shared.segments.all();
        let mut found = Vec::new();
        for seg in segments {
            let written = shared.written();
            let end = match seg.number.cmp(&written.seg) {
                std::cmp::Ordering::Less => seg.len(),
                std::cmp::Ordering::Equal => written.off as usize,
                std::cmp::Ordering::Greater => continue,
            };
            let (damage, finished) = scrub::verify_segment(&seg, end, &mut pace, wait);
            crate::metrics::scrubbed(end as u64);
            found.extend(damage.into_iter().map(|d| (seg.path.clone(), "segment", d)));
            if !finished {
                return;
            }
        }
        for path in snapshot::list(&shared.dir).unwrap_or_default() {
            found.extend(scrub::verify_snapshot(&path, &mut pace).map(|d| (path, "snapshot", d)));
        }
        if let Err(d) = shared.index.table().verify() {
            shared.table_damaged(d);
        }
        for (file, kind, d) in found {
            if shared.damage.lock().contains_key(&file) {
                continue;
            }
            tracing::error!(file = %file.display(), offset = d.offset, reason = %d.reason, "scrub found damage; run `shortd check` (the link there cannot be read)");
            crate::metrics::scrub_damage(kind);
            shared.report_damage(&file, format!("byte {}: {} (found by scrub)", d.offset, d.reason));
        }
        crate::metrics::scrub_pass_done(crate::clock::now_ms() as f64 / 1000.0);
        if !wait(every) {
            return;
        }
    }
}
