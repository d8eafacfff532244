//! The snapshot loader on arbitrary bytes.
//!
//! Start-up reads the newest snapshot file; a damaged one must be refused
//! with an error so recovery can fall back to the log. The trailer is an
//! xxh3 checksum over the whole file, so the target also parses a copy with
//! the checksum recomputed, which is what reaches the entry parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortd::journal::snapshot::{Entry, Snapshot};
use xxhash_rust::xxh3::xxh3_64;

fn load(data: Vec<u8>) {
    let len = data.len();
    let Ok(snap) = Snapshot::parse(data) else { return };
    let mut entries = 0usize;
    let end = snap
        .for_each(|e| {
            entries += 1;
            match e {
                Entry::Loc { key, .. } | Entry::Clicks { key, .. } => assert!(key.len() <= u8::MAX as usize),
                Entry::Idem { key, code, .. } => assert!(key.len() <= u8::MAX as usize && code.len() <= u8::MAX as usize),
                Entry::Live { .. } => {}
            }
        })
        .expect("a snapshot that parsed must iterate");
    assert_eq!(end + 17, len, "end tag must sit right before the trailer");
    let mut again = 0usize;
    assert_eq!(snap.for_each(|_| again += 1).unwrap(), end);
    assert_eq!(again, entries);
}

fuzz_target!(|data: &[u8]| {
    load(data.to_vec());
    if data.len() >= 8 {
        let mut sealed = data.to_vec();
        let body_end = sealed.len() - 8;
        let sum = xxh3_64(&sealed[..body_end]);
        sealed[body_end..].copy_from_slice(&sum.to_le_bytes());
        load(sealed);
    }
});
