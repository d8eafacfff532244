//! `shortd import`: a JSON lines file (the export format, or create
//! requests) into a data directory, at the speed of the disk.
//!
//! The file is read in chunks cut at line ends; parser threads turn each
//! chunk into links, and the chunks go to the store's writer in file order,
//! one batch each, so that the first of two lines with the same code wins
//! and errors name their lines. A line in the common shape
//! (`input::export_line`) becomes its put record right here, with no copy
//! of its strings, and the writer only numbers it and files it; any other
//! line takes the full `input::new_link` and the writer's create path.
//! Click totals and hourly stats come along. Periodic merges are off while
//! loading: the store's close writes one index table at the end.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::analytics::rollup::{hour_of, Hour, DIM_NAMES};
use crate::config::{Durability, LinkLimits};
use crate::input;
use crate::journal::record::{self, Body, Put, Record};
use crate::lists::Blocklist;
use crate::store::{ImportBatch, ImportEntry, Imported, Store, StoreOptions, WriteError, ALIAS_ID};

const CHUNK: usize = 1 << 20;
/// Batches handed to the writer and not answered yet.
const IN_FLIGHT: usize = 8;

type Reply = tokio::sync::oneshot::Receiver<Vec<Result<(), WriteError>>>;

/// A parsed chunk: its links with their line numbers, and refused lines.
struct Parsed {
    /// Bytes of the chunk.
    bytes: usize,
    batch: ImportBatch,
    /// The line of each of `batch.entries`.
    lines: Vec<usize>,
    refused: Vec<(usize, String)>,
}

pub fn run(dir: &Path, file: &Path, limits: &LinkLimits) -> Result<(), String> {
    let mut size = 0;
    let mut input: Box<dyn Read + Send> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        size = f.metadata().map_or(0, |m| m.len());
        Box::new(f)
    };
    let mut opts = StoreOptions::new(dir);
    opts.durability = Durability::Never;
    opts.snapshot_records = u64::MAX;
    opts.snapshot_interval = Duration::MAX;
    // A store being written from nothing has nothing to verify yet.
    opts.scrub_rate = 0;
    let store = Store::open(opts).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let max_url_bytes = limits.max_url_bytes;
    // As many parsers as cores: they take most of the work, and the writer
    // (the part that cannot be split) shares a core with one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(u64, usize, Vec<u8>)>(threads * 2);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<(u64, Parsed)>(threads * 2);
    let mut totals = Totals::default();
    let read_error = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (work_rx, done_tx, store) = (work_rx.clone(), done_tx.clone(), &store);
            scope.spawn(move || {
                let blocklist = Blocklist::default();
                let rules = input::Rules { max_url_bytes, own_host: None, blocklist: &blocklist };
                for (n, first_line, chunk) in work_rx {
                    if done_tx.send((n, parse_chunk(&chunk, first_line, &rules, &|key| store.key_hash(key)))).is_err() {
                        return;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        // The reader runs here; a second thread puts the chunks in order
        // and hands them to the writer.
        let feeder = scope.spawn(|| {
            let mut waiting = BTreeMap::new();
            let mut next = 0u64;
            let mut inflight = std::collections::VecDeque::new();
            let mut t = Totals::default();
            // The index table is sized from the first chunk's line length
            // (it grows if the guess falls short).
            let mut expected = 0u64;
            for (n, parsed) in done_rx {
                waiting.insert(n, parsed);
                while let Some(parsed) = waiting.remove(&next) {
                    next += 1;
                    let refused = parsed.refused.len();
                    t.refused(parsed.refused);
                    if parsed.lines.is_empty() {
                        continue;
                    }
                    if expected == 0 {
                        let per_line = parsed.bytes as u64 / (parsed.lines.len() + refused).max(1) as u64;
                        expected = (size / per_line.max(1)).max(1 << 16) + (size / per_line.max(1)) / 32;
                    }
                    while inflight.len() >= IN_FLIGHT {
                        t.settle(inflight.pop_front().expect("not empty"));
                    }
                    match store.import_queued(parsed.batch, expected) {
                        Ok(rx) => inflight.push_back((parsed.lines, rx)),
                        Err(e) => t.refused(parsed.lines.into_iter().map(|l| (l, e.to_string())).collect()),
                    }
                }
            }
            for pending in inflight {
                t.settle(pending);
            }
            t
        });
        let read_error = read_chunks(&mut input, |n, first_line, chunk| work_tx.send((n, first_line, chunk)).is_ok());
        drop(work_tx);
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "import: file read");
        totals = feeder.join().expect("the import's feeder panicked");
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "import: every batch answered");
        read_error
    });
    store.persist_rollups(u32::MAX);
    store.close();
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "import: store closed");
    read_error.map_err(|e| format!("reading {}: {e}", file.display()))?;
    let secs = started.elapsed().as_secs_f64();
    totals.report_unlisted();
    eprintln!(
        "imported {} links in {secs:.1}s ({:.0}/s); {} lines refused",
        totals.created,
        totals.created as f64 / secs.max(1e-9),
        totals.failed
    );
    if totals.failed > 0 && totals.created == 0 {
        return Err("nothing was imported".into());
    }
    Ok(())
}

/// Refused lines named one by one on standard error; past these, only a
/// count by reason (a second import of a 20 M-line file refuses them all).
const LISTED_REFUSALS: u64 = 100;

#[derive(Default)]
struct Totals {
    created: u64,
    failed: u64,
    /// Refusals past the listed ones, by reason.
    unlisted: std::collections::HashMap<String, u64>,
}

impl Totals {
    fn refused(&mut self, lines: Vec<(usize, String)>) {
        for (line, e) in lines {
            self.failed += 1;
            if self.failed <= LISTED_REFUSALS {
                eprintln!("line {line}: {e}");
            } else {
                *self.unlisted.entry(e).or_default() += 1;
            }
        }
    }

    /// The refusals that were not listed, most common reason first.
    fn report_unlisted(&self) {
        let mut reasons: Vec<_> = self.unlisted.iter().collect();
        reasons.sort_unstable_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown = reasons.len().min(10);
        for (reason, n) in &reasons[..shown] {
            eprintln!("{n} more lines: {reason}");
        }
        let rest: u64 = reasons[shown..].iter().map(|(_, n)| **n).sum();
        if rest > 0 {
            eprintln!("{rest} more lines for {} other reasons", reasons.len() - shown);
        }
    }

    fn settle(&mut self, (lines, rx): (Vec<usize>, Reply)) {
        match rx.blocking_recv() {
            Ok(results) => {
                for (line, r) in lines.into_iter().zip(results) {
                    match r {
                        Ok(()) => self.created += 1,
                        Err(e) => self.refused(vec![(line, e.to_string())]),
                    }
                }
            }
            Err(_) => self.refused(lines.into_iter().map(|l| (l, "the writer has stopped".to_string())).collect()),
        }
    }
}

/// Reads `input` in chunks that end at a line end, numbered, with the
/// number of their first line; stops early when `send` says so.
fn read_chunks(input: &mut dyn Read, mut send: impl FnMut(u64, usize, Vec<u8>) -> bool) -> std::io::Result<()> {
    let (mut n, mut line) = (0u64, 1usize);
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = std::mem::take(&mut carry);
        buf.reserve(CHUNK);
        // Into the spare capacity, which `read_to_end` does not zero first.
        let got = Read::take(&mut *input, CHUNK as u64).read_to_end(&mut buf)?;
        if got == 0 {
            if !buf.is_empty() {
                send(n, line, buf);
            }
            return Ok(());
        }
        let Some(end) = memchr::memrchr(b'\n', &buf) else {
            carry = buf;
            continue;
        };
        carry = buf[end + 1..].to_vec();
        buf.truncate(end + 1);
        let lines = memchr::memchr_iter(b'\n', &buf).count();
        if !send(n, line, buf) {
            return Ok(());
        }
        n += 1;
        line += lines;
    }
}

fn parse_chunk(chunk: &[u8], first_line: usize, rules: &input::Rules<'_>, key_hash: &dyn Fn(&str) -> u64) -> Parsed {
    let mut out = Parsed { bytes: chunk.len(), batch: ImportBatch::default(), lines: Vec::new(), refused: Vec::new() };
    let b = &mut out.batch;
    b.records.reserve(chunk.len());
    b.entries.reserve(chunk.len() / 128);
    let now = crate::clock::now_ms();
    let mut start = 0;
    for (i, end) in memchr::memchr_iter(b'\n', chunk).chain(std::iter::once(chunk.len())).enumerate() {
        let line = first_line + i;
        let raw = &chunk[start..end];
        start = (end + 1).min(chunk.len());
        let Ok(text) = std::str::from_utf8(raw) else {
            out.refused.push((line, "not UTF-8".into()));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match input::export_line(text, rules, now) {
            Some(e) if e.alias.is_some() => {
                let key = e.alias.as_deref().unwrap_or_default();
                let body = Body::Put(Put {
                    key: key.as_bytes(),
                    url: e.url.as_bytes(),
                    id: ALIAS_ID,
                    created_ms: now,
                    expires_ms: e.expires_ms,
                    max_clicks: e.max_clicks,
                    redirect: e.redirect,
                    flags: if e.disabled { record::FLAG_DISABLED } else { 0 },
                });
                let at = b.records.len() as u32;
                // The log sums it when it numbers it.
                record::encode_unsealed(&Record { lsn: 0, time_ms: now, origin: 0, body }, &mut b.records);
                b.entries.push(ImportEntry::Record { at, hash: key_hash(key), clicks: e.clicks });
            }
            Some(e) => {
                b.links.push(Imported { new: e.to_new_link(), clicks: e.clicks, hours: Vec::new() });
                b.entries.push(ImportEntry::Link);
            }
            None => match general_line(text, rules, now) {
                Ok(l) => {
                    b.links.push(l);
                    b.entries.push(ImportEntry::Link);
                }
                Err(e) => {
                    out.refused.push((line, e));
                    continue;
                }
            },
        }
        out.lines.push(line);
    }
    out
}

/// Any line the common shape does not cover: the full rules, with their
/// exact errors.
fn general_line(text: &str, rules: &input::Rules<'_>, now: i64) -> Result<Imported, String> {
    let o = serde_json::from_str::<Map<String, Value>>(text).map_err(|e| e.to_string())?;
    let new = input::new_link(&o, rules, now, input::Source::Import).map_err(|e| e.to_string())?;
    let hours = o.get("stats").map(parse_hours).transpose()?.unwrap_or_default();
    Ok(Imported { new, clicks: o.get("clicks").and_then(Value::as_u64).unwrap_or(0), hours })
}

/// The `stats` of an export line, back into rollup hours.
fn parse_hours(v: &Value) -> Result<Vec<(u32, Hour)>, String> {
    let bad = |what: &str| format!("stats: {what}");
    let list = v.as_array().ok_or_else(|| bad("must be a list of hours"))?;
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let at = e["hour"].as_str().ok_or_else(|| bad("each hour needs an RFC 3339 \"hour\""))?;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).map_err(|_| bad("bad \"hour\""))?;
        let count = |k: &str| e[k].as_u64().map(|n| n.min(u32::MAX as u64) as u32).unwrap_or(0);
        let mut h = Hour { clicks: count("clicks"), bots: count("bots"), ..Hour::default() };
        for (d, name) in DIM_NAMES.iter().enumerate() {
            for (k, n) in e[*name].as_object().into_iter().flatten() {
                h.values[d].push((k.as_str().into(), n.as_u64().unwrap_or(0).min(u32::MAX as u64) as u32));
            }
        }
        out.push((hour_of((at.unix_timestamp_nanos() / 1_000_000) as i64), h));
    }
    Ok(out)
}
