//! The request router on arbitrary paths.
//!
//! `route` sees every request path before anything else; it must never
//! panic, and a code it hands on must be something a code or alias can be.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use shortd::code::{is_code_byte, MAX_ALIAS_LEN};
use shortd::http::router::{route, Route};

fn check_code(code: &str) {
    assert!((1..=MAX_ALIAS_LEN).contains(&code.len()), "code {code:?} has a bad length");
    assert!(code.bytes().all(is_code_byte), "code {code:?} has a bad byte");
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let r = route(path);
    match &r {
        Route::Redirect(code) => {
            check_code(code);
            assert_eq!(path.strip_prefix('/'), Some(*code));
        }
        Route::Link(code) => {
            check_code(code);
            assert_eq!(path.strip_prefix("/api/v1/links/"), Some(*code));
        }
        _ => {}
    }
    let _ = (r.name(), r.allow());
    for m in [Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
        let _ = r.allows(&m);
    }
});
