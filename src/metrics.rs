//! Every metric shortd exports, named once, and the `/metrics` renderer.
//!
//! Most metrics go through the `metrics` crate and its Prometheus exporter.
//! The redirect path is the exception: each worker thread owns a cache-line
//! aligned block of plain atomic counters that only it writes, so counting a
//! redirect touches no line another core writes. A scrape folds the blocks
//! into the exporter (`absolute`) and renders the redirect latency histogram
//! itself, since the exporter's histograms record one sample at a time
//! through a shared queue.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

pub const HTTP_REQUESTS: &str = "shortd_http_requests_total";
pub const REDIRECT_SECONDS: &str = "shortd_redirect_duration_seconds";
pub const CACHE_HITS: &str = "shortd_cache_hits_total";
pub const CACHE_MISSES: &str = "shortd_cache_misses_total";
pub const CACHE_COALESCED: &str = "shortd_cache_coalesced_waits_total";
pub const COLD_LOADS: &str = "shortd_redirect_cold_loads_total";
pub const CACHE_EVICTIONS: &str = "shortd_cache_evictions_total";
pub const CACHE_ENTRIES: &str = "shortd_cache_entries";
pub const CACHE_BYTES: &str = "shortd_cache_bytes";
pub const STORE_APPENDED: &str = "shortd_store_appended_bytes_total";
pub const STORE_COMMITS: &str = "shortd_store_commits_total";
pub const STORE_BATCH: &str = "shortd_store_commit_batch_size";
pub const FSYNC_SECONDS: &str = "shortd_store_fsync_duration_seconds";
pub const SEGMENTS: &str = "shortd_store_segments";
pub const ROLL_SECONDS: &str = "shortd_store_roll_duration_seconds";
pub const SNAPSHOT_SECONDS: &str = "shortd_store_snapshot_duration_seconds";
pub const COMPACTION_SECONDS: &str = "shortd_store_compaction_duration_seconds";
pub const KEY_MISMATCHES: &str = "shortd_store_key_mismatches_total";
pub const DAMAGED_SEGMENTS: &str = "shortd_store_damaged_segments";
pub const COMPACTION_REFUSED: &str = "shortd_store_compaction_refused_total";
pub const TAIL_CUTS: &str = "shortd_store_tail_cuts_total";
pub const TAIL_CUT_RECORDS: &str = "shortd_store_tail_cut_records_total";
pub const SCRUB_BYTES: &str = "shortd_store_scrub_bytes_total";
pub const SCRUB_PASSES: &str = "shortd_store_scrub_passes_total";
pub const SCRUB_DAMAGE: &str = "shortd_store_scrub_damage_found_total";
pub const SCRUB_LAST_PASS: &str = "shortd_store_scrub_last_pass_timestamp_seconds";
pub const LINKS: &str = "shortd_links";
pub const CLICKS: &str = "shortd_clicks_total";
pub const LINKS_CREATED: &str = "shortd_links_created_total";
pub const PEER_REQUESTS: &str = "shortd_peer_requests_total";
pub const PEER_FAILURES: &str = "shortd_peer_failures_total";
pub const PEER_SECONDS: &str = "shortd_peer_request_duration_seconds";
pub const FORWARDED_READS: &str = "shortd_cluster_forwarded_reads_total";
pub const STALE_READS: &str = "shortd_cluster_stale_reads_total";
pub const RAFT_PROPOSALS: &str = "shortd_raft_proposals_total";
pub const RAFT_FAILED_PROPOSALS: &str = "shortd_raft_failed_proposals_total";
pub const RAFT_COMMIT_SECONDS: &str = "shortd_raft_commit_seconds";
pub const BOTS: &str = "shortd_bot_visits_total";
pub const BREAKDOWNS_DROPPED: &str = "shortd_analytics_dropped_breakdowns_total";
pub const ANALYTICS_LAG: &str = "shortd_analytics_lag_seconds";
pub const GEOIP_AGE: &str = "shortd_geoip_database_age_seconds";
pub const CONFIG_RELOADS: &str = "shortd_config_reloads_total";

/// Redirect-path outcomes counted per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    S301,
    S302,
    S307,
    S308,
    NotFound,
    Gone,
}
const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::S301, "301"),
    (Outcome::S302, "302"),
    (Outcome::S307, "307"),
    (Outcome::S308, "308"),
    (Outcome::NotFound, "404"),
    (Outcome::Gone, "410"),
];

impl Outcome {
    pub fn for_status(status: u16) -> Outcome {
        match status {
            301 => Outcome::S301,
            307 => Outcome::S307,
            308 => Outcome::S308,
            404 => Outcome::NotFound,
            410 => Outcome::Gone,
            _ => Outcome::S302,
        }
    }
}

/// Upper bounds of the redirect latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 14] = [2.5e-7, 5e-7, 1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 25e-3];

/// Counters one worker thread writes and a scrape reads.
/// One redirect in this many is timed for the latency histogram.
pub const LATENCY_SAMPLE: u64 = 16;

#[repr(align(128))]
#[derive(Default)]
pub struct WorkerStats {
    outcomes: [AtomicU64; 6],
    sampler: AtomicU64,
    latency: [AtomicU64; 15],
    latency_sum_ns: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub clicks: AtomicU64,
}

/// Adds one to a counter that only this thread writes: a plain load and
/// store, with no locked read-modify-write.
#[inline]
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl WorkerStats {
    /// True for one call in `LATENCY_SAMPLE`.
    #[inline]
    pub fn sample_latency(&self) -> bool {
        bump(&self.sampler);
        self.sampler.load(Ordering::Relaxed) % LATENCY_SAMPLE == 0
    }

    /// Counts a redirect, and its latency when it was sampled (weighted by
    /// the sampling rate, so the histogram's count tracks the request count).
    #[inline]
    pub fn redirect(&self, outcome: Outcome, took: Option<Duration>) {
        bump(&self.outcomes[outcome as usize]);
        let Some(took) = took else { return };
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        let b = &self.latency[bucket];
        b.store(b.load(Ordering::Relaxed) + LATENCY_SAMPLE, Ordering::Relaxed);
        let s = &self.latency_sum_ns;
        s.store(s.load(Ordering::Relaxed) + took.as_nanos() as u64 * LATENCY_SAMPLE, Ordering::Relaxed);
    }
}

/// The exporter handle plus every worker's counters.
pub struct Metrics {
    handle: PrometheusHandle,
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();

/// Installs the global recorder once per process (the metrics recorder is
/// the one global the style guide allows) and returns its handle.
pub fn install() -> Arc<Metrics> {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[1e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 1.0, 5.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STORE_BATCH.into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe();
            Arc::new(Metrics { handle, workers: Mutex::new(Vec::new()) })
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status");
    describe_counter!(CACHE_HITS, "Redirects answered from the cache");
    describe_counter!(CACHE_MISSES, "Redirects that had to read the store");
    describe_counter!(CACHE_COALESCED, "Cache misses that waited for another request's load of the same key");
    describe_counter!(COLD_LOADS, "Redirect cache misses whose index block or record was not in the page cache, read on a blocking thread");
    describe_counter!(CACHE_EVICTIONS, "Cache entries evicted to stay within bounds");
    describe_gauge!(CACHE_ENTRIES, "Entries in the redirect cache");
    describe_gauge!(CACHE_BYTES, Unit::Bytes, "Bytes held by the redirect cache");
    describe_counter!(STORE_APPENDED, Unit::Bytes, "Bytes appended to the log");
    describe_counter!(STORE_COMMITS, "Group commits (one write, at most one fsync each)");
    describe_histogram!(STORE_BATCH, "Requests per group commit");
    describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "Time spent in fdatasync");
    describe_histogram!(
        ROLL_SECONDS,
        Unit::Seconds,
        "Time the writer spent moving to a new log segment (sync of the old one excluded; writes wait meanwhile)"
    );
    describe_gauge!(SEGMENTS, "Log segment files");
    describe_histogram!(SNAPSHOT_SECONDS, Unit::Seconds, "Time to write a snapshot");
    describe_histogram!(COMPACTION_SECONDS, Unit::Seconds, "Time per compaction step");
    describe_counter!(KEY_MISMATCHES, "Lookups whose index entry led to another key's record (answered as a miss)");
    describe_gauge!(DAMAGED_SEGMENTS, "Log segments with damage found by the scrub or by compaction");
    describe_counter!(COMPACTION_REFUSED, "Compactions that kept a damaged segment because a link's only record lies in the damage");
    describe_counter!(TAIL_CUTS, "Starts that cut off a log tail no completed sync covered (a crash or power loss mid-write)");
    describe_counter!(
        TAIL_CUT_RECORDS,
        "Intact but never synced records dropped with such tails (never acknowledged under durability always)"
    );
    describe_counter!(SCRUB_BYTES, Unit::Bytes, "Bytes of segments and snapshots verified by the background scrub");
    describe_counter!(SCRUB_PASSES, "Completed scrub passes over every segment and snapshot");
    describe_counter!(SCRUB_DAMAGE, "Damaged files found by the scrub, by kind (segment, snapshot)");
    describe_gauge!(SCRUB_LAST_PASS, Unit::Seconds, "Unix time the last scrub pass finished");
    describe_gauge!(LINKS, "Live links in the store");
    describe_counter!(CLICKS, "GET redirects answered, people and bots alike (bots alone: shortd_bot_visits_total)");
    describe_counter!(LINKS_CREATED, "Links created");
    describe_counter!(PEER_REQUESTS, "Requests to peer nodes, by operation");
    describe_counter!(PEER_FAILURES, "Peer requests that failed to connect, timed out or were skipped by an open circuit breaker");
    describe_histogram!(PEER_SECONDS, Unit::Seconds, "Time for a peer request, by operation");
    describe_counter!(FORWARDED_READS, "Reads of links held elsewhere, fetched from a peer");
    describe_counter!(STALE_READS, "Redirects answered from this node's replica because no leader or voter answered");
    describe_counter!(RAFT_PROPOSALS, "Writes proposed to a partition's Raft group from this node");
    describe_counter!(RAFT_FAILED_PROPOSALS, "Proposals that found no leader to commit them in time");
    describe_histogram!(RAFT_COMMIT_SECONDS, "Time from proposal to the applied answer, forwarding included");
    describe_counter!(BOTS, "Redirects to bots and link-preview agents (not counted as clicks)");
    describe_counter!(BREAKDOWNS_DROPPED, "Clicks counted without their breakdown because the worker's analytics buffer was full");
    describe_gauge!(ANALYTICS_LAG, Unit::Seconds, "Age of the oldest click in the last batch the analytics aggregator folded");
    describe_gauge!(GEOIP_AGE, Unit::Seconds, "Age of the loaded GeoIP database, from its build time");
    describe_counter!(CONFIG_RELOADS, "SIGHUP reloads done (key file, blocklist, GeoIP database), whether or not each file could be read");
}

impl Metrics {
    pub fn register_worker(&self) -> Arc<WorkerStats> {
        let stats = Arc::new(WorkerStats::default());
        self.workers.lock().push(stats.clone());
        stats
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, links: u64, cache_entries: usize, cache_bytes: usize) -> String {
        let workers = self.workers.lock().clone();
        let sum = |f: &dyn Fn(&WorkerStats) -> &AtomicU64| workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum::<u64>();
        for (outcome, status) in OUTCOMES {
            let n = sum(&|w| &w.outcomes[outcome as usize]);
            if n > 0 {
                counter!(HTTP_REQUESTS, "route" => "redirect", "status" => status).absolute(n);
            }
        }
        counter!(CACHE_HITS).absolute(sum(&|w| &w.cache_hits));
        counter!(CACHE_MISSES).absolute(sum(&|w| &w.cache_misses));
        counter!(CLICKS).absolute(sum(&|w| &w.clicks));
        gauge!(LINKS).set(links as f64);
        gauge!(CACHE_ENTRIES).set(cache_entries as f64);
        gauge!(CACHE_BYTES).set(cache_bytes as f64);
        counter!(CACHE_COALESCED).increment(0);
        counter!(COLD_LOADS).increment(0);
        counter!(CACHE_EVICTIONS).increment(0);
        counter!(CONFIG_RELOADS).increment(0);
        let mut out = self.handle.render();
        let _ = writeln!(out, "# HELP {REDIRECT_SECONDS} Time to answer a redirect, from parsed request to response (one in {LATENCY_SAMPLE} timed, weighted)");
        let _ = writeln!(out, "# TYPE {REDIRECT_SECONDS} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += sum(&|w| &w.latency[i]);
            let _ = writeln!(out, "{REDIRECT_SECONDS}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += sum(&|w| &w.latency[LATENCY_BOUNDS.len()]);
        let _ = writeln!(out, "{REDIRECT_SECONDS}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{REDIRECT_SECONDS}_sum {}", sum(&|w| &w.latency_sum_ns) as f64 / 1e9);
        let _ = writeln!(out, "{REDIRECT_SECONDS}_count {cumulative}");
        out
    }
}

thread_local! {
    /// This thread's handles to the request counters it has counted on, so
    /// that a request costs one short scan instead of a registry look-up
    /// (hashing the name and both labels). At most routes x status labels.
    static REQUEST_COUNTERS: RefCell<Vec<(&'static str, &'static str, Counter)>> = const { RefCell::new(Vec::new()) };
}

/// The handle of a counter without labels, looked up once the recorder is
/// installed (a handle taken before would count nowhere, forever).
fn cached(cell: &'static OnceLock<Counter>, name: &'static str) -> Counter {
    if METRICS.get().is_none() {
        return counter!(name);
    }
    cell.get_or_init(|| counter!(name)).clone()
}

pub fn api_request(route: &'static str, status: u16) {
    let status = status_label(status);
    if METRICS.get().is_none() {
        counter!(HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
        return;
    }
    REQUEST_COUNTERS.with_borrow_mut(|known| match known.iter().find(|(r, s, _)| *r == route && *s == status) {
        Some((_, _, c)) => c.increment(1),
        None => {
            let c = counter!(HTTP_REQUESTS, "route" => route, "status" => status);
            c.increment(1);
            known.push((route, status, c));
        }
    });
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        410 => "410",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        507 => "507",
        _ => "other",
    }
}

pub fn store_appended(bytes: u64) {
    counter!(STORE_APPENDED).increment(bytes);
}

pub fn commit_batch(size: usize) {
    static COMMITS: OnceLock<Counter> = OnceLock::new();
    cached(&COMMITS, STORE_COMMITS).increment(1);
    histogram!(STORE_BATCH).record(size as f64);
}

pub fn fsync_seconds(d: Duration) {
    histogram!(FSYNC_SECONDS).record(d.as_secs_f64());
}

pub fn roll_seconds(d: Duration) {
    histogram!(ROLL_SECONDS).record(d.as_secs_f64());
}

pub fn segments(n: usize) {
    gauge!(SEGMENTS).set(n as f64);
}

pub fn snapshot_seconds(d: Duration) {
    histogram!(SNAPSHOT_SECONDS).record(d.as_secs_f64());
}

pub fn compaction_seconds(d: Duration) {
    histogram!(COMPACTION_SECONDS).record(d.as_secs_f64());
}

pub fn key_mismatch() {
    counter!(KEY_MISMATCHES).increment(1);
}

pub fn damaged_segments(n: usize) {
    gauge!(DAMAGED_SEGMENTS).set(n as f64);
}

pub fn compaction_refused() {
    counter!(COMPACTION_REFUSED).increment(1);
}

pub fn tail_cut(dropped_records: usize) {
    counter!(TAIL_CUTS).increment(1);
    counter!(TAIL_CUT_RECORDS).increment(dropped_records as u64);
}

pub fn scrubbed(bytes: u64) {
    counter!(SCRUB_BYTES).increment(bytes);
}

pub fn scrub_damage(kind: &'static str) {
    counter!(SCRUB_DAMAGE, "kind" => kind).increment(1);
}

pub fn scrub_pass_done(unix_seconds: f64) {
    counter!(SCRUB_PASSES).increment(1);
    gauge!(SCRUB_LAST_PASS).set(unix_seconds);
}

pub fn link_created() {
    static CREATED: OnceLock<Counter> = OnceLock::new();
    cached(&CREATED, LINKS_CREATED).increment(1);
}

pub fn cold_load() {
    counter!(COLD_LOADS).increment(1);
}

pub fn coalesced_wait() {
    counter!(CACHE_COALESCED).increment(1);
}

pub fn evicted(n: u64) {
    counter!(CACHE_EVICTIONS).increment(n);
}

pub fn peer_request(op: &'static str, took: Duration, ok: bool) {
    counter!(PEER_REQUESTS, "op" => op).increment(1);
    histogram!(PEER_SECONDS, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(PEER_FAILURES, "op" => op).increment(1);
    }
}

pub fn forwarded_read() {
    counter!(FORWARDED_READS).increment(1);
}

pub fn stale_read() {
    counter!(STALE_READS).increment(1);
}

pub fn raft_proposal(took: Duration, ok: bool) {
    counter!(RAFT_PROPOSALS).increment(1);
    histogram!(RAFT_COMMIT_SECONDS).record(took.as_secs_f64());
    if !ok {
        counter!(RAFT_FAILED_PROPOSALS).increment(1);
    }
}

pub fn bots(n: u64) {
    counter!(BOTS).increment(n);
}

/// A SIGHUP reload has run to its end (tests wait for this, not a guess).
pub fn config_reloaded() {
    counter!(CONFIG_RELOADS).increment(1);
}

pub fn breakdown_dropped() {
    counter!(BREAKDOWNS_DROPPED).increment(1);
}

pub fn analytics_lag(seconds: u32) {
    gauge!(ANALYTICS_LAG).set(seconds as f64);
}

pub fn geoip_age_seconds(s: f64) {
    gauge!(GEOIP_AGE).set(s);
}
