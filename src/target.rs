//! Validation of target URLs: what a link may point at.
//!
//! A target is stored exactly as given when it is plain ASCII (so `Location`
//! is byte-for-byte what the client sent); a target with non-ASCII text is
//! stored in the URL parser's ASCII form (punycode host, percent-encoded
//! path), because a `Location` header must be ASCII to reach every client.

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
    validate_with(raw, max_len, own_host, |_| false)
}

/// `validate`, then asks `blocked` about the host of the stored form, from
/// the same parse of the URL.
pub fn validate_with(raw: &str, max_len: usize, own_host: Option<&str>, blocked: impl FnOnce(&str) -> bool) -> Result<String, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if raw.len() > max_len {
        return Err(TargetError::TooLong(max_len));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(TargetError::BadCharacter);
    }
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
        assert_eq!(validate_with("https://Evil.Example/x", 8192, None, |h| h == "evil.example"), Err(TargetError::Blocked));
        assert_eq!(validate(&format!("https://e.com/{}", "a".repeat(9000)), 8192, None), Err(TargetError::TooLong(8192)));
    }

    #[test]
    fn non_ascii_targets_are_stored_in_ascii_form() {
        assert_eq!(validate("https://bücher.example/ä", 8192, None).unwrap(), "https://xn--bcher-kva.example/%C3%A4");
    }
}
