//! Writes the hand-picked seed inputs into `fuzz/corpus/<target>/seed-*`.
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`. Seeds are real
//! encoded records and snapshots made by shortd's own writers, plus a few
//! typical URLs, codes and paths, so each fuzzer starts past the checksums
//! and magic numbers instead of having to discover them.

use std::fs;
use std::path::Path;

use shortd::journal::record::{encode, Body, Put, Record};
use shortd::journal::snapshot::{SnapshotMeta, SnapshotWriter};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn records() {
    let put = Put {
        key: b"abc1234",
        url: b"https://example.com/a?b=c",
        id: 42,
        created_ms: 1_700_000_000_000,
        expires_ms: 0,
        max_clicks: 0,
        redirect: 302,
        flags: 0,
    };
    let recs = [
        ("put", Record { lsn: 1, time_ms: 1_700_000_000_000, origin: 0, body: Body::Put(put.clone()) }),
        (
            "put-disabled",
            Record { lsn: 2, time_ms: 5, origin: 0, body: Body::Put(Put { flags: 1, expires_ms: 9, max_clicks: 3, redirect: 301, ..put }) },
        ),
        ("delete", Record { lsn: 3, time_ms: 6, origin: 0, body: Body::Delete { key: b"my-alias" } }),
        ("clicks", Record { lsn: 4, time_ms: 7, origin: 0, body: Body::Clicks(vec![(b"abc1234", 10), (b"x", 1)]) }),
        ("clicks-empty", Record { lsn: 5, time_ms: 8, origin: 0, body: Body::Clicks(vec![]) }),
        ("idem", Record { lsn: 6, time_ms: 9, origin: 0, body: Body::Idempotency { key: b"req-1", body_hash: 77, code: b"abc1234" } }),
    ];
    let mut segment = Vec::new();
    for (name, rec) in &recs {
        let mut one = Vec::new();
        encode(rec, &mut one);
        write("record_decode", name, &one);
        encode(rec, &mut segment);
    }
    segment.extend_from_slice(&[0u8; 16]);
    write("record_decode", "segment", &segment);
}

fn snapshots() {
    let dir = std::env::temp_dir().join(format!("shortd-fuzz-seeds-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let meta = SnapshotMeta { replay_seg: 1, replay_off: 4096, next_id: 77, next_lsn: 900, created_ms: 5 };
    let mut w = SnapshotWriter::create(&dir, &meta).expect("snapshot writer");
    w.loc(b"abc1234", 1, 32, true).unwrap();
    w.loc(b"gone", 1, 96, false).unwrap();
    w.clicks(b"abc1234", 12).unwrap();
    w.idem(b"req-1", 99, 1234, b"abc1234").unwrap();
    w.live(1, 500).unwrap();
    let path = w.finish().expect("finish snapshot");
    write("snapshot_load", "full", &fs::read(&path).unwrap());
    fs::remove_file(&path).unwrap();

    let meta = SnapshotMeta { next_lsn: 901, ..meta };
    let path = SnapshotWriter::create(&dir, &meta).unwrap().finish().unwrap();
    write("snapshot_load", "empty", &fs::read(&path).unwrap());
    let _ = fs::remove_dir_all(&dir);
}

fn text() {
    for (i, u) in [
        "https://example.com",
        "http://example.com/a?b=c#d",
        "https://x.y/%20",
        "http://127.0.0.1:9/p",
        "https://[::1]/",
        "https://bücher.example/ä",
        "https://sho.rt/abc",
        "https://user:pw@example.com/",
        "ftp://example.com/",
        "http://xn--bcher-kva.example:8080/p/../q?x=%41",
        // Short as given, longer than the 40-byte limit once percent-encoded.
        "https://e.com/ääääääääääää",
    ]
    .iter()
    .enumerate()
    {
        write("url_validate", &i.to_string(), u.as_bytes());
    }
    for (i, c) in ["abc1234", "zzzzzzz", "0000000", "my-alias_2", "API", "favicon.ico"].iter().enumerate() {
        write("code_decode", &i.to_string(), c.as_bytes());
    }
    write("code_decode", "id", &42u64.to_le_bytes());
    write("code_decode", "key-and-id", &[7u8; 56]);
    for (i, p) in [
        "/abc1234",
        "/my-alias_2",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/links",
        "/api/v1/links:batch",
        "/api/v1/links/abc",
        "/api/v1/stats/hot",
        "/",
        "/a%20b",
    ]
    .iter()
    .enumerate()
    {
        write("router", &i.to_string(), p.as_bytes());
    }
}

fn main() {
    records();
    snapshots();
    text();
}
