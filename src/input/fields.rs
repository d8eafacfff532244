//! The one validation of what a client asks of a link: the JSON fields of
//! a create (from the API or `shortd import`) and of a patch, each checked
//! with its limit, and a refusal that names the field and the reason.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::code::validate_alias;
use crate::store::{NewLink, Patch, REDIRECT_STATUSES};
use crate::target;

/// Longest accepted lifetime of a link: 100 years.
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;
/// Largest click limit: what a JSON number holds exactly.
pub const MAX_CLICKS: u64 = 1 << 53;
const CREATE_FIELDS: &[&str] = &["url", "alias", "ttl_seconds", "expires_at", "max_clicks", "redirect"];
/// An exported link: `code` is kept as its alias, `disabled` as it was;
/// `clicks` and `stats` are carried over by `shortd import` itself; the
/// other fields the store sets itself are read and ignored.
const IMPORT_FIELDS: &[&str] = &[
    "url",
    "alias",
    "ttl_seconds",
    "expires_at",
    "max_clicks",
    "redirect",
    "code",
    "disabled",
    "short_url",
    "created_at",
    "clicks",
    "stats",
];
const PATCH_FIELDS: &[&str] = &["url", "ttl_seconds", "expires_at", "max_clicks", "redirect", "disabled"];

/// A field that cannot be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), reason: reason.into() }
}

/// What a target URL must satisfy here.
pub struct Rules<'a> {
    pub max_url_bytes: usize,
    /// This shortener's host, which targets may not point at.
    pub own_host: Option<&'a str>,
    pub blocklist: &'a dyn Blocks,
}

/// A list of target hosts that links may not point at.
pub trait Blocks {
    fn blocks(&self, host: &str) -> bool;
    /// True when nothing is blocked (spares finding the host).
    fn is_empty(&self) -> bool {
        false
    }
}

impl Blocks for crate::lists::Blocklist {
    fn blocks(&self, host: &str) -> bool {
        crate::lists::Blocklist::blocks(self, host)
    }
    fn is_empty(&self) -> bool {
        crate::lists::Blocklist::is_empty(self)
    }
}

/// Where a create comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Api,
    /// `shortd import`: also takes what `shortd export` writes, and an
    /// `expires_at` in the past (an expired link moves as an expired link).
    Import,
}

pub fn new_link(obj: &Map<String, Value>, rules: &Rules<'_>, now: i64, source: Source) -> Result<NewLink, Invalid> {
    check_fields(obj, if source == Source::Import { IMPORT_FIELDS } else { CREATE_FIELDS })?;
    let url = match obj.get("url") {
        None | Some(Value::Null) => return Err(invalid("url", "is required")),
        Some(v) => url_field(rules, v)?,
    };
    let alias = match (obj.get("alias").filter(|v| !v.is_null()), obj.get("code").filter(|v| !v.is_null())) {
        (Some(_), Some(_)) => return Err(invalid("code", "cannot be combined with alias; give one of them")),
        (Some(v), None) => Some(alias_field(v, "alias")?),
        (None, Some(v)) => Some(alias_field(v, "code")?),
        (None, None) => None,
    };
    let expires_ms = expiry(obj, now, source == Source::Import)?.unwrap_or(0);
    let max_clicks = match obj.get("max_clicks") {
        None | Some(Value::Null) => 0,
        Some(v) => int_field(v, "max_clicks", 1, MAX_CLICKS)?,
    };
    let redirect = match obj.get("redirect") {
        None | Some(Value::Null) => 302,
        Some(v) => redirect_field(v)?,
    };
    let disabled = match obj.get("disabled") {
        None | Some(Value::Null) => false,
        Some(v) => bool_field(v, "disabled")?,
    };
    Ok(NewLink { url, alias, expires_ms, max_clicks, redirect, disabled, idempotency: None })
}

pub fn patch(obj: &Map<String, Value>, rules: &Rules<'_>, now: i64) -> Result<Patch, Invalid> {
    check_fields(obj, PATCH_FIELDS)?;
    let mut p = Patch::default();
    if let Some(v) = obj.get("url") {
        if v.is_null() {
            return Err(invalid("url", "cannot be removed"));
        }
        p.url = Some(url_field(rules, v)?);
    }
    p.expires_ms = expiry(obj, now, false)?;
    if let Some(v) = obj.get("max_clicks") {
        p.max_clicks = Some(if v.is_null() { 0 } else { int_field(v, "max_clicks", 1, MAX_CLICKS)? });
    }
    if let Some(v) = obj.get("redirect") {
        p.redirect = Some(if v.is_null() { 302 } else { redirect_field(v)? });
    }
    if let Some(v) = obj.get("disabled") {
        p.disabled = Some(bool_field(v, "disabled")?);
    }
    Ok(p)
}

fn check_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), Invalid> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(k, format!("is not a known field (known: {})", known.join(", ")))),
        None => Ok(()),
    }
}

fn string_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, Invalid> {
    v.as_str().ok_or_else(|| invalid(field, "must be a string"))
}

fn bool_field(v: &Value, field: &str) -> Result<bool, Invalid> {
    v.as_bool().ok_or_else(|| invalid(field, "must be true or false"))
}

fn int_field(v: &Value, field: &str, min: u64, max: u64) -> Result<u64, Invalid> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(field, format!("must be an integer from {min} to {max}"))),
    }
}

fn alias_field(v: &Value, field: &str) -> Result<String, Invalid> {
    let a = string_field(v, field)?;
    validate_alias(a).map_err(|e| invalid(field, e.reason()))?;
    Ok(a.to_string())
}

fn url_field(rules: &Rules<'_>, v: &Value) -> Result<String, Invalid> {
    url_text(rules, string_field(v, "url")?).map(Cow::into_owned)
}

pub(super) fn url_text<'a>(rules: &Rules<'_>, raw: &'a str) -> Result<Cow<'a, str>, Invalid> {
    target::validate_with(raw, rules.max_url_bytes, rules.own_host, |host| !rules.blocklist.is_empty() && rules.blocklist.blocks(host))
        .map_err(|e| invalid("url", e.to_string()))
}

fn redirect_field(v: &Value) -> Result<u16, Invalid> {
    match v.as_u64() {
        Some(n) if REDIRECT_STATUSES.contains(&(n as u16)) && n < 1000 => Ok(n as u16),
        _ => Err(invalid("redirect", "must be one of 301, 302, 307, 308")),
    }
}

/// `ttl_seconds` or `expires_at` into unix ms; `Some(0)` for an explicit null.
fn expiry(obj: &Map<String, Value>, now: i64, past_ok: bool) -> Result<Option<i64>, Invalid> {
    let ttl = obj.get("ttl_seconds");
    let at = obj.get("expires_at");
    if ttl.is_some_and(|v| !v.is_null()) && at.is_some_and(|v| !v.is_null()) {
        return Err(invalid("expires_at", "cannot be combined with ttl_seconds; give one of them"));
    }
    if let Some(v) = ttl.filter(|v| !v.is_null()) {
        let secs = int_field(v, "ttl_seconds", 1, MAX_TTL_SECONDS)?;
        return Ok(Some(now + secs as i64 * 1000));
    }
    if let Some(v) = at.filter(|v| !v.is_null()) {
        let text = string_field(v, "expires_at")?;
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| invalid("expires_at", "must be an RFC 3339 date-time such as 2030-01-31T12:00:00Z"))?;
        let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
        if ms <= now && !past_ok {
            return Err(invalid("expires_at", "must be in the future"));
        }
        if ms <= 0 || ms > now + MAX_TTL_SECONDS as i64 * 1000 {
            return Err(invalid("expires_at", "must be after 1970 and within 100 years"));
        }
        return Ok(Some(ms));
    }
    if ttl.is_some() || at.is_some() {
        return Ok(Some(0));
    }
    Ok(None)
}

/// `max_clicks` and `redirect` of the fast paths, defaulted; `None` for a
/// value `new_link` would refuse.
pub(super) fn plain_limits(max_clicks: Option<u64>, redirect: Option<u64>) -> Option<(u64, u16)> {
    let max_clicks = match max_clicks {
        None => 0,
        Some(n) if (1..=MAX_CLICKS).contains(&n) => n,
        Some(_) => return None,
    };
    let redirect = match redirect {
        None => 302,
        Some(n) if n < 1000 && REDIRECT_STATUSES.contains(&(n as u16)) => n as u16,
        Some(_) => return None,
    };
    Some((max_clicks, redirect))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) struct Evil;
    impl Blocks for Evil {
        fn blocks(&self, host: &str) -> bool {
            host == "evil.example"
        }
    }

    pub(crate) fn rules(max: usize) -> Rules<'static> {
        Rules { max_url_bytes: max, own_host: Some("sho.rt"), blocklist: &Evil }
    }

    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn import_is_held_to_the_api_rules() {
        let now = 1_700_000_000_000;
        for source in [Source::Api, Source::Import] {
            let refuse = |v: Value, field: &str| {
                let e = new_link(&obj(v.clone()), &rules(64), now, source).unwrap_err();
                assert_eq!(e.field, field, "{source:?} {v}");
            };
            refuse(json!({"url": "https://a.example/", "ttl_seconds": 0}), "ttl_seconds");
            refuse(json!({"url": format!("https://a.example/{}", "x".repeat(64))}), "url");
            refuse(json!({"url": "https://sho.rt/loop"}), "url");
            refuse(json!({"url": "https://evil.example/"}), "url");
            refuse(json!({"url": "https://a.example/", "redirect": 303}), "redirect");
            refuse(json!({"url": "https://a.example/", "alias": "api"}), "alias");
            refuse(json!({"url": "https://a.example/", "max_clicks": 0}), "max_clicks");
        }
        let exported = json!({"code": "moved", "url": "https://a.example/", "disabled": true, "clicks": 4, "created_at": "2020-01-01T00:00:00Z",
            "expires_at": "2021-01-01T00:00:00Z", "short_url": "http://x/moved"});
        let n = new_link(&obj(exported.clone()), &rules(64), now, Source::Import).unwrap();
        assert_eq!((n.alias.as_deref(), n.disabled, n.expires_ms > 0), (Some("moved"), true, true));
        assert!(new_link(&obj(exported), &rules(64), now, Source::Api).is_err(), "the API takes export-only fields");
    }
}
