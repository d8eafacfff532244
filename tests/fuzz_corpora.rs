//! The fuzzers' corpora (fuzz/corpus/<target>/), replayed as a plain test so
//! CI checks every input the fuzzers kept without needing libFuzzer: the
//! same entry points must not panic and must keep the same invariants
//! (docs/fuzzing.md has the full fuzz targets and how to run them). A
//! missing or empty corpus fails under `CI=true` and says SKIPPED
//! elsewhere: a replay of nothing is no test.

mod common;

use std::path::Path;

use shortd::code::{unbase62, validate_alias, CodeKey, CODE_SPACE};
use shortd::http::router::{route, Route};
use shortd::journal::record::{decode, encode};
use shortd::journal::snapshot::Snapshot;

/// Every input kept for `target`; empty (after `skip_or_fail`) when there
/// are none.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let inputs: Vec<Vec<u8>> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().filter_map(|e| std::fs::read(e.path()).ok()).collect(),
        Err(_) => Vec::new(),
    };
    if inputs.is_empty() {
        common::prereq::skip_or_fail(
            &format!("the fuzz corpus {}", dir.display()),
            "git checkout -- fuzz/corpus (it is kept in the repository)",
        );
    }
    inputs
}

#[test]
fn record_decoder_corpus() {
    for data in corpus("record_decode") {
        for at in [0, 8, 16] {
            if let Ok((rec, len)) = decode(&data, at) {
                let mut again = Vec::new();
                assert_eq!(encode(&rec, &mut again), len);
                assert_eq!(decode(&again, 0).unwrap().0, rec);
            }
        }
    }
}

#[test]
fn snapshot_loader_corpus() {
    for data in corpus("snapshot_load") {
        if let Ok(snap) = Snapshot::parse(data) {
            snap.for_each(|_| {}).unwrap();
        }
    }
}

#[test]
fn code_decoder_corpus() {
    let key = CodeKey::from_bytes([42; CodeKey::BYTES]);
    for data in corpus("code_decode") {
        let _ = unbase62(&data);
        let _ = key.decode(&data);
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = validate_alias(text);
        }
        if data.len() >= 8 {
            let id = u64::from_le_bytes(data[..8].try_into().unwrap()) % CODE_SPACE;
            assert_eq!(key.decode(&key.encode(id).unwrap()), Some(id));
        }
    }
}

#[test]
fn router_corpus() {
    for data in corpus("router") {
        let Ok(path) = std::str::from_utf8(&data) else { continue };
        if let Route::Redirect(code) | Route::Link(code) = route(path) {
            assert!((1..=64).contains(&code.len()));
            assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
    }
}

#[test]
fn url_validator_corpus() {
    for data in corpus("url_validate") {
        let Ok(raw) = std::str::from_utf8(&data) else { continue };
        if let Ok(stored) = shortd::target::validate(raw, 8192, Some("sho.rt")) {
            assert!(!stored.bytes().any(|b| b.is_ascii_control() || b.is_ascii_whitespace()), "{stored:?}");
            assert!(http::HeaderValue::from_str(&stored).is_ok(), "{stored:?}");
            assert_eq!(shortd::target::validate(&stored, 8192, Some("sho.rt")).as_deref(), Ok(stored.as_str()));
        }
    }
}
