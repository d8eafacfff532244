//! The target URL validator on arbitrary text.
//!
//! Whatever `target::validate` accepts is stored and later sent verbatim as
//! a `Location` header, so an accepted URL must be short enough, free of
//! whitespace and control characters, an absolute http(s) URL, a valid
//! header value, not a link back to the shortener, and stable when
//! validated again.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use shortd::target::validate;

const OWN: &str = "sho.rt";

fn check(raw: &str, max_len: usize, own: Option<&str>) {
    let Ok(stored) = validate(raw, max_len, own) else { return };
    assert!(!stored.is_empty());
    assert!(stored.len() <= max_len, "stored {} bytes, limit {max_len}", stored.len());
    assert!(!stored.bytes().any(|b| b.is_ascii_control() || b.is_ascii_whitespace()), "control or space in {stored:?}");
    // The stored form keeps the client's spelling, scheme case included
    // (`hTtp://m` is accepted and stored as given; see docs/fuzzing.md and
    // artifacts/url_validate/crash-mixed-case-scheme-min). RFC 3986 makes
    // schemes case-insensitive, so the prefix is compared that way here.
    let prefix = stored.get(..8).unwrap_or(&stored).to_ascii_lowercase();
    assert!(prefix.starts_with("http://") || prefix.starts_with("https://"), "scheme of {stored:?}");
    assert!(!stored.contains('\\'), "backslash in {stored:?}");
    let authority = &stored[prefix.find("//").unwrap() + 2..];
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    assert!(!authority.contains('@'), "user info in {stored:?}");
    assert!(HeaderValue::from_str(&stored).is_ok(), "{stored:?} is no header value");
    let url = url::Url::parse(&stored).unwrap_or_else(|e| panic!("stored {stored:?} does not parse: {e}"));
    assert!(matches!(url.scheme(), "http" | "https"));
    let host = url.host_str().unwrap_or_default();
    assert!(!host.is_empty(), "{stored:?} has no host");
    if let Some(own) = own {
        let bare = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        assert!(!bare.eq_ignore_ascii_case(own), "{stored:?} points back at {own}");
    }
    assert_eq!(validate(&stored, max_len, own).as_deref(), Ok(stored.as_str()), "validating the stored form again");
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    check(raw, 8192, Some(OWN));
    check(raw, 40, Some(OWN));
    check(raw, 8192, None);
});
