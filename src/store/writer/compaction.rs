//! Compaction: a sealed segment mostly of dead records is copied out a
//! chunk per writer round (only records the index still points at), then
//! removed after the next snapshot; a segment whose damage holds a live
//! link's only record is kept.

use std::time::Instant;

use compact_str::CompactString;

use super::{Compaction, Effect, Writer, COMPACT_CHUNK};
use crate::journal::record::Record;
use crate::journal::scan::{Found, Scan};
use crate::journal::segment::SEGMENT_HEADER_LEN;
use crate::journal::Loc;
use crate::metrics as m;

impl Writer {
    pub(super) fn compact_step(&mut self) {
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
}
