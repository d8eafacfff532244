//! Snapshots: when one is due the writer freezes the index changes and a
//! thread merges them into the next index table and writes the snapshot
//! naming it; when it is done the writer installs the table and removes
//! what the snapshot covers (older snapshots and tables, drained segments).

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use compact_str::CompactString;

use super::{now_ms, SnapshotJob, Writer};
use crate::journal::record;
use crate::journal::snapshot::{SnapshotMeta, SnapshotWriter};
use crate::journal::table::{self, Builder, Slot, Table};
use crate::metrics as m;
use crate::store::index::Frozen;
use crate::store::read::Shared;
use crate::store::types::{Loc, IDEMPOTENCY_WINDOW_MS};

impl Writer {
    pub(super) fn start_snapshot(&mut self) {
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

    pub(super) fn snapshot_done(&mut self, job: SnapshotJob) {
        match job.handle.join() {
            Ok(Ok((path, table))) => {
                m::snapshot_seconds(job.started.elapsed());
                tracing::info!(file = %path.display(), keys = table.len(), seconds = job.started.elapsed().as_secs_f64(), "snapshot and index table written");
                let table_path = table.path.clone();
                self.shared.index.install(table);
                if !self.stopping {
                    self.prune_clicks();
                }
                if let Ok(all) = crate::journal::snapshot::list(&self.opts.dir) {
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
