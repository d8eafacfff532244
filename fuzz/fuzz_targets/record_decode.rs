//! The journal record decoder on arbitrary bytes.
//!
//! Recovery feeds `record::decode` whatever a segment file holds, so it must
//! refuse damage with an error, never a panic. Random bytes almost never
//! carry a valid xxh3 checksum, so besides the raw input the target also
//! decodes a copy whose checksums are recomputed ("sealed") record by
//! record, the way a well-behaved writer would have left them; that copy is
//! what reaches the per-kind body parsing. Every record that decodes must
//! re-encode to a record that decodes back to the same value and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortd::journal::record::{self, decode, encode, padded, HEADER_LEN, MAX_RECORD_LEN};
use xxhash_rust::xxh3::xxh3_64;

/// Recomputes the checksum of the record whose header starts at `at`, if
/// its claimed length fits in `buf`.
fn seal(buf: &mut [u8], at: usize) {
    let Some(rest) = buf.get_mut(at..) else { return };
    if rest.len() < HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
    if (HEADER_LEN..=rest.len().min(MAX_RECORD_LEN)).contains(&len) {
        let sum = xxh3_64(&rest[8..len]);
        rest[..8].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Decodes at `at`; a record that decodes must make sense and round-trip.
fn check(data: &[u8], at: usize) -> Option<usize> {
    let (rec, len) = decode(data, at).ok()?;
    assert!((HEADER_LEN..=MAX_RECORD_LEN).contains(&len), "length {len} out of range");
    assert!(at + len <= data.len(), "record at {at} of {len} bytes runs past {}", data.len());
    let mut out = Vec::new();
    let n = encode(&rec, &mut out);
    assert_eq!(n, len, "re-encoded length differs");
    assert_eq!(out.len(), padded(n));
    let (back, back_len) = decode(&out, 0).expect("a re-encoded record must decode");
    assert_eq!(back, rec);
    assert_eq!(back_len, n);
    Some(len)
}

fuzz_target!(|data: &[u8]| {
    for at in [0, 1, 8, 16, data.len().saturating_sub(HEADER_LEN), data.len(), data.len() + 8, usize::MAX] {
        check(data, at);
    }

    // Walk the input as replay walks a segment, sealing each record first.
    let mut sealed = data.to_vec();
    let mut at = 0;
    while at < sealed.len() {
        seal(&mut sealed, at);
        match check(&sealed, at) {
            Some(len) => at += padded(len),
            None => break,
        }
    }
    // Claimed lengths are checked against bounds without the checksum.
    let _ = record::claimed_len(data, 0);
});
