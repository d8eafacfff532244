//! JSON responses, and a link as the API shows it.
//!
//! Every handler answers through `json` (or `json_bytes` for a body made
//! already); a single link, the answer of a create, get or patch, is
//! written by `link_json` straight into one buffer, held by a test to the
//! bytes serde_json would write for `LinkView`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::problem::Body;
use crate::clock::rfc3339;
use crate::store::Link;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

#[derive(Serialize)]
pub struct LinkView<'a> {
    code: &'a str,
    short_url: String,
    url: &'a str,
    created_at: String,
    expires_at: Option<String>,
    max_clicks: Option<u64>,
    redirect: u16,
    clicks: u64,
    disabled: bool,
}

pub(super) fn view_in<'a>(public_base: &str, link: &'a Link) -> LinkView<'a> {
    LinkView {
        code: &link.code,
        short_url: format!("{public_base}{}", link.code),
        url: &link.url,
        created_at: rfc3339(link.created_ms),
        expires_at: (link.expires_ms != 0).then(|| rfc3339(link.expires_ms)),
        max_clicks: (link.max_clicks != 0).then_some(link.max_clicks),
        redirect: link.redirect,
        clicks: link.clicks,
        disabled: link.disabled,
    }
}

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default())
}

pub(super) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    resp
}

/// One link as JSON: the bytes `json(.., &view(..))` would give, written
/// straight into one buffer of the right size (a create, get or patch
/// answers with this; a test holds the two to the same bytes).
pub(super) fn link_json(public_base: &str, link: &Link) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + public_base.len() + 2 * link.code.len() + link.url.len());
    out.extend_from_slice(b"{\"code\":");
    json_str(&mut out, &[&link.code]);
    out.extend_from_slice(b",\"short_url\":");
    json_str(&mut out, &[public_base, &link.code]);
    out.extend_from_slice(b",\"url\":");
    json_str(&mut out, &[&link.url]);
    out.extend_from_slice(b",\"created_at\":");
    json_str(&mut out, &[&rfc3339(link.created_ms)]);
    out.extend_from_slice(b",\"expires_at\":");
    match link.expires_ms {
        0 => out.extend_from_slice(b"null"),
        ms => json_str(&mut out, &[&rfc3339(ms)]),
    }
    out.extend_from_slice(b",\"max_clicks\":");
    match link.max_clicks {
        0 => out.extend_from_slice(b"null"),
        n => json_int(&mut out, n),
    }
    out.extend_from_slice(b",\"redirect\":");
    json_int(&mut out, link.redirect.into());
    out.extend_from_slice(b",\"clicks\":");
    json_int(&mut out, link.clicks);
    out.extend_from_slice(if link.disabled { b",\"disabled\":true}" } else { b",\"disabled\":false}" });
    out
}

fn json_int(out: &mut Vec<u8>, n: u64) {
    let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
}

/// The parts as one JSON string, escaped as serde_json escapes.
fn json_str(out: &mut Vec<u8>, parts: &[&str]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for part in parts {
        let bytes = part.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]],
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(code: &str, url: &str, expires_ms: i64, max_clicks: u64, disabled: bool) -> Link {
        Link {
            code: code.into(),
            url: url.into(),
            id: 7,
            created_ms: 1_764_601_774_123,
            expires_ms,
            max_clicks,
            redirect: 301,
            clicks: 42,
            disabled,
        }
    }

    #[test]
    fn link_json_is_what_serde_json_writes() {
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        let links = [
            link("abc123", "https://example.com/a?b=c#d", 0, 0, false),
            link("my-alias", "https://example.com/\"quoted\"\\back", 1_800_000_000_000, 5, true),
            link("x", &every_byte, 1_800_000_000_500, 1 << 53, false),
            link("x", "https://bücher.example/ä", 0, 1, true),
        ];
        for base in ["http://127.0.0.1:8080/", "https://sho.rt/\"odd\"/"] {
            for l in &links {
                let want = serde_json::to_vec(&view_in(base, l)).unwrap();
                assert_eq!(String::from_utf8(link_json(base, l)).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }
}
