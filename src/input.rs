//! What a client may ask of a link: the JSON fields of a create or a patch,
//! checked one way for every door (the API, its batch endpoint and
//! `shortd import`). A refusal names the field and the reason; the HTTP
//! edge turns it into a problem+json body, the import into a line error.

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

fn url_text<'a>(rules: &Rules<'_>, raw: &'a str) -> Result<Cow<'a, str>, Invalid> {
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

/// A link of an export line in its common shape (`export_line`), borrowing
/// from the line.
#[derive(Debug, PartialEq, Eq)]
pub struct Exported<'a> {
    pub url: Cow<'a, str>,
    pub alias: Option<Cow<'a, str>>,
    pub expires_ms: i64,
    pub max_clicks: u64,
    pub redirect: u16,
    pub disabled: bool,
    pub clicks: u64,
}

impl Exported<'_> {
    pub fn to_new_link(&self) -> NewLink {
        NewLink {
            url: self.url.to_string(),
            alias: self.alias.as_deref().map(str::to_string),
            expires_ms: self.expires_ms,
            max_clicks: self.max_clicks,
            redirect: self.redirect,
            disabled: self.disabled,
            idempotency: None,
        }
    }
}

/// An export line in its common shape, read without building a JSON map
/// and without copying its strings, or `None` when the line needs
/// `new_link` (any other field or type, `stats`, a value out of range, a
/// refusal), which then decides, with its exact error. What this accepts,
/// `new_link` with `Source::Import` accepts the same way.
pub fn export_line<'a>(line: &'a str, rules: &Rules<'_>, now: i64) -> Option<Exported<'a>> {
    let l = scan_export(line).or_else(|| serde_json::from_str::<ExportFields<'a>>(line).ok())?;
    // `created_at` and `short_url` are read and ignored, whatever their
    // type, as `new_link` does.
    let _ = (l.created_at, l.short_url);
    let alias = match (l.alias, l.code) {
        (Some(_), Some(_)) => return None,
        (a, c) => a.or(c),
    };
    if let Some(a) = &alias {
        validate_alias(a).ok()?;
    }
    let url = match l.url {
        Cow::Borrowed(raw) => url_text(rules, raw).ok()?,
        Cow::Owned(raw) => Cow::Owned(url_text(rules, &raw).ok()?.into_owned()),
    };
    let expires_ms = match &l.expires_at {
        None => 0,
        Some(text) => {
            let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
            let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            if ms <= 0 || ms > now + MAX_TTL_SECONDS as i64 * 1000 {
                return None;
            }
            ms
        }
    };
    let (max_clicks, redirect) = plain_limits(l.max_clicks, l.redirect)?;
    Some(Exported { url, alias, expires_ms, max_clicks, redirect, disabled: l.disabled.unwrap_or(false), clicks: l.clicks.unwrap_or(0) })
}

/// The fields `export_line` reads; any other makes the line go the long way.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFields<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    alias: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expires_at: Option<Cow<'a, str>>,
    #[serde(default)]
    max_clicks: Option<u64>,
    #[serde(default)]
    redirect: Option<u64>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    clicks: Option<u64>,
    #[serde(default)]
    created_at: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    short_url: Option<serde::de::IgnoredAny>,
}

const EXPORT_FIELDS: [&str; 10] =
    ["url", "code", "alias", "expires_at", "max_clicks", "redirect", "disabled", "clicks", "created_at", "short_url"];

/// A JSON value as `scan_export` reads it.
enum Scalar<'a> {
    Str(&'a str),
    Uint(u64),
    Bool(bool),
    Null,
}

/// The fields of a line written exactly as `shortd export` writes one: an
/// object without spaces, each field once, strings without escapes or
/// control characters, unsigned integers in plain digits, in about 60 % of
/// serde's time; any other line gives `None` and serde reads it.
fn scan_export(line: &str) -> Option<ExportFields<'_>> {
    fn text_or_null(v: Scalar<'_>) -> Option<Option<Cow<'_, str>>> {
        match v {
            Scalar::Str(s) => Some(Some(Cow::Borrowed(s))),
            Scalar::Null => Some(None),
            _ => None,
        }
    }
    fn uint_or_null(v: Scalar<'_>) -> Option<Option<u64>> {
        match v {
            Scalar::Uint(n) => Some(Some(n)),
            Scalar::Null => Some(None),
            _ => None,
        }
    }
    let b = line.as_bytes();
    // No control character anywhere: outside strings, the form has no
    // whitespace either. A fold without an early exit runs as vector code.
    if b.first() != Some(&b'{') || b.iter().fold(false, |any, &c| any | (c < 0x20)) {
        return None;
    }
    let (mut at, mut seen, mut f) = (1, 0u16, ExportFields::default());
    loop {
        let key = scan_text(line, &mut at)?;
        let bit = 1 << EXPORT_FIELDS.iter().position(|k| *k == key)?;
        if seen & bit != 0 || b.get(at) != Some(&b':') {
            return None;
        }
        seen |= bit;
        at += 1;
        let v = scan_scalar(line, &mut at)?;
        match key {
            "url" => f.url = text_or_null(v)??,
            "code" => f.code = text_or_null(v)?,
            "alias" => f.alias = text_or_null(v)?,
            "expires_at" => f.expires_at = text_or_null(v)?,
            "max_clicks" => f.max_clicks = uint_or_null(v)?,
            "redirect" => f.redirect = uint_or_null(v)?,
            "clicks" => f.clicks = uint_or_null(v)?,
            "disabled" => {
                f.disabled = match v {
                    Scalar::Bool(x) => Some(x),
                    Scalar::Null => None,
                    _ => return None,
                }
            }
            "created_at" => f.created_at = text_or_null(v)?.map(|_| serde::de::IgnoredAny),
            "short_url" => f.short_url = text_or_null(v)?.map(|_| serde::de::IgnoredAny),
            _ => return None,
        }
        match b.get(at) {
            Some(b',') => at += 1,
            Some(b'}') if at + 1 == b.len() => break,
            _ => return None,
        }
    }
    (seen & 1 != 0).then_some(f)
}

/// The string at `*at`, if it has no escape.
fn scan_text<'a>(line: &'a str, at: &mut usize) -> Option<&'a str> {
    let b = line.as_bytes();
    if b.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let end = start + memchr::memchr2(b'"', b'\\', &b[start..])?;
    if b[end] != b'"' {
        return None;
    }
    *at = end + 1;
    Some(&line[start..end])
}

fn scan_scalar<'a>(line: &'a str, at: &mut usize) -> Option<Scalar<'a>> {
    let rest = &line.as_bytes()[*at..];
    let (v, len) = match *rest.first()? {
        b'"' => return scan_text(line, at).map(Scalar::Str),
        b'n' if rest.starts_with(b"null") => (Scalar::Null, 4),
        b't' if rest.starts_with(b"true") => (Scalar::Bool(true), 4),
        b'f' if rest.starts_with(b"false") => (Scalar::Bool(false), 5),
        b'0' => (Scalar::Uint(0), 1),
        b'1'..=b'9' => {
            let len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            let n = rest[..len].iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
            (Scalar::Uint(n), len)
        }
        _ => return None,
    };
    *at += len;
    Some(v)
}

/// `max_clicks` and `redirect` of the fast paths, defaulted; `None` for a
/// value `new_link` would refuse.
fn plain_limits(max_clicks: Option<u64>, redirect: Option<u64>) -> Option<(u64, u16)> {
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

/// A create request in its common shape (`url`, and perhaps `alias`,
/// `max_clicks` and `redirect`), read without building a JSON map; `None`
/// sends it to `new_link`, which decides with its exact error. What this
/// accepts, `new_link` with `Source::Api` accepts the same way.
pub fn plain_create(body: &[u8], rules: &Rules<'_>) -> Option<NewLink> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create<'a> {
        #[serde(borrow)]
        url: Cow<'a, str>,
        #[serde(borrow, default)]
        alias: Option<Cow<'a, str>>,
        #[serde(default)]
        max_clicks: Option<u64>,
        #[serde(default)]
        redirect: Option<u64>,
    }
    let c: Create<'_> = serde_json::from_slice(body).ok()?;
    if let Some(a) = &c.alias {
        validate_alias(a).ok()?;
    }
    let (max_clicks, redirect) = plain_limits(c.max_clicks, c.redirect)?;
    let url = url_text(rules, &c.url).ok()?.into_owned();
    Some(NewLink { url, alias: c.alias.map(Cow::into_owned), expires_ms: 0, max_clicks, redirect, disabled: false, idempotency: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Evil;
    impl Blocks for Evil {
        fn blocks(&self, host: &str) -> bool {
            host == "evil.example"
        }
    }

    fn rules(max: usize) -> Rules<'static> {
        Rules { max_url_bytes: max, own_host: Some("sho.rt"), blocklist: &Evil }
    }

    fn obj(v: Value) -> Map<String, Value> {
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

    #[test]
    fn the_common_export_shape_is_read_as_new_link_reads_it() {
        let now = 1_700_000_000_000;
        let common = [
            r#"{"code":"abc1234","url":"https://a.example/x","created_at":"2026-11-30T12:00:00Z","expires_at":null,"max_clicks":null,"redirect":302,"clicks":3,"disabled":false}"#,
            r#"{"code":"abc1234","url":"https://a.example/x","expires_at":"2027-01-01T00:00:00Z","max_clicks":5,"redirect":301,"disabled":true}"#,
            r#"{"alias":"my-link","url":"https:\/\/a.example\/escaped","short_url":"http://x/my-link"}"#,
            r#"{"url":"https://a.example/","expires_at":"2020-01-01T00:00:00Z"}"#,
        ];
        let others = [
            r#"{"alias":"my-link","url":"https://a.example/\u00e9"}"#,
            r#"{"code":"api","url":"https://a.example/"}"#,
            r#"{"code":"abc1234","alias":"other","url":"https://a.example/"}"#,
            r#"{"code":"abc1234","url":"https://evil.example/"}"#,
            r#"{"code":"abc1234","url":"https://sho.rt/loop"}"#,
            r#"{"code":"abc1234","url":"https://a.example/","redirect":303}"#,
            r#"{"code":"abc1234","url":"https://a.example/","max_clicks":0}"#,
            r#"{"code":"abc1234","url":"https://a.example/","stats":[]}"#,
            r#"{"code":"abc1234","url":"https://a.example/","created_at":7}"#,
            r#"{"code":"abc1234","url":"https://a.example/0123456789012345678901234567890123456789012345678901234567890123"}"#,
        ];
        for line in common.iter().chain(&others) {
            let o: Map<String, Value> = serde_json::from_str(line).unwrap();
            let full = new_link(&o, &rules(64), now, Source::Import);
            if let Some(e) = export_line(line, &rules(64), now) {
                assert_eq!(full.as_ref().ok(), Some(&e.to_new_link()), "{line}");
                assert_eq!(e.clicks, o.get("clicks").and_then(Value::as_u64).unwrap_or(0), "{line}");
            } else {
                assert!(!common.contains(line), "the common shape went the long way: {line}");
            }
        }
    }

    #[test]
    fn the_export_scanner_reads_what_serde_reads_or_leaves_the_line_to_it() {
        let scanned = [
            r#"{"code":"abc1234","url":"https://a.example/x","created_at":"2026-11-30T12:00:00Z","expires_at":null,"max_clicks":null,"redirect":302,"clicks":3,"disabled":false}"#,
            r#"{"url":"https://a.example/","alias":"a-b","max_clicks":18446744073709551615,"disabled":true,"short_url":"http://x/a-b"}"#,
            r#"{"url":"","clicks":0,"disabled":null,"created_at":null}"#,
            r#"{"url":"https://a.example/é"}"#,
        ];
        let left = [
            r#"{"url":"https:\/\/a.example\/"}"#,
            r#"{ "url":"https://a.example/"}"#,
            r#"{"url":"https://a.example/"} "#,
            r#"{"url":"https://a.example/","url":"https://b.example/"}"#,
            r#"{"url":"https://a.example/","max_clicks":null,"max_clicks":3}"#,
            r#"{"url":"https://a.example/","clicks":01}"#,
            r#"{"url":"https://a.example/","clicks":-1}"#,
            r#"{"url":"https://a.example/","clicks":1.0}"#,
            r#"{"url":"https://a.example/","clicks":1e3}"#,
            r#"{"url":"https://a.example/","clicks":18446744073709551616}"#,
            r#"{"url":"https://a.example/","disabled":"true"}"#,
            r#"{"url":"https://a.example/","created_at":7}"#,
            r#"{"url":"https://a.example/","stats":[]}"#,
            r#"{"url":null}"#,
            r#"{"code":"abc1234"}"#,
            r#"{"url":"https://a.example/	tab"}"#,
            r#"{"url":"https://a.example/"}{"#,
            r#"{"url":"https://a.example/""#,
            r#"{}"#,
            "",
        ];
        for line in scanned {
            assert_eq!(scan_export(line), Some(serde_json::from_str::<ExportFields<'_>>(line).unwrap()), "{line}");
        }
        for line in left {
            assert_eq!(scan_export(line), None, "{line}");
        }
    }

    #[test]
    fn the_common_create_shape_is_read_as_new_link_reads_it() {
        let now = 1_700_000_000_000;
        let common = [
            r#"{"url":"https://a.example/x"}"#,
            r#"{"url":"https://a.example/x","alias":"my-link","max_clicks":5,"redirect":301}"#,
            r#"{"url":"https:\/\/a.example\/escaped","max_clicks":null}"#,
        ];
        let others = [
            r#"{"url":"https://a.example/","ttl_seconds":60}"#,
            r#"{"url":"https://a.example/","alias":"api"}"#,
            r#"{"url":"https://a.example/","alias":null}"#,
            r#"{"url":"https://evil.example/"}"#,
            r#"{"url":"https://sho.rt/loop"}"#,
            r#"{"url":"https://a.example/","redirect":303}"#,
            r#"{"url":"https://a.example/","max_clicks":0}"#,
            r#"{"url":"https://a.example/","code":"abc1234"}"#,
            r#"{"url":"https://a.example/","disabled":true}"#,
            r#"{"url":7}"#,
            r#"{"url":"https://a.example/","url":"https://b.example/"}"#,
            r#"{"url":"https://a.example/0123456789012345678901234567890123456789012345678901234567890123"}"#,
        ];
        for body in common.iter().chain(&others) {
            let full = serde_json::from_str::<Map<String, Value>>(body)
                .map_err(|_| ())
                .and_then(|o| new_link(&o, &rules(64), now, Source::Api).map_err(|_| ()));
            match plain_create(body.as_bytes(), &rules(64)) {
                Some(fast) => assert_eq!(full.as_ref().ok(), Some(&fast), "{body}"),
                None => assert!(!common.contains(body), "the common shape went the long way: {body}"),
            }
        }
    }
}
