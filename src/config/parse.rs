//! The check of one setting's value, as clap calls it while parsing: ranges,
//! durations, addresses, URLs, and the files a setting names (key lists,
//! the blocklist, the GeoIP database), read once to be sure they load.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub(super) fn in_range<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Debug + Copy + Send + Sync + 'static,
{
    move |s| match s.parse::<T>() {
        Ok(v) if lo <= v && v <= hi => Ok(v),
        Ok(_) => Err(format!("must be between {lo:?} and {hi:?}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

pub(super) fn at_least<T>(lo: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Debug + Copy + Send + Sync + 'static,
{
    move |s| match s.parse::<T>() {
        Ok(v) if lo <= v => Ok(v),
        Ok(_) => Err(format!("must be at least {lo:?}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// Parses `2s`, `500ms`, `1m`, `1h`, `1h 30m`.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration like 2s or 500ms ({e})"))
}

pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    duration(text).and_then(|d| if d.is_zero() { Err("must be more than zero".into()) } else { Ok(d) })
}

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not ADDR:PORT"))
}

pub(super) fn public_url(text: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("must be an http or https URL with a host".into());
    }
    Ok(u)
}

pub(super) fn api_key(key: &str) -> Result<String, String> {
    match crate::lists::is_valid_key(key, crate::lists::MIN_KEY_LEN) {
        true => Ok(key.to_string()),
        false => Err(format!("each key needs at least {} printable ASCII characters, no spaces", crate::lists::MIN_KEY_LEN)),
    }
}

pub(super) fn api_key_file(path: &str) -> Result<PathBuf, String> {
    crate::lists::read_api_keys(Path::new(path))?;
    Ok(path.into())
}

pub(super) fn blocklist(path: &str) -> Result<PathBuf, String> {
    crate::lists::Blocklist::load(Path::new(path))?;
    Ok(path.into())
}

pub(super) fn trusted_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR such as 10.0.0.0/8"))
}

pub(super) fn geoip_db(path: &str) -> Result<PathBuf, String> {
    maxminddb::Reader::open_readfile(path).map_err(|e| format!("is not a readable MaxMind DB: {e}"))?;
    Ok(path.into())
}

pub(super) fn hours(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d < Duration::from_secs(3600) {
        return Err("must be at least 1h".into());
    }
    Ok(d)
}

pub(super) fn header_value(text: &str) -> Result<String, String> {
    http::HeaderValue::from_str(text).map(|_| text.to_string()).map_err(|_| "is not a valid header value".into())
}

pub(super) fn log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|e| e.to_string())
}

pub(super) fn node_id(id: &str) -> Result<String, String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    if id.is_empty() || id.len() > 64 || !id.bytes().all(ok) {
        return Err("must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into());
    }
    Ok(id.to_string())
}
