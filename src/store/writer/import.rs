//! A bulk load (`shortd import`) in the writer: links keep their codes
//! (taken means refused), carry their click totals and hourly stats, and
//! go straight into the next index table, so that no merge has to follow.

use compact_str::CompactString;

use super::{now_ms, Effect, Writer, CLICKS_PER_RECORD};
use crate::analytics::rollup::Hour;
use crate::journal::record::{self, Body, Put, Record};
use crate::journal::table::{Builder, Slot};
use crate::store::types::{ImportBatch, ImportEntry, Imported, Loc, WriteError, ALIAS_ID};

impl Writer {
    /// A chunk of a bulk load: each link's code kept (taken means refused),
    /// its click total and hourly stats carried over.
    pub(super) fn import_batch(&mut self, batch: ImportBatch) -> Vec<Result<(), WriteError>> {
        let ImportBatch { records, entries, links } = batch;
        let asks_memory = self.shared.index.in_memory() > 0;
        let now = now_ms();
        let mut links = links.into_iter();
        let mut results = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            // The table is far larger than the caches: ask for the slots of
            // links a few ahead now.
            if let (Some(b), Some(ImportEntry::Record { hash, .. })) = (&self.bulk, entries.get(i + 16)) {
                b.prefetch(*hash);
            }
            results.push(match *entry {
                ImportEntry::Record { at, hash, clicks } => self.import_record(&records[at as usize..], hash, clicks, asks_memory),
                ImportEntry::Link => match links.next() {
                    Some(l) => self.import_link(l, asks_memory, now),
                    None => Err(WriteError::Unavailable("an import batch with fewer links than entries".into())),
                },
            });
        }
        let n = std::mem::take(&mut self.import_links);
        self.effects.push(Effect::LiveLinks(n as i64));
        // The totals are in the table too, but the log is what a start
        // falls back on if the table is lost.
        for chunk in std::mem::take(&mut self.import_clicks).chunks(CLICKS_PER_RECORD) {
            let entries = chunk.iter().map(|(k, n)| (k.as_bytes(), *n)).collect();
            // A failed append fails the whole batch at commit.
            let _ = self.append(Record { lsn: 0, time_ms: now, origin: 0, body: Body::Clicks(entries) });
        }
        results
    }

    /// A link of a bulk load as the put record its parser encoded.
    fn import_record(&mut self, rec: &[u8], hash: u64, clicks: u64, asks_memory: bool) -> Result<(), WriteError> {
        let malformed = || WriteError::Unavailable("an import batch's record is not an encoded put".into());
        let Ok((Some((key, _)), len)) = record::peek_put(rec, 0) else { return Err(malformed()) };
        let code = std::str::from_utf8(key).map_err(|_| malformed())?;
        if self.is_imported(code, hash, asks_memory) {
            return Err(WriteError::Taken);
        }
        let (loc, size) = self.log.append_encoded(&rec[..record::padded(len)])?;
        self.since_snapshot += 1;
        self.filed_import(code, Slot { hash, loc, clicks }, size)
    }

    /// A link of a bulk load that takes the full path: a generated code, or
    /// hourly stats to carry.
    fn import_link(&mut self, l: Imported, asks_memory: bool, now: i64) -> Result<(), WriteError> {
        let Imported { new, clicks, hours } = l;
        let Some(alias) = &new.alias else {
            let code = self.create(new)?.link.code;
            self.carry(code, clicks, hours);
            return Ok(());
        };
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let hash = self.shared.index.hash(alias);
        if self.is_imported(alias, hash, asks_memory) {
            return Err(WriteError::Taken);
        }
        let body = Body::Put(Put {
            key: alias.as_bytes(),
            url: new.url.as_bytes(),
            id: ALIAS_ID,
            created_ms: now,
            expires_ms: new.expires_ms,
            max_clicks: new.max_clicks,
            redirect: new.redirect,
            flags: if new.disabled { record::FLAG_DISABLED } else { 0 },
        });
        let (loc, size) = self.append(Record { lsn: 0, time_ms: now, origin: self.opts.origin, body })?;
        self.filed_import(alias, Slot { hash, loc, clicks }, size)?;
        self.carry(CompactString::from(alias.as_str()), 0, hours);
        Ok(())
    }

    /// Whether a bulk load already has `code`, in this batch or before.
    fn is_imported(&self, code: &str, hash: u64, asks_memory: bool) -> bool {
        // The bulk table holds the current table's keys too; what is in
        // memory is asked apart.
        self.pending.contains_key(code)
            || self.bulk.as_ref().is_some_and(|b| b.find(hash, |s| self.holds_key(code, s.loc).then_some(())).is_some())
            || asks_memory && self.shared.loc_of(code).ok().flatten().is_some()
    }

    /// An imported link's record is in the log: its slot goes straight into
    /// the bulk table, not after the commit (a batch that fails drops the
    /// whole table and stops the import: see `commit`).
    fn filed_import(&mut self, code: &str, slot: Slot, size: u64) -> Result<(), WriteError> {
        self.bulk_insert(slot)?;
        *self.live.entry(slot.loc.seg).or_default() += size;
        self.import_links += 1;
        if slot.clicks > 0 {
            self.import_clicks.push((code.into(), slot.clicks));
        }
        Ok(())
    }

    /// Whether the record at `loc`, written or still in the batch, is `code`'s.
    fn holds_key(&self, code: &str, loc: Loc) -> bool {
        match self.log.buffered(loc) {
            Some(b) => record::decode(b, 0).is_ok_and(|(rec, _)| rec.body.key() == Some(code.as_bytes())),
            None => self.shared.is_key(code, loc),
        }
    }

    fn bulk_insert(&mut self, slot: Slot) -> Result<(), WriteError> {
        let mut b = self.bulk.take().ok_or_else(|| WriteError::Unavailable("the import's index table is gone".into()))?;
        if b.len() >= b.capacity() {
            // More links than the load foresaw: room for twice as many.
            let more = b.len() * 2;
            b = b.grown(&self.opts.dir, more).map_err(|e| WriteError::Unavailable(format!("cannot grow the import's index table: {e}")))?;
        }
        b.insert(slot);
        self.bulk = Some(b);
        self.bulk_touched = true;
        self.shared.index.add_keys(1);
        Ok(())
    }

    /// Makes the bulk table, with the current table's slots, if there is none.
    pub(super) fn start_bulk(&mut self, expected: u64) -> Result<(), WriteError> {
        if self.bulk.is_some() {
            return Ok(());
        }
        let table = self.shared.index.table();
        let fail = |e: String| WriteError::Unavailable(format!("cannot make the index table for the import: {e}"));
        let mut b = Builder::create_in_memory(&self.opts.dir, table.len() + expected).map_err(|e| fail(e.to_string()))?;
        table.for_each(|s| b.insert(s)).map_err(|d| {
            self.shared.table_damaged(d);
            fail(d.to_string())
        })?;
        self.bulk = Some(b);
        Ok(())
    }

    pub(super) fn bulk_loc(&self, code: &str) -> Option<Loc> {
        let b = self.bulk.as_ref()?;
        b.find(self.shared.index.hash(code), |s| self.holds_key(code, s.loc).then_some(s.loc))
    }

    fn carry(&mut self, key: CompactString, clicks: u64, hours: Vec<(u32, Hour)>) {
        if clicks > 0 {
            self.effects.push(Effect::Clicks { key: key.clone(), total: clicks });
        }
        if !hours.is_empty() {
            self.effects.push(Effect::Hours { key, hours });
        }
    }
}
