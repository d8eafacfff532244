//! Who may do what: API keys, per-client rate limits, the target blocklist
//! and the client address behind a trusted proxy.
//!
//! Keys and the blocklist can be reloaded (SIGHUP) while serving, so they
//! sit behind a read-write lock that readers hold only for a lookup.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use ipnet::IpNet;
use parking_lot::RwLock;

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

/// Domains that links may not point at; a domain blocks its subdomains.
#[derive(Default)]
pub struct Blocklist {
    domains: HashSet<String>,
}

/// Lower case, no trailing dot, IDN in its ASCII (punycode) form.
pub fn normalise_domain(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.');
    if t.is_empty() {
        return None;
    }
    let url = url::Url::parse(&format!("http://{t}/")).ok()?;
    url.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

impl Blocklist {
    pub fn load(path: &Path) -> Result<Blocklist, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut domains = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let d = normalise_domain(line).ok_or_else(|| format!("{} line {}: {line:?} is not a domain", path.display(), i + 1))?;
            domains.insert(d);
        }
        Ok(Blocklist { domains })
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// True when `host` or any domain above it is listed.
    pub fn blocks(&self, host: &str) -> bool {
        if self.domains.is_empty() {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = host.as_str();
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

/// Everything the access checks need, reloadable where it says so.
pub struct Access {
    keys: RwLock<Vec<String>>,
    key_file: Option<PathBuf>,
    fixed_keys: Vec<String>,
    blocklist: RwLock<Blocklist>,
    blocklist_file: Option<PathBuf>,
    trusted_proxies: Vec<IpNet>,
    pub create_rate: Option<RateLimit>,
    pub redirect_rate: Option<RateLimit>,
}

pub fn read_key_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if let Some(bad) = keys.iter().find(|k| k.len() < 8 || !k.bytes().all(|b| b.is_ascii_graphic())) {
        return Err(format!(
            "{}: key {:?}… needs at least 8 printable ASCII characters, no spaces",
            path.display(),
            &bad[..bad.len().min(3)]
        ));
    }
    Ok(keys)
}

impl Access {
    pub fn new(cfg: &crate::config::Config) -> Result<Access, String> {
        let mut keys = cfg.api_keys.clone();
        if let Some(f) = &cfg.api_key_file {
            keys.extend(read_key_file(f)?);
        }
        let blocklist = match &cfg.blocklist {
            Some(f) => Blocklist::load(f)?,
            None => Blocklist::default(),
        };
        Ok(Access {
            keys: RwLock::new(keys),
            key_file: cfg.api_key_file.clone(),
            fixed_keys: cfg.api_keys.clone(),
            blocklist: RwLock::new(blocklist),
            blocklist_file: cfg.blocklist.clone(),
            trusted_proxies: cfg.trusted_proxies.clone(),
            create_rate: RateLimit::new(cfg.create_rate, cfg.create_burst),
            redirect_rate: RateLimit::new(cfg.redirect_rate, cfg.redirect_rate.saturating_mul(2)),
        })
    }

    /// Re-reads the key file and the blocklist; keeps the old ones on error.
    pub fn reload(&self) {
        if let Some(f) = &self.key_file {
            match read_key_file(f) {
                Ok(mut keys) => {
                    keys.extend(self.fixed_keys.iter().cloned());
                    tracing::info!(keys = keys.len(), file = %f.display(), "API keys reloaded");
                    *self.keys.write() = keys;
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

    pub fn has_keys(&self) -> bool {
        !self.keys.read().is_empty()
    }

    /// Compares against every key without an early exit.
    pub fn key_matches(&self, given: &[u8]) -> bool {
        self.keys.read().iter().fold(false, |hit, k| hit | constant_time_eq(given, k.as_bytes()))
    }

    pub fn blocked(&self, host: &str) -> bool {
        self.blocklist.read().blocks(host)
    }

    /// The client's address: the peer, or when the peer is a trusted proxy,
    /// the nearest address in `X-Forwarded-For` that is not one.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(s) = v.to_str() else { return peer_ip };
            for part in s.split(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) => chain.push(ip.to_canonical()),
                    Err(_) => return peer_ip,
                }
            }
        }
        chain.into_iter().rev().find(|ip| !self.is_trusted(*ip)).unwrap_or(peer_ip)
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
    fn blocklist_blocks_domains_and_their_subdomains_in_any_form() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("block.txt");
        std::fs::write(&f, "# phishing\nEvil.Example.\nbücher.example\n").unwrap();
        let b = Blocklist::load(&f).unwrap();
        assert!(b.blocks("evil.example"));
        assert!(b.blocks("login.EVIL.example."));
        assert!(b.blocks("xn--bcher-kva.example"));
        assert!(b.blocks("shop.xn--bcher-kva.example"));
        assert!(!b.blocks("notevil.example"));
        assert!(!b.blocks("example"));
    }

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
