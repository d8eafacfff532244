//! Click analytics: per-worker capture -> aggregator -> hourly rollups.
//!
//! - `capture`: a redirect (GET) records code, User-Agent, Referer host and
//!   client address into its worker's batch (no lock, no allocation once
//!   warm). A full batch keeps the click's count and drops its breakdown.
//! - The click aggregator (`clicks`) hands each batch's events to
//!   `Aggregation::fold`, which classifies them (`classify`: bots first,
//!   then device, browser, OS, each agent once thanks to a cache), looks up
//!   the country (`geo`, cached by address prefix) and folds them into
//!   `rollup` hours. Bots count as `bots`, never as clicks.
//! - The store logs changed rollups once a second, like click totals, and
//!   keeps them in snapshots; the stats API (`http::stats`) reads them.
//! - `qr` draws a link's short URL.

pub mod capture;
pub mod classify;
pub mod geo;
pub mod qr;
pub mod rollup;

use std::collections::HashMap;

use capture::{Visits, BOT, COUNTED};
use classify::Agent;
use rollup::{Rollups, BROWSER, COUNTRY, DEVICE, OS, REFERRER};

/// What every thread shares: the settings and the GeoIP database.
pub struct Analytics {
    /// `--analytics on`: capture breakdowns. Off keeps click totals only.
    pub enabled: bool,
    /// `--count-bots`: bots count as clicks and against `max_clicks`.
    pub count_bots: bool,
    pub geo: geo::Geo,
    /// `--stats-retention`, in hours.
    pub retention_hours: u32,
}

impl Analytics {
    /// From `--analytics`, `--count-bots`, `--geoip-db` and
    /// `--stats-retention`; the database is opened only when `enabled`.
    pub fn new(
        enabled: bool,
        count_bots: bool,
        geoip_db: Option<std::path::PathBuf>,
        retention: std::time::Duration,
    ) -> Result<Analytics, String> {
        Ok(Analytics {
            enabled,
            count_bots,
            geo: geo::Geo::open(if enabled { geoip_db } else { None })?,
            retention_hours: (retention.as_secs() / 3600).clamp(1, u32::MAX as u64) as u32,
        })
    }

    /// The hot path's verdict, for links with a click limit only.
    pub fn is_bot(&self, agent: &[u8]) -> bool {
        !self.count_bots && classify::is_bot(agent)
    }
}

/// Agents classified before the cache starts over.
const AGENT_CACHE: usize = 16 * 1024;
/// What referrers are counted as when a click has none.
pub const DIRECT: &str = "direct";

/// The aggregator thread's own state: its caches.
pub struct Aggregation {
    parser: woothee::parser::Parser,
    agents: HashMap<Box<[u8]>, Agent, crate::hash::Hasher>,
    geo: geo::PrefixCache,
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation { parser: woothee::parser::Parser::new(), agents: HashMap::default(), geo: geo::PrefixCache::default() }
    }
}

/// What one fold found, for the metrics.
#[derive(Default)]
pub struct Folded {
    pub bots: u64,
    /// Seconds between the oldest click of the batch and `now_sec`.
    pub lag_seconds: u32,
}

impl Aggregation {
    fn agent(&mut self, bytes: &[u8]) -> &Agent {
        if !self.agents.contains_key(bytes) {
            if self.agents.len() >= AGENT_CACHE {
                self.agents.clear();
            }
            let a = classify::classify(&self.parser, bytes);
            self.agents.insert(bytes.into(), a);
        }
        &self.agents[bytes]
    }

    /// Folds a batch's events into the rollups. `click(code, n, human)` is
    /// called for every event: `human` says the clicks count in the link's
    /// total (bots and clicks the hot path already counted do not).
    pub fn fold(
        &mut self,
        a: &Analytics,
        visits: &Visits,
        rollups: &Rollups,
        now_sec: u32,
        mut click: impl FnMut(&str, u64, bool),
    ) -> Folded {
        let mut out = Folded::default();
        for ev in &visits.events {
            out.lag_seconds = out.lag_seconds.max(now_sec.saturating_sub(ev.sec));
            let n = ev.count;
            let hour = ev.sec / 3600;
            let country = if a.geo.enabled() { self.geo.country(&a.geo, ev.ip) } else { None };
            let agent = self.agent(visits.get(ev.agent));
            let bot = if ev.flags & (COUNTED | BOT) != 0 { ev.flags & BOT != 0 } else { agent.bot && !a.count_bots };
            click(&ev.code, n as u64, !bot && ev.flags & COUNTED == 0);
            if bot {
                out.bots += n as u64;
                rollups.update(&ev.code, hour, |h, _| h.bots = h.bots.saturating_add(n));
                continue;
            }
            let referrer = visits.get(ev.referrer);
            let mut lower = [0u8; 256];
            let referrer = match referrer.len() {
                0 => DIRECT,
                len => {
                    lower[..len].copy_from_slice(referrer);
                    lower[..len].make_ascii_lowercase();
                    std::str::from_utf8(&lower[..len]).unwrap_or("other")
                }
            };
            rollups.update(&ev.code, hour, |h, cap| {
                h.clicks = h.clicks.saturating_add(n);
                h.add(REFERRER, referrer, n, cap);
                if let Some(c) = &country {
                    h.add(COUNTRY, std::str::from_utf8(c).unwrap_or("??"), n, cap);
                }
                h.add(DEVICE, agent.device, n, cap);
                h.add(BROWSER, &agent.browser, n, cap);
                h.add(OS, &agent.os, n, cap);
            });
        }
        out
    }
}
