//! Listing links newest first and searching them (`GET /api/v1/links?q=`).
//!
//! The index holds no URLs (they stay in the mapped log), so a search reads
//! the log: every record of every segment, matched against the query and,
//! only when it matches, checked against the index to be its key's newest
//! record. Segments are scanned in parallel, one thread per core, in
//! batches in the order of the answer (oldest or newest segment first),
//! and the scan stops at the first batch that fills the page; within a
//! segment, an oldest-first scan stops at the page limit. A search that
//! matches little reads the whole log once (docs/benchmarks.md has the
//! figures for 10 M links).
//!
//! Cursors are log positions, as for `Store::page`: oldest first, the
//! position after the last link returned; newest first, the position of
//! the last link returned, the next page holding what lies before it.

use memchr::memmem;

use super::handle::Store;
use super::types::{Cursor, Link, Loc};
use crate::journal::record::{self, Body};
use crate::journal::segment::{Segment, SEGMENT_HEADER_LEN};

/// Threads one search uses at most.
const MAX_THREADS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Log order: the order links were written (a change or compaction
    /// moves a link to the end).
    Oldest,
    /// Reverse log order: the latest created or changed first.
    Newest,
}

/// A code that starts with the query, or a URL that contains it (both
/// case-sensitive: codes are, and the path of a URL is).
struct Query<'q> {
    text: &'q [u8],
    finder: memmem::Finder<'q>,
}

impl Query<'_> {
    fn matches(&self, key: &[u8], url: &[u8]) -> bool {
        key.starts_with(self.text) || self.finder.find(url).is_some()
    }
}

/// What one segment gave: matching newest records in log order, each with
/// the offset just past it.
type Found = Vec<(Loc, u32)>;

impl Store {
    /// Up to `limit` live links that match `q` (all, without one) in
    /// `order` from `cursor` on, and the cursor of the next page, `None`
    /// when the log has no more.
    pub fn search(&self, q: Option<&str>, order: Order, cursor: Option<Cursor>, limit: usize) -> (Vec<Link>, Option<Cursor>) {
        let query = q.map(|q| Query { text: q.as_bytes(), finder: memmem::Finder::new(q.as_bytes()) });
        let mut segments = self.shared.segments.all();
        match (order, cursor) {
            (Order::Oldest, Some(c)) => segments.retain(|s| s.number >= c.0.seg),
            (Order::Newest, Some(c)) => segments.retain(|s| s.number <= c.0.seg),
            (_, None) => {}
        }
        if order == Order::Newest {
            segments.reverse();
        }
        // The part of each segment the cursor leaves: [from, to).
        let bounds = |seg: &Segment| match (order, cursor) {
            (Order::Oldest, Some(c)) if c.0.seg == seg.number => (c.0.off as usize, usize::MAX),
            (Order::Newest, Some(c)) if c.0.seg == seg.number => (SEGMENT_HEADER_LEN, c.0.off as usize),
            _ => (SEGMENT_HEADER_LEN, usize::MAX),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
        let mut found: Found = Vec::new();
        for batch in segments.chunks(threads) {
            let want = limit - found.len();
            let scan = |seg: &Segment| {
                let (from, to) = bounds(seg);
                self.scan(seg, from, to, query.as_ref(), order, want)
            };
            let results: Vec<Found> = if batch.len() == 1 {
                vec![scan(&batch[0])]
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = batch.iter().map(|seg| s.spawn(move || scan(seg))).collect();
                    handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
                })
            };
            for mut part in results {
                if order == Order::Newest {
                    part.reverse();
                }
                found.extend(part.into_iter().take(limit - found.len()));
            }
            if found.len() == limit {
                break;
            }
        }
        let next = (found.len() == limit).then(|| match (order, found.last()) {
            (Order::Oldest, Some(&(loc, end))) => Cursor(Loc { seg: loc.seg, off: end }),
            (_, Some(&(loc, _))) => Cursor(loc),
            (_, None) => Cursor(Loc { seg: 0, off: 0 }),
        });
        let links = found.iter().filter_map(|&(loc, _)| self.link_at(loc)).collect();
        (links, next)
    }

    /// The matching records of `seg` in `[from, to)` that are still their
    /// key's newest: the first `want` (oldest first) or the last `want`.
    /// Candidates are picked without checksums (`record::peek_put`); each
    /// one returned is decoded in full by `link_at`. Newest first, one pass
    /// forward notes every match, then the index is asked about them from
    /// the last one back until `want` are live: a plain newest-first page
    /// asks about 50 keys, not about every record of the segment.
    fn scan(&self, seg: &Segment, from: usize, to: usize, query: Option<&Query<'_>>, order: Order, want: usize) -> Found {
        let bytes = seg.bytes();
        // Not past what the log has written: a record being appended is
        // not read half-done.
        let written = self.shared.written();
        let to = match seg.number.cmp(&written.seg) {
            std::cmp::Ordering::Less => to,
            std::cmp::Ordering::Equal => to.min(written.off as usize),
            std::cmp::Ordering::Greater => return Vec::new(),
        };
        let live = |key: &[u8], here: Loc| std::str::from_utf8(key).is_ok_and(|key| self.shared.loc_of(key).ok().flatten() == Some(here));
        let mut found = Vec::new();
        let mut candidates = Vec::new();
        let mut at = from.max(SEGMENT_HEADER_LEN);
        while at < to {
            let Ok((put, len)) = record::peek_put(bytes, at) else { break };
            let here = at;
            at += record::padded(len);
            let Some((key, url)) = put else { continue };
            if query.is_some_and(|q| !q.matches(key, url)) {
                continue;
            }
            match order {
                Order::Newest => candidates.push((here as u32, at as u32)),
                Order::Oldest => {
                    let loc = Loc { seg: seg.number, off: here as u32 };
                    if live(key, loc) {
                        found.push((loc, at as u32));
                        if found.len() == want {
                            break;
                        }
                    }
                }
            }
        }
        for &(off, end) in candidates.iter().rev() {
            let loc = Loc { seg: seg.number, off };
            if let Ok((Some((key, _)), _)) = record::peek_put(bytes, off as usize) {
                if live(key, loc) {
                    found.push((loc, end));
                    if found.len() == want {
                        break;
                    }
                }
            }
        }
        if order == Order::Newest {
            found.reverse();
        }
        found
    }

    fn link_at(&self, loc: Loc) -> Option<Link> {
        let seg = self.shared.segment(loc.seg)?;
        let (rec, _) = record::decode(seg.bytes(), loc.off as usize).ok()?;
        match &rec.body {
            Body::Put(p) => Some(self.shared.link_from(p)),
            _ => None,
        }
    }
}
