//! The worker's side: what a redirect records of its request, into the
//! worker's own buffer, without a lock and without allocating once warm.
//!
//! `Visits` is part of the batch a worker hands the aggregator: events
//! (code, agent, referrer host, client address, time, count) plus an arena
//! holding the agent and host bytes. A string already in the arena is not
//! copied again (interned by hash), and an event equal to the one before
//! it only bumps that one's count. Batches come back emptied through the
//! pool with their capacity, so the steady state allocates nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use compact_str::CompactString;
use http::HeaderMap;

use super::classify::MAX_AGENT;

/// Events a batch holds at most; past that a click keeps only its count.
pub const MAX_EVENTS: usize = 4096;
/// Bytes of agents and hosts a batch holds at most.
pub const ARENA_BYTES: usize = 64 * 1024;
const MAX_HOST: usize = 255;

/// The hot path already counted this click (a link with a click limit).
pub const COUNTED: u8 = 1;
/// The hot path found the agent to be a bot (links with a click limit).
pub const BOT: u8 = 2;

/// What a redirect request brings besides its code.
pub struct Visit<'a> {
    pub head: bool,
    pub headers: &'a HeaderMap,
    pub peer: SocketAddr,
}

impl Visit<'_> {
    pub fn user_agent(&self) -> &[u8] {
        self.headers.get(http::header::USER_AGENT).map_or(&[][..], |v| v.as_bytes())
    }

    /// The host of the Referer, or nothing (direct).
    pub fn referrer_host(&self) -> &[u8] {
        self.headers.get(http::header::REFERER).map_or(&[][..], |v| host_of(v.as_bytes()))
    }
}

/// The host part of an absolute URL's bytes: after `scheme://` and any
/// `user@`, before the port, path, query or fragment.
pub fn host_of(url: &[u8]) -> &[u8] {
    let Some(i) = url.windows(3).position(|w| w == b"://") else { return &[] };
    let rest = &url[i + 3..];
    let rest = &rest[..rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len())];
    let rest = rest.iter().rposition(|&b| b == b'@').map_or(rest, |at| &rest[at + 1..]);
    let host = if rest.first() == Some(&b'[') {
        rest.iter().position(|&b| b == b']').map_or(rest, |e| &rest[..=e])
    } else {
        rest.iter().position(|&b| b == b':').map_or(rest, |c| &rest[..c])
    };
    &host[..host.len().min(MAX_HOST)]
}

/// Where a string lies in the arena; `len` 0 is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    off: u32,
    len: u32,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub code: CompactString,
    pub agent: Span,
    pub referrer: Span,
    pub ip: IpAddr,
    /// Unix seconds of the first click of this event.
    pub sec: u32,
    pub count: u32,
    pub flags: u8,
}

pub struct Visits {
    pub events: Vec<Event>,
    arena: Vec<u8>,
    interned: HashMap<u64, Span, crate::hash::Hasher>,
}

impl Default for Visits {
    /// Empty, without capacity: a server with analytics off never fills one.
    fn default() -> Self {
        Visits { events: Vec::new(), arena: Vec::new(), interned: HashMap::default() }
    }
}

impl Visits {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Near full: time to hand the batch over.
    pub fn nearly_full(&self) -> bool {
        self.events.len() >= MAX_EVENTS * 3 / 4 || self.arena.len() >= ARENA_BYTES * 3 / 4
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.arena.clear();
        self.interned.clear();
    }

    pub fn get(&self, s: Span) -> &[u8] {
        &self.arena[s.off as usize..(s.off + s.len) as usize]
    }

    fn intern(&mut self, bytes: &[u8]) -> Option<Span> {
        if bytes.is_empty() {
            return Some(Span::default());
        }
        let h = xxhash_rust::xxh3::xxh3_64(bytes);
        if let Some(&s) = self.interned.get(&h) {
            if self.get(s) == bytes {
                return Some(s);
            }
        }
        if self.arena.len() + bytes.len() > ARENA_BYTES {
            return None;
        }
        let s = Span { off: self.arena.len() as u32, len: bytes.len() as u32 };
        self.arena.extend_from_slice(bytes);
        self.interned.insert(h, s);
        Some(s)
    }

    /// Records one click; false when the batch is full (the breakdown is
    /// dropped, the caller still counts the click).
    pub fn record(&mut self, code: &str, v: &Visit<'_>, ip: IpAddr, sec: u32, flags: u8) -> bool {
        if self.events.capacity() == 0 {
            // Once per batch's life: it comes back through the pool with it.
            self.events.reserve_exact(MAX_EVENTS);
            self.arena.reserve_exact(ARENA_BYTES);
        }
        let agent = v.user_agent();
        let agent = &agent[..agent.len().min(MAX_AGENT)];
        let referrer = v.referrer_host();
        // The common repeat (the same client again) is found by comparing
        // with the last event's strings, before any hashing.
        let last = self.events.last().map(|e| (e.agent, e.referrer));
        let agent = match last {
            Some((a, _)) if self.get(a) == agent => Some(a),
            _ => self.intern(agent),
        };
        let referrer = match last {
            Some((_, r)) if self.get(r) == referrer => Some(r),
            _ => self.intern(referrer),
        };
        let (Some(agent), Some(referrer)) = (agent, referrer) else { return false };
        if let Some(last) = self.events.last_mut() {
            let same = last.agent == agent
                && last.referrer == referrer
                && last.ip == ip
                && last.flags == flags
                && last.sec / 3600 == sec / 3600
                && last.code == code;
            if same && last.count < u32::MAX {
                last.count += 1;
                return true;
            }
        }
        if self.events.len() >= MAX_EVENTS {
            return false;
        }
        self.events.push(Event { code: code.into(), agent, referrer, ip, sec, count: 1, flags });
        true
    }
}

/// No address: the database is not asked.
pub const NO_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_hosts() {
        let h = |u: &str| String::from_utf8(host_of(u.as_bytes()).to_vec()).unwrap();
        assert_eq!(h("https://news.ycombinator.com/item?id=1"), "news.ycombinator.com");
        assert_eq!(h("http://user:pw@example.org:8080/x"), "example.org");
        assert_eq!(h("https://[2001:db8::1]:443/"), "[2001:db8::1]");
        assert_eq!(h("https://t.co"), "t.co");
        assert_eq!(h("android-app://com.slack"), "com.slack");
        assert_eq!(h("not a url"), "");
    }

    #[test]
    fn repeats_are_interned_and_folded() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, "Mozilla/5.0 test".parse().unwrap());
        headers.insert(http::header::REFERER, "https://example.com/page".parse().unwrap());
        let v = Visit { head: false, headers: &headers, peer: "127.0.0.1:1".parse().unwrap() };
        let mut visits = Visits::default();
        for _ in 0..3 {
            assert!(visits.record("abc", &v, NO_IP, 100, 0));
        }
        assert!(visits.record("def", &v, NO_IP, 100, 0));
        assert_eq!(visits.events.len(), 2);
        assert_eq!(visits.events[0].count, 3);
        assert_eq!(visits.get(visits.events[1].referrer), b"example.com");
        assert_eq!(visits.arena.len(), "Mozilla/5.0 test".len() + "example.com".len());
    }
}
