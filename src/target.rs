//! Validation of target URLs: what a link may point at.
//!
//! A target is stored exactly as given when it is plain ASCII (so `Location`
//! is byte-for-byte what the client sent); a target with non-ASCII text is
//! stored in the URL parser's ASCII form (punycode host, percent-encoded
//! path), because a `Location` header must be ASCII to reach every client.

use std::borrow::Cow;

/// Why a target was refused; the text is the problem's `reason`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {0} bytes")]
    TooLong(usize),
    #[error("must not contain whitespace or control characters (including CR and LF)")]
    BadCharacter,
    #[error("is not a valid absolute URL ({0})")]
    Unparsable(String),
    #[error("must use the http or https scheme")]
    Scheme,
    #[error("must start with http:// or https:// and use forward slashes")]
    NotAbsolute,
    #[error("must have a host")]
    NoHost,
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("must not point back at this shortener")]
    SelfReference,
    #[error("points at a blocked domain")]
    Blocked,
}

/// Checks `raw` and returns the form to store.
pub fn validate(raw: &str, max_len: usize, own_host: Option<&str>) -> Result<String, TargetError> {
    validate_with(raw, max_len, own_host, |_| false).map(Cow::into_owned)
}

/// `validate`, then asks `blocked` about the host of the stored form, from
/// the same parse of the URL. The stored form is borrowed when it is `raw`
/// as given (the common case).
pub fn validate_with<'a>(
    raw: &'a str,
    max_len: usize,
    own_host: Option<&str>,
    blocked: impl FnOnce(&str) -> bool,
) -> Result<Cow<'a, str>, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if raw.len() > max_len {
        return Err(TargetError::TooLong(max_len));
    }
    // The plain shape is printable ASCII: no whitespace or control
    // characters to look for.
    if let Some(host) = plain_host(raw) {
        if own_host.is_some_and(|own| own.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').eq_ignore_ascii_case(host)) {
            return Err(TargetError::SelfReference);
        }
        // The parser's host is the lower-case one.
        let lower = if host.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(host.to_ascii_lowercase()) } else { host.into() };
        if blocked(&lower) {
            return Err(TargetError::Blocked);
        }
        return Ok(raw.into());
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(TargetError::BadCharacter);
    }
    parsed(raw, max_len, own_host, blocked).map(Cow::Owned)
}

/// The host of a target in the shape most links have, which the URL parser
/// can neither refuse nor change: `http://` or `https://`, a host name of
/// ASCII letters, digits and `-` in dot-separated labels (none empty, none
/// an IDNA `xn--` label, the last one starting with a letter, so it is no
/// IP address), then the end or `/`, `?` or `#` and printable ASCII without
/// a backslash. `None` sends the target through the parser.
fn plain_host(raw: &str) -> Option<&str> {
    let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://"))?;
    let end = memchr::memchr3(b'/', b'?', b'#', rest.as_bytes()).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let mut last = "";
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--"));
        if !ok {
            return None;
        }
        last = label;
    }
    let tail_ok = tail.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    (last.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && tail_ok).then_some(host)
}

fn parsed(raw: &str, max_len: usize, own_host: Option<&str>, blocked: impl FnOnce(&str) -> bool) -> Result<String, TargetError> {
    let url = url::Url::parse(raw).map_err(|e| TargetError::Unparsable(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    // The parser forgives `http:host` and backslashes; clients reading
    // Location may not, and the stored form is sent as it was given.
    let starts = |prefix: &str| raw.as_bytes().get(..prefix.len()).is_some_and(|b| b.eq_ignore_ascii_case(prefix.as_bytes()));
    if !(starts("http://") || starts("https://")) || raw.contains('\\') {
        return Err(TargetError::NotAbsolute);
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or(TargetError::NoHost)?;
    let authority = raw.split_once("//").map_or("", |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
        return Err(TargetError::Credentials);
    }
    if let Some(own) = own_host {
        fn bare(h: &str) -> &str {
            h.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.')
        }
        if bare(host).eq_ignore_ascii_case(bare(own)) {
            return Err(TargetError::SelfReference);
        }
    }
    let stored = if raw.is_ascii() { raw.to_string() } else { url.to_string() };
    if stored.len() > max_len {
        return Err(TargetError::TooLong(max_len));
    }
    // The host of the stored form: re-parsing `stored` gives the same one.
    if blocked(host) {
        return Err(TargetError::Blocked);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_targets_unchanged() {
        for ok in ["https://example.com", "http://example.com/a?b=c#d", "https://x.y/%20", "http://127.0.0.1:9/p", "https://[::1]/"] {
            assert_eq!(validate(ok, 8192, None).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn refuses_bad_targets() {
        let cases: &[(&str, TargetError)] = &[
            ("", TargetError::Empty),
            ("ftp://example.com/", TargetError::Scheme),
            ("javascript:alert(1)", TargetError::Scheme),
            ("https://exa mple.com", TargetError::BadCharacter),
            ("https://example.com/\r\nSet-Cookie: a=b", TargetError::BadCharacter),
            ("https://example.com/\t", TargetError::BadCharacter),
            ("https://example.com/\u{0}", TargetError::BadCharacter),
            ("https://user:pw@example.com/", TargetError::Credentials),
            ("https://sho.rt/abc", TargetError::SelfReference),
            ("https://SHO.RT./abc", TargetError::SelfReference),
            ("http:example.com/", TargetError::NotAbsolute),
            ("http:\\\\example.com\\a", TargetError::NotAbsolute),
            ("http://@example.com/", TargetError::Credentials),
        ];
        for (raw, want) in cases {
            assert_eq!(validate(raw, 8192, Some("sho.rt")).as_ref(), Err(want), "{raw:?}");
        }
        assert!(matches!(validate("example.com", 8192, None), Err(TargetError::Unparsable(_))));
        assert_eq!(validate("https://[::1]/x", 8192, Some("[::1]")), Err(TargetError::SelfReference));
        assert_eq!(validate("https://[::1]/x", 8192, Some("::1")), Err(TargetError::SelfReference));
        assert!(matches!(validate("http://", 8192, None), Err(TargetError::Unparsable(_) | TargetError::NoHost)));
        assert_eq!(
            validate_with("https://Evil.Example/x", 8192, None, |h| h == "evil.example").map(Cow::into_owned),
            Err(TargetError::Blocked)
        );
        assert_eq!(validate(&format!("https://e.com/{}", "a".repeat(9000)), 8192, None), Err(TargetError::TooLong(8192)));
    }

    #[test]
    fn the_plain_shape_is_decided_as_the_parser_decides() {
        let samples = [
            "https://example.com",
            "https://Example.COM/Path?q=1#f",
            "http://a-b.c-d.example/x/%zz/~y",
            "https://a.b.c.d.e.f/?",
            "https://x.y#frag",
            "https://sho.rt/loop",
            "https://SHO.RT/loop",
            "https://1.2.3.4/",
            "https://1.2.3.999/",
            "https://a..b/",
            "https://a.b./",
            "https://xn--bcher-kva.example/",
            "https://xn--zz.example/",
            "https://a.b/\\x",
            "https://a_b.example/",
            "https://a.0x1f/",
            "https://-a-.example/",
            "https://a.b:80/",
            "https://a.b:99999/",
            "https://u@a.b/",
            "https://Blocked.Example/x",
        ];
        for raw in samples {
            let slow = parsed(raw, 8192, Some("sho.rt"), |h| h == "blocked.example");
            if plain_host(raw).is_some() {
                assert_eq!(validate_with(raw, 8192, Some("sho.rt"), |h| h == "blocked.example").map(Cow::into_owned), slow, "{raw}");
            }
        }
        assert_eq!(plain_host("https://Example.COM/Path?q=1#f"), Some("Example.COM"));
        assert_eq!(plain_host("https://1.2.3.4/"), None);
        assert_eq!(plain_host("https://xn--zz.example/"), None);
    }

    #[test]
    fn non_ascii_targets_are_stored_in_ascii_form() {
        assert_eq!(validate("https://bücher.example/ä", 8192, None).unwrap(), "https://xn--bcher-kva.example/%C3%A4");
    }
}
