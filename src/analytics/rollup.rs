//! Hourly rollups: one link's clicks, bots and the counted values of each
//! dimension for one hour, and the table of them all.
//!
//! Memory stays bounded per hour: while an hour is open a dimension keeps
//! up to `OPEN_FACTOR` x top-N values, later newcomers count under `other`;
//! once the hour has closed it is trimmed to its top N plus `other`.
//! An hour is kept as its log bytes (`Slot::Packed`, one allocation of
//! about 100 B) unless it has been changed more than once since it was
//! made or loaded: under uniform traffic nearly every click is a link's
//! first in its hour, and the open form costs six allocations and 300 B.
//!
//! The aggregator is the only writer; API reads take the same lock for the
//! span of one query. The store replays and snapshots the table
//! (`record::Rollup` bytes), and logs what `take_dirty` hands it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use compact_str::CompactString;
use parking_lot::Mutex;

use crate::journal::record;

/// Dimensions, in the order of their numbers in the log.
pub const DIMS: usize = 5;
pub const REFERRER: usize = 0;
pub const COUNTRY: usize = 1;
pub const DEVICE: usize = 2;
pub const BROWSER: usize = 3;
pub const OS: usize = 4;
/// The name of each dimension in the stats API.
pub const DIM_NAMES: [&str; DIMS] = ["referrers", "countries", "devices", "browsers", "os"];
/// What values past the top N are counted as.
pub const OTHER: &str = "other";
/// An open hour keeps this many times top-N values per dimension.
const OPEN_FACTOR: usize = 4;
pub const MS_PER_HOUR: i64 = 3_600_000;

pub fn hour_of(ms: i64) -> u32 {
    (ms.max(0) / MS_PER_HOUR) as u32
}

/// One link's counts for one hour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hour {
    pub clicks: u32,
    pub bots: u32,
    pub values: [Vec<(CompactString, u32)>; DIMS],
}

impl Hour {
    /// Counts `n` clicks of `value` in `dim`, keeping at most `cap` values
    /// besides `other`.
    pub fn add(&mut self, dim: usize, value: &str, n: u32, cap: usize) {
        let vals = &mut self.values[dim];
        if let Some(v) = vals.iter_mut().find(|(k, _)| k == value) {
            v.1 = v.1.saturating_add(n);
            return;
        }
        let named = vals.iter().filter(|(k, _)| k != OTHER).count();
        if named < cap || value == OTHER {
            // Most links see one value per dimension in an hour; a Vec's
            // first push would make room for four.
            if vals.is_empty() {
                vals.reserve_exact(1);
            }
            vals.push((value.into(), n));
            return;
        }
        match vals.iter_mut().find(|(k, _)| k == OTHER) {
            Some(o) => o.1 = o.1.saturating_add(n),
            None => vals.push((OTHER.into(), n)),
        }
    }

    /// Keeps the `top` most clicked values of each dimension and folds the
    /// rest into `other`.
    pub fn trim(&mut self, top: usize) {
        for vals in &mut self.values {
            let mut other: u32 = 0;
            vals.retain(|(k, n)| {
                let keep = k != OTHER;
                if !keep {
                    other = other.saturating_add(*n);
                }
                keep
            });
            vals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (_, n) in vals.drain(top.min(vals.len())..) {
                other = other.saturating_add(n);
            }
            if other > 0 {
                vals.push((OTHER.into(), other));
            }
        }
    }

    pub fn to_record<'a>(&'a self, code: &'a str, hour: u32) -> record::Rollup<'a> {
        let values = self.values.iter().enumerate().flat_map(|(d, vals)| vals.iter().map(move |(v, n)| (d as u8, v.as_bytes(), *n)));
        record::Rollup { key: code.as_bytes(), hour, clicks: self.clicks, bots: self.bots, values: values.collect() }
    }

    pub fn from_record(r: &record::Rollup<'_>) -> Hour {
        let mut h = Hour { clicks: r.clicks, bots: r.bots, ..Hour::default() };
        for (dim, value, n) in &r.values {
            if let Some(vals) = h.values.get_mut(*dim as usize) {
                vals.push((CompactString::from_utf8_lossy(value), *n));
            }
        }
        h
    }
}

type Key = (CompactString, u32);

/// An hour as `record::encode_rollup` bytes with an empty key and hour 0.
/// Shared: handing a dirty hour to the writer copies a pointer.
#[derive(Clone, Debug)]
pub struct Packed(Arc<[u8]>);

impl Packed {
    pub fn new(h: &Hour) -> Packed {
        let values: usize = h.values.iter().flatten().map(|(v, _)| 6 + v.len().min(u8::MAX as usize)).sum();
        let mut bytes = Vec::with_capacity(record::ROLLUP_FIXED + values);
        record::encode_rollup(&h.to_record("", 0), &mut bytes);
        Packed(bytes.into())
    }

    /// The rollup as `code`'s for `hour`, ready to be logged.
    pub fn to_record<'a>(&'a self, code: &'a str, hour: u32) -> record::Rollup<'a> {
        let mut r = record::decode_rollup(&self.0).map(|(r, _)| r).unwrap_or(record::Rollup {
            key: b"",
            hour: 0,
            clicks: 0,
            bots: 0,
            values: vec![],
        });
        (r.key, r.hour) = (code.as_bytes(), hour);
        r
    }

    pub fn hour(&self) -> Hour {
        Hour::from_record(&self.to_record("", 0))
    }
}

/// An hour as held in memory.
enum Slot {
    Open(Box<Hour>),
    /// A closed hour, or one changed once since it was made or loaded.
    Packed(Packed),
}

impl Slot {
    fn packed(h: &Hour) -> Slot {
        Slot::Packed(Packed::new(h))
    }

    /// The hour, decoded if it is packed.
    fn hour(&self) -> std::borrow::Cow<'_, Hour> {
        match self {
            Slot::Open(h) => std::borrow::Cow::Borrowed(h),
            Slot::Packed(p) => std::borrow::Cow::Owned(p.hour()),
        }
    }

    fn open(&mut self) -> &mut Hour {
        if let Slot::Packed(_) = self {
            *self = Slot::Open(Box::new(self.hour().into_owned()));
        }
        match self {
            Slot::Open(h) => h,
            Slot::Packed(_) => unreachable!("opened above"),
        }
    }
}

/// A link's hours, oldest first. Most links have one: a vector of one is
/// 24 B where a B-tree's first node is 240.
#[derive(Default)]
struct Hours(Vec<(u32, Slot)>);

impl Hours {
    fn find(&self, hour: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&hour, |(h, _)| *h)
    }

    fn get_mut(&mut self, hour: u32) -> Option<&mut Slot> {
        self.find(hour).ok().map(|i| &mut self.0[i].1)
    }

    fn put(&mut self, hour: u32, slot: Slot) {
        match self.find(hour) {
            Ok(i) => self.0[i].1 = slot,
            Err(i) => self.0.insert(i, (hour, slot)),
        }
    }

    /// The hours in `[from, to)`.
    fn range(&self, from: u32, to: u32) -> &[(u32, Slot)] {
        let (a, b) = (self.0.partition_point(|(h, _)| *h < from), self.0.partition_point(|(h, _)| *h < to));
        &self.0[a..b.max(a)]
    }
}

#[derive(Default)]
struct Table {
    links: HashMap<CompactString, Hours, crate::hash::Hasher>,
    dirty: HashSet<Key, crate::hash::Hasher>,
}

/// Every link's hours.
pub struct Rollups {
    table: Mutex<Table>,
    top: usize,
}

impl Default for Rollups {
    fn default() -> Self {
        Rollups::new(DEFAULT_TOP)
    }
}

/// Values kept per dimension per hour, besides `other`.
pub const DEFAULT_TOP: usize = 20;

impl Rollups {
    pub fn new(top: usize) -> Rollups {
        Rollups { table: Mutex::default(), top: top.max(1) }
    }

    /// Replay and snapshot load: the hour as logged.
    pub fn replace(&self, code: CompactString, hour: u32, h: Hour) {
        self.table.lock().links.entry(code).or_default().put(hour, Slot::packed(&h));
    }

    /// The aggregator's fold: `f` changes `code`'s hour, which is then
    /// due to be logged. `f` gets the per-dimension cap to pass to `add`.
    pub fn update(&self, code: &str, hour: u32, f: impl FnOnce(&mut Hour, usize)) {
        let cap = self.top * OPEN_FACTOR;
        let mut t = self.table.lock();
        let hours = t.links.entry(code.into()).or_default();
        match hours.get_mut(hour) {
            Some(slot) => f(slot.open(), cap),
            None => {
                let mut h = Hour::default();
                f(&mut h, cap);
                hours.put(hour, Slot::packed(&h));
            }
        }
        t.dirty.insert((code.into(), hour));
    }

    /// The hours changed since the last call, closed ones (before
    /// `current`) trimmed to the top N first.
    pub fn take_dirty(&self, current: u32) -> Vec<(CompactString, u32, Packed)> {
        let mut t = self.table.lock();
        let Table { links, dirty } = &mut *t;
        let top = self.top;
        // Sized up front, and the set drained rather than taken: under
        // uniform load these are tens of thousands of hours a second, and
        // growing them again by doubling every second was a tenth of the
        // aggregator's time.
        let taken = dirty.len();
        let mut out = Vec::with_capacity(taken);
        out.extend(dirty.drain().filter_map(|(code, hour)| {
            let slot = links.get_mut(code.as_str())?.get_mut(hour)?;
            let packed = match slot {
                Slot::Packed(p) if hour >= current => p.clone(),
                Slot::Open(h) if hour >= current => Packed::new(h),
                _ => {
                    let mut h = slot.hour().into_owned();
                    h.trim(top);
                    let p = Packed::new(&h);
                    *slot = Slot::Packed(p.clone());
                    p
                }
            };
            Some((code, hour, packed))
        }));
        // Room for about this second's hours stays; a past burst's goes.
        dirty.shrink_to(2 * taken);
        out
    }

    /// Marks hours as still to be logged (a failed append).
    pub fn mark_dirty(&self, keys: impl IntoIterator<Item = Key>) {
        self.table.lock().dirty.extend(keys);
    }

    /// Drops every hour before `first_kept`, and closes (trims, compacts
    /// and marks to be logged) open hours before `current`.
    pub fn prune(&self, first_kept: u32, current: u32) {
        let mut t = self.table.lock();
        let t = &mut *t;
        let top = self.top;
        t.links.retain(|code, hours| {
            hours.0.drain(..hours.0.partition_point(|(h, _)| *h < first_kept));
            for (hour, slot) in hours.0.iter_mut().take_while(|(h, _)| *h < current) {
                if let Slot::Open(h) = slot {
                    h.trim(top);
                    *slot = Slot::packed(h);
                    t.dirty.insert((code.clone(), *hour));
                }
            }
            !hours.0.is_empty()
        });
    }

    /// Calls `f` with every link's hours in `[from, to)`, or one link's.
    pub fn each(&self, code: Option<&str>, from: u32, to: u32, mut f: impl FnMut(&str, u32, &Hour)) {
        let t = self.table.lock();
        let mut visit = |code: &str, hours: &Hours| {
            for (hour, slot) in hours.range(from, to) {
                f(code, *hour, &slot.hour());
            }
        };
        match code {
            Some(c) => {
                if let Some(hours) = t.links.get(c) {
                    visit(c, hours);
                }
            }
            None => t.links.iter().for_each(|(c, hours)| visit(c, hours)),
        }
    }

    /// Every hour of every link as it is logged, for a snapshot.
    pub fn for_all(&self, mut f: impl FnMut(&str, record::Rollup<'_>)) {
        let t = self.table.lock();
        for (code, hours) in &t.links {
            for (hour, slot) in &hours.0 {
                let rec = match slot {
                    Slot::Open(h) => h.to_record(code, *hour),
                    Slot::Packed(p) => p.to_record(code, *hour),
                };
                f(code, rec);
            }
        }
    }

    /// Every hour of one link (export).
    pub fn of(&self, code: &str) -> Vec<(u32, Hour)> {
        self.table
            .lock()
            .links
            .get(code)
            .map(|hours| hours.0.iter().map(|(k, v)| (*k, v.hour().into_owned())).collect())
            .unwrap_or_default()
    }

    pub fn clear(&self) {
        let mut t = self.table.lock();
        t.links.clear();
        t.dirty.clear();
    }

    /// Links and hours held, for the memory figures.
    pub fn size(&self) -> (usize, usize) {
        let t = self.table.lock();
        (t.links.len(), t.links.values().map(|h| h.0.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_values_count_as_other_and_trim_keeps_the_top() {
        let mut h = Hour::default();
        for (i, n) in [5u32, 1, 9, 3].iter().enumerate() {
            h.add(REFERRER, &format!("r{i}"), *n, 3);
        }
        assert_eq!(h.values[REFERRER].len(), 4);
        assert_eq!(h.values[REFERRER][3], (CompactString::from(OTHER), 3));
        h.trim(2);
        let got: Vec<_> = h.values[REFERRER].iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(got, [("r2", 9), ("r0", 5), (OTHER, 4)]);
        let rec = h.to_record("abc", 7);
        assert_eq!(Hour::from_record(&rec), h);
    }

    #[test]
    fn packed_and_open_hours_log_and_read_back_alike() {
        let r = Rollups::new(20);
        let now = hour_of(crate::clock::now_ms());
        let click = |h: &mut Hour, cap: usize| {
            h.clicks += 1;
            h.add(REFERRER, "a.example", 1, cap);
            h.add(OS, "linux", 1, cap);
        };
        r.update("once", now, click);
        r.update("twice", now, click);
        r.update("twice", now, click);
        let mut logged: Vec<(String, u32, Hour)> = r
            .take_dirty(now)
            .iter()
            .map(|(code, hour, p)| {
                let rec = p.to_record(code, *hour);
                (String::from_utf8(rec.key.to_vec()).unwrap(), rec.hour, Hour::from_record(&rec))
            })
            .collect();
        logged.sort_by(|a, b| a.0.cmp(&b.0));
        let one = |n: u32| Hour {
            clicks: n,
            values: [vec![("a.example".into(), n)], vec![], vec![], vec![], vec![("linux".into(), n)]],
            ..Hour::default()
        };
        assert_eq!(logged, vec![("once".into(), now, one(1)), ("twice".into(), now, one(2))]);
        assert_eq!(r.of("once"), vec![(now, one(1))]);
        assert!(r.take_dirty(now).is_empty(), "taken hours stay dirty");
    }

    #[test]
    fn closed_hours_read_back_as_they_were_and_reopen() {
        let r = Rollups::new(2);
        let now = hour_of(crate::clock::now_ms());
        for v in ["a", "b", "c", "a"] {
            r.update("abc", now - 5, |h, cap| {
                h.clicks += 1;
                h.add(BROWSER, v, 1, cap);
            });
        }
        r.prune(0, now);
        let mut seen = vec![];
        r.each(Some("abc"), 0, now, |_, hour, h| seen.push((hour, h.clicks, h.values[BROWSER].clone())));
        let want: Vec<(CompactString, u32)> = vec![("a".into(), 2), ("b".into(), 1), (OTHER.into(), 1)];
        assert_eq!(seen, vec![(now - 5, 4, want)]);
        r.update("abc", now - 5, |h, _| h.bots += 1);
        assert_eq!(r.of("abc")[0].1.bots, 1);
        assert_eq!(r.take_dirty(now).len(), 1);
    }
}
