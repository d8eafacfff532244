//! The fast path of `shortd import`: a line as `shortd export` writes it,
//! read without building a JSON map and without copying its strings, held
//! by tests to the same answers as the full `new_link`.

use std::borrow::Cow;

use super::fields::{plain_limits, url_text, Rules, MAX_TTL_SECONDS};
use crate::code::validate_alias;
use crate::store::NewLink;

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

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::*;
    use crate::input::fields::tests::rules;
    use crate::input::fields::{new_link, Source};

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
}
