//! Country of a client address from a MaxMind-format database
//! (`--geoip-db`: GeoLite2-Country, DB-IP lite or any country `.mmdb`).
//!
//! The file is read whole at start and again on SIGHUP; a reload that
//! fails keeps the database in force. Lookups happen in the aggregator,
//! behind a cache of address prefixes (`PrefixCache`): a /24 (IPv4) or /48
//! (IPv6) is cached only when the database's network for the address is at
//! least that wide, so a cached answer is the database's answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

type Reader = maxminddb::Reader<Vec<u8>>;

pub struct Geo {
    file: Option<PathBuf>,
    reader: RwLock<Option<Arc<Reader>>>,
    /// Bumped on every successful (re)load, so caches know to start over.
    generation: AtomicU64,
}

fn open(path: &std::path::Path) -> Result<Reader, String> {
    let reader = Reader::open_readfile(path).map_err(|e| format!("--geoip-db {}: {e}", path.display()))?;
    let kind = &reader.metadata().database_type;
    tracing::info!(file = %path.display(), database_type = %kind, "GeoIP database loaded");
    Ok(reader)
}

impl Geo {
    /// Without a file, countries are left out of the stats.
    pub fn open(file: Option<PathBuf>) -> Result<Geo, String> {
        let reader = file.as_deref().map(open).transpose()?.map(Arc::new);
        let geo = Geo { file, reader: RwLock::new(reader), generation: AtomicU64::new(1) };
        geo.report_age();
        Ok(geo)
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// SIGHUP: re-reads the file, keeping the old database if it fails.
    pub fn reload(&self) {
        let Some(f) = &self.file else { return };
        match open(f) {
            Ok(r) => {
                *self.reader.write() = Some(Arc::new(r));
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "GeoIP database not reloaded; keeping the old one"),
        }
        self.report_age();
    }

    /// Sets the database-age gauge from the file's build time.
    pub fn report_age(&self) {
        if let Some(r) = self.reader.read().as_ref() {
            let now = crate::clock::now_ms() / 1000;
            crate::metrics::geoip_age_seconds((now - r.metadata().build_epoch as i64).max(0) as f64);
        }
    }

    fn current(&self) -> (u64, Option<Arc<Reader>>) {
        (self.generation.load(Ordering::Relaxed), self.reader.read().clone())
    }
}

/// An ISO 3166-1 alpha-2 code.
pub type Country = [u8; 2];

/// The aggregator's cache of answers by address prefix.
#[derive(Default)]
pub struct PrefixCache {
    generation: u64,
    reader: Option<Arc<Reader>>,
    answers: HashMap<(IpAddr, u8), Option<Country>, crate::hash::Hasher>,
}

/// Entries held before the cache starts over.
const CACHE_ENTRIES: usize = 64 * 1024;
const V4_PREFIX: u8 = 24;
const V6_PREFIX: u8 = 48;

fn masked(ip: IpAddr) -> (IpAddr, u8) {
    match ip {
        IpAddr::V4(v4) => (IpAddr::V4((u32::from(v4) & !(u32::MAX >> V4_PREFIX)).into()), V4_PREFIX),
        IpAddr::V6(v6) => (IpAddr::V6((u128::from(v6) & !(u128::MAX >> V6_PREFIX)).into()), V6_PREFIX),
    }
}

impl PrefixCache {
    pub fn country(&mut self, geo: &Geo, ip: IpAddr) -> Option<Country> {
        let generation = geo.generation.load(Ordering::Relaxed);
        if generation != self.generation {
            (self.generation, self.reader) = geo.current();
            self.answers.clear();
        }
        let reader = self.reader.as_ref()?;
        if ip.is_unspecified() {
            return None;
        }
        let key = masked(ip);
        if let Some(a) = self.answers.get(&key) {
            return *a;
        }
        let found = reader.lookup(ip).ok()?;
        let wide = found.network().is_ok_and(|n| n.prefix() <= key.1);
        let country = found
            .decode::<maxminddb::geoip2::Country>()
            .ok()
            .flatten()
            .and_then(|c| c.country.iso_code)
            .and_then(|code| <Country>::try_from(code.as_bytes()).ok());
        if wide {
            if self.answers.len() >= CACHE_ENTRIES {
                self.answers.clear();
            }
            self.answers.insert(key, country);
        }
        country
    }
}
