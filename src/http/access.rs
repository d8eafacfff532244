//! Who may do what: API keys, per-client rate limits, the target blocklist
//! and the client address behind a trusted proxy.
//!
//! Keys and the blocklist can be reloaded (SIGHUP) while serving, so they
//! sit behind a read-write lock that readers hold only for a lookup.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use ipnet::IpNet;
use parking_lot::RwLock;

use crate::lists::{self, Blocklist};

/// A per-client-IP limit; `None` settings mean unlimited.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(RateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    /// `Err(wait)` when the client must wait before trying again.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter.check_key(&ip).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `n` at once (a batch of creates); `Err(wait)` if they do not
    /// fit now, `Err(Duration::MAX)` if they never will (more than the burst).
    pub fn check_n(&self, ip: IpAddr, n: NonZeroU32) -> Result<(), Duration> {
        match self.limiter.check_key_n(&ip, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            Err(_) => Err(Duration::MAX),
        }
    }

    /// Forgets clients whose buckets are full again, so the map stays small.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Everything the access checks need, reloadable where it says so.
pub struct Access {
    keys: RwLock<Vec<String>>,
    key_file: Option<PathBuf>,
    fixed_keys: Vec<String>,
    loopback_open: bool,
    blocklist: RwLock<Blocklist>,
    blocklist_file: Option<PathBuf>,
    trusted_proxies: Vec<IpNet>,
    pub create_rate: Option<RateLimit>,
    pub redirect_rate: Option<RateLimit>,
}

impl Access {
    pub fn new(cfg: &crate::config::Config) -> Result<Access, String> {
        let a = Access {
            keys: RwLock::new(cfg.api_keys.clone()),
            key_file: cfg.api_key_file.clone(),
            fixed_keys: cfg.api_keys.clone(),
            loopback_open: cfg.api_keys.is_empty() && cfg.api_key_file.is_none(),
            blocklist: RwLock::new(Blocklist::default()),
            blocklist_file: cfg.blocklist.clone(),
            trusted_proxies: cfg.trusted_proxies.clone(),
            create_rate: RateLimit::new(cfg.create_rate, cfg.create_burst()),
            redirect_rate: RateLimit::new(cfg.redirect_rate, cfg.redirect_rate.saturating_mul(2)),
        };
        if let Some(f) = &a.key_file {
            *a.keys.write() = a.with_fixed(lists::read_api_keys(f)?, f);
        }
        if let Some(f) = &a.blocklist_file {
            *a.blocklist.write() = Blocklist::load(f)?;
        }
        Ok(a)
    }

    /// The file's keys plus the ones given as flags; an empty result keeps
    /// the API closed, and says so.
    fn with_fixed(&self, mut keys: Vec<String>, file: &Path) -> Vec<String> {
        keys.extend(self.fixed_keys.iter().cloned());
        if keys.is_empty() {
            tracing::error!(file = %file.display(), "the API key file holds no key: every API request is refused (401) until it does");
        }
        keys
    }

    /// Re-reads the key file and the blocklist. A key file that holds a
    /// bad key keeps the keys in force (a typo locks nobody out and lets
    /// nobody in); one that is gone, empty or all comments leaves only the
    /// `--api-key` keys, if any: the API stays closed, never loopback-open.
    /// A blocklist that cannot be read keeps the old one.
    pub fn reload(&self) {
        if let Some(f) = &self.key_file {
            match lists::read_api_keys(f) {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), file = %f.display(), "API keys reloaded");
                    *self.keys.write() = self.with_fixed(keys, f);
                }
                Err(e) if !f.exists() => {
                    tracing::error!(error = %e, "API key file is gone: its keys are dropped");
                    *self.keys.write() = self.with_fixed(Vec::new(), f);
                }
                Err(e) => tracing::error!(error = %e, "API keys not reloaded; keeping the old ones"),
            }
        }
        if let Some(f) = &self.blocklist_file {
            match Blocklist::load(f) {
                Ok(b) => {
                    tracing::info!(domains = b.len(), file = %f.display(), "blocklist reloaded");
                    *self.blocklist.write() = b;
                }
                Err(e) => tracing::error!(error = %e, "blocklist not reloaded; keeping the old one"),
            }
        }
    }

    /// True only for a server started with no key settings at all: its API
    /// answers loopback clients without a key. A server given keys never
    /// falls back to this, whatever its key file later holds.
    pub fn loopback_open(&self) -> bool {
        self.loopback_open
    }

    /// Compares against every key without an early exit.
    pub fn key_matches(&self, given: &[u8]) -> bool {
        self.keys.read().iter().fold(false, |hit, k| hit | constant_time_eq(given, k.as_bytes()))
    }

    pub fn blocked(&self, host: &str) -> bool {
        self.blocklist.read().blocks(host)
    }

    /// The client's address: the peer, or when the peer is a trusted proxy,
    /// the nearest address in `X-Forwarded-For` that is not one (walked
    /// from the nearest hop back; a malformed hop ends the walk at the
    /// peer). Allocates nothing: redirects call it for their analytics.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        for v in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(s) = v.to_str() else { return peer_ip };
            for part in s.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) if !self.is_trusted(ip.to_canonical()) => return ip.to_canonical(),
                    Ok(_) => {}
                    Err(_) => return peer_ip,
                }
            }
        }
        peer_ip
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub fn prune(&self) {
        for r in [&self.create_rate, &self.redirect_rate].into_iter().flatten() {
            r.prune();
        }
    }
}

impl crate::input::Blocks for Access {
    fn blocks(&self, host: &str) -> bool {
        self.blocked(host)
    }
}

/// Equal-length byte comparison whose time does not depend on where the
/// inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_burst_then_refuses_with_a_wait() {
        let r = RateLimit::new(10, 10).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ok = (0..30).filter(|_| r.check(ip).is_ok()).count();
        assert!((10..=12).contains(&ok), "{ok}");
        let wait = r.check(ip).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(r.check("10.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let cfg = crate::config::Config { trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()], ..Default::default() };
        let a = Access::new(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let via_proxy: SocketAddr = "10.2.2.2:5000".parse().unwrap();
        let direct: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(a.client_ip(via_proxy, &h), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(a.client_ip(direct, &h), "198.51.100.7".parse::<IpAddr>().unwrap());
    }
}
