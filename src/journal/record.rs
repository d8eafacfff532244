//! The on-disk record format: encode and decode side by side.
//!
//! Every change to the store is one record appended to a log segment. A
//! record is self-checking (xxh3 over everything after the checksum field),
//! starts on an 8-byte boundary and is laid out little-endian:
//!
//! ```text
//! offset size field
//!      0    8 checksum   xxh3_64 of bytes [8, len)
//!      8    4 len        bytes in this record, header included, padding excluded
//!     12    1 kind       1 put, 2 delete, 3 clicks, 4 idempotency, 5 rollups, 6 raft,
//!                        7 synced
//!     13    1 version    1
//!     14    2 key_len    bytes of key (0 for clicks)
//!     16    8 lsn        log sequence number, strictly increasing
//!     24    8 time_ms    unix milliseconds when written
//!     32    .. body      per kind, below
//!   len-4    4 origin     version 2 only: the node that made the change
//! put:   id u64 | created_ms i64 | expires_ms i64 (0: never) | max_clicks u64
//!        (0: unlimited) | redirect u16 | flags u8 (1: disabled) | 0 u8 |
//!        url_len u32 | key | url
//! delete: key
//! clicks: count u32 | count x (key_len u16 | key | total u64)
//! idempotency: body_hash u64 | code_len u16 | key (the Idempotency-Key) | code
//! rollups: count u32 | count x rollup
//! rollup: key_len u16 | key | hour u32 (unix hours) | clicks u32 | bots u32 |
//!        values u16 | values x (dim u8 | value_len u8 | value | clicks u32)
//! raft:  group u32 | what u8 | 0 0 0 | index u64 | data (JSON; see below)
//! synced: to u64 (offset in this segment)
//! ```
//!
//! A synced record (a sync mark) says that every byte of its segment before
//! `to` was on disk (a completed `fdatasync`) when the record was written.
//! The appender writes one after every sync of the active segment
//! (segments of format 2 only), so that a start
//! after a power loss can tell damage in data that was never synced, and
//! so never acknowledged under `always`, from damage to synced data
//! (`journal::open`). Marks carry LSN 0 and no key; the journal's readers
//! (`replay_segment`, `Scan`) never hand them on.
//!
//! Raft records live only in a cluster node's Raft log (`DATA_DIR/raft/`),
//! never in a store's segments. `what` says what the record holds for its
//! group: 1 a log entry at `index` (data: the openraft entry), 2 the vote,
//! 3 the committed log id, 4 the purged log id, 5 "entries from `index` on
//! are void" (a truncation, no data). Readers that do not know kind 6 (a
//! single node's store) never meet it.
//!
//! A rollup is one link's whole hour (clicks, bots and the counted value of
//! each dimension, which `analytics` numbers); a later one for the same
//! link and hour replaces it. Snapshots carry rollups in the same bytes
//! (`encode_rollup`, `decode_rollup`).
//!
//! A version 1 record has origin 0 and no trailer; a single node writes
//! only those. In a cluster, `time_ms` and `origin` of a put or delete are
//! the change's version (last writer wins): the time and node where the
//! change was made, kept unchanged when it is replicated or compacted.
//!
//! Zero bytes follow the last record up to the next 8-byte boundary. A header
//! of eight zero bytes where a record would start marks the end of a segment's
//! data (segments are preallocated with zeros).

use xxhash_rust::xxh3::xxh3_64;

pub const HEADER_LEN: usize = 32;
/// Where the kind byte sits in a record.
pub const KIND_OFFSET: usize = 12;
pub const VERSION: u8 = 1;
/// Records with a non-zero origin carry it in a 4-byte trailer.
pub const VERSION_ORIGIN: u8 = 2;
pub const ALIGN: usize = 8;
const PUT_FIXED: usize = 40;
/// Largest record accepted when decoding; anything claiming more is damage.
pub const MAX_RECORD_LEN: usize = 16 << 20;

pub const KIND_PUT: u8 = 1;
pub const KIND_DELETE: u8 = 2;
pub const KIND_CLICKS: u8 = 3;
pub const KIND_IDEMPOTENCY: u8 = 4;
pub const KIND_ROLLUPS: u8 = 5;
pub const KIND_RAFT: u8 = 6;
pub const KIND_SYNCED: u8 = 7;
/// Padded bytes of a sync mark.
pub const SYNCED_LEN: usize = HEADER_LEN + 8;
const RAFT_FIXED: usize = 16;
/// Fixed bytes of a rollup besides its key and values.
pub const ROLLUP_FIXED: usize = 2 + 4 + 4 + 4 + 2;

pub const FLAG_DISABLED: u8 = 1;

/// The state of one link as stored in a put record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put<'a> {
    pub key: &'a [u8],
    pub url: &'a [u8],
    pub id: u64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub max_clicks: u64,
    pub redirect: u16,
    pub flags: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Put(Put<'a>),
    Delete {
        key: &'a [u8],
    },
    Clicks(Vec<(&'a [u8], u64)>),
    Idempotency {
        key: &'a [u8],
        body_hash: u64,
        code: &'a [u8],
    },
    Rollups(Vec<Rollup<'a>>),
    /// One Raft group's log entry or log state (see the module doc).
    Raft {
        group: u32,
        what: u8,
        index: u64,
        data: &'a [u8],
    },
    /// A sync mark: every byte of the segment before `to` was durable.
    Synced {
        to: u64,
    },
}

impl<'a> Body<'a> {
    /// The key a put or delete is about.
    pub fn key(&self) -> Option<&'a [u8]> {
        match self {
            Body::Put(p) => Some(p.key),
            Body::Delete { key } => Some(key),
            _ => None,
        }
    }
}

/// One link's counts for one hour, as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollup<'a> {
    pub key: &'a [u8],
    pub hour: u32,
    pub clicks: u32,
    pub bots: u32,
    /// `(dimension, value, clicks)`; values are at most 255 bytes.
    pub values: Vec<(u8, &'a [u8], u32)>,
}

/// Appends one rollup's bytes (the layout above) to `out`. Values longer
/// than 255 bytes are cut to 255.
pub fn encode_rollup(r: &Rollup<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
    out.extend_from_slice(r.key);
    out.extend_from_slice(&r.hour.to_le_bytes());
    out.extend_from_slice(&r.clicks.to_le_bytes());
    out.extend_from_slice(&r.bots.to_le_bytes());
    out.extend_from_slice(&(r.values.len() as u16).to_le_bytes());
    for (dim, value, n) in &r.values {
        let value = &value[..value.len().min(u8::MAX as usize)];
        out.push(*dim);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Reads one rollup from the start of `b`; returns it and its length.
pub fn decode_rollup(b: &[u8]) -> Result<(Rollup<'_>, usize), DecodeError> {
    let get = |at: usize, n: usize| b.get(at..at + n).ok_or(DecodeError::Malformed);
    let klen = u16_at(get(0, 2)?, 0) as usize;
    let key = get(2, klen)?;
    let mut at = 2 + klen;
    let fixed = get(at, 14)?;
    let (hour, clicks, bots, count) = (u32_at(fixed, 0), u32_at(fixed, 4), u32_at(fixed, 8), u16_at(fixed, 12) as usize);
    at += 14;
    let mut values = Vec::with_capacity(count.min(b.len() / 6));
    for _ in 0..count {
        let head = get(at, 2)?;
        let (dim, vlen) = (head[0], head[1] as usize);
        let value = get(at + 2, vlen)?;
        let n = u32_at(get(at + 2 + vlen, 4)?, 0);
        values.push((dim, value, n));
        at += 6 + vlen;
    }
    Ok((Rollup { key, hour, clicks, bots, values }, at))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: u64,
    pub time_ms: i64,
    /// Hash of the node id where the change was made; 0 on a single node.
    pub origin: u32,
    pub body: Body<'a>,
}

/// Why bytes at an offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("end of data")]
    End,
    #[error("record runs past the end of the segment")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed record")]
    Malformed,
}

pub fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

/// Appends the encoded record to `out` (padded to 8 bytes) and returns its
/// unpadded length.
pub fn encode(rec: &Record<'_>, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let len = encode_unsealed(rec, out);
    renumber(&mut out[start..], rec.lsn);
    len
}

/// `encode` without the checksum, for a record that the log numbers (and
/// so sums) when it takes it (`renumber`).
pub fn encode_unsealed(rec: &Record<'_>, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let (kind, key_len) = match &rec.body {
        Body::Put(p) => {
            out.extend_from_slice(&p.id.to_le_bytes());
            out.extend_from_slice(&p.created_ms.to_le_bytes());
            out.extend_from_slice(&p.expires_ms.to_le_bytes());
            out.extend_from_slice(&p.max_clicks.to_le_bytes());
            out.extend_from_slice(&p.redirect.to_le_bytes());
            out.push(p.flags);
            out.push(0);
            out.extend_from_slice(&(p.url.len() as u32).to_le_bytes());
            out.extend_from_slice(p.key);
            out.extend_from_slice(p.url);
            (KIND_PUT, p.key.len())
        }
        Body::Delete { key } => {
            out.extend_from_slice(key);
            (KIND_DELETE, key.len())
        }
        Body::Clicks(entries) => {
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (key, total) in entries {
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&total.to_le_bytes());
            }
            (KIND_CLICKS, 0)
        }
        Body::Idempotency { key, body_hash, code } => {
            out.extend_from_slice(&body_hash.to_le_bytes());
            out.extend_from_slice(&(code.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(code);
            (KIND_IDEMPOTENCY, key.len())
        }
        Body::Rollups(rollups) => {
            out.extend_from_slice(&(rollups.len() as u32).to_le_bytes());
            for r in rollups {
                encode_rollup(r, out);
            }
            (KIND_ROLLUPS, 0)
        }
        Body::Raft { group, what, index, data } => {
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&[*what, 0, 0, 0]);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(data);
            (KIND_RAFT, 0)
        }
        Body::Synced { to } => {
            out.extend_from_slice(&to.to_le_bytes());
            (KIND_SYNCED, 0)
        }
    };
    if rec.origin != 0 {
        out.extend_from_slice(&rec.origin.to_le_bytes());
    }
    let len = out.len() - start;
    let h = &mut out[start..start + HEADER_LEN];
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12] = kind;
    h[13] = if rec.origin != 0 { VERSION_ORIGIN } else { VERSION };
    h[14..16].copy_from_slice(&(key_len as u16).to_le_bytes());
    h[16..24].copy_from_slice(&rec.lsn.to_le_bytes());
    h[24..32].copy_from_slice(&rec.time_ms.to_le_bytes());
    out.resize(start + padded(len), 0);
    len
}

/// Gives an encoded record (as `encode` wrote it, padding included) the
/// LSN `lsn`, and its checksum anew: records made on other threads are
/// numbered by the log that takes them.
pub fn renumber(rec: &mut [u8], lsn: u64) {
    let len = u32::from_le_bytes(rec[8..12].try_into().expect("4 bytes")) as usize;
    rec[16..24].copy_from_slice(&lsn.to_le_bytes());
    let sum = xxh3_64(&rec[8..len]);
    rec[..8].copy_from_slice(&sum.to_le_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The unpadded length claimed by the header at `at`, checked against bounds
/// but not against the checksum.
pub fn claimed_len(data: &[u8], at: usize) -> Result<usize, DecodeError> {
    let rest = data.get(at..).ok_or(DecodeError::Truncated)?;
    if rest.len() < HEADER_LEN {
        return if rest.iter().all(|&b| b == 0) { Err(DecodeError::End) } else { Err(DecodeError::Truncated) };
    }
    if rest[..16].iter().all(|&b| b == 0) {
        return Err(DecodeError::End);
    }
    let len = u32_at(rest, 8) as usize;
    if !(HEADER_LEN..=MAX_RECORD_LEN).contains(&len) {
        return Err(DecodeError::Malformed);
    }
    if len > rest.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(len)
}

/// A put record's key and URL, as `peek_put` finds them.
pub type KeyUrl<'a> = (&'a [u8], &'a [u8]);

/// The key and URL of the put record at `at` (`None` for a record of
/// another kind) and its unpadded length, without verifying the checksum:
/// for scans that only pick candidates and `decode` (checksum included)
/// each one they keep, such as the store's search.
pub fn peek_put(data: &[u8], at: usize) -> Result<(Option<KeyUrl<'_>>, usize), DecodeError> {
    let len = claimed_len(data, at)?;
    let b = &data[at..at + len];
    if b[KIND_OFFSET] != KIND_PUT {
        return Ok((None, len));
    }
    let end = match b[13] {
        VERSION => len,
        VERSION_ORIGIN if len >= HEADER_LEN + 4 => len - 4,
        _ => return Err(DecodeError::Malformed),
    };
    let body = &b[HEADER_LEN..end];
    if body.len() < PUT_FIXED {
        return Err(DecodeError::Malformed);
    }
    let (key_len, url_len) = (u16_at(b, 14) as usize, u32_at(body, 36) as usize);
    if body.len() != PUT_FIXED + key_len + url_len {
        return Err(DecodeError::Malformed);
    }
    Ok((Some((&body[PUT_FIXED..PUT_FIXED + key_len], &body[PUT_FIXED + key_len..])), len))
}

/// Decodes the record at `at`, returning it and its unpadded length.
pub fn decode(data: &[u8], at: usize) -> Result<(Record<'_>, usize), DecodeError> {
    let len = claimed_len(data, at)?;
    let b = &data[at..at + len];
    if u64_at(b, 0) != xxh3_64(&b[8..]) {
        return Err(DecodeError::Checksum);
    }
    let (body, origin) = match b[13] {
        VERSION => (&b[HEADER_LEN..], 0),
        VERSION_ORIGIN if len >= HEADER_LEN + 4 => (&b[HEADER_LEN..len - 4], u32_at(b, len - 4)),
        _ => return Err(DecodeError::Malformed),
    };
    let key_len = u16_at(b, 14) as usize;
    let lsn = u64_at(b, 16);
    let time_ms = u64_at(b, 24) as i64;
    let body = match b[12] {
        KIND_PUT => {
            if body.len() < PUT_FIXED {
                return Err(DecodeError::Malformed);
            }
            let url_len = u32_at(body, 36) as usize;
            if body.len() != PUT_FIXED + key_len + url_len {
                return Err(DecodeError::Malformed);
            }
            Body::Put(Put {
                id: u64_at(body, 0),
                created_ms: u64_at(body, 8) as i64,
                expires_ms: u64_at(body, 16) as i64,
                max_clicks: u64_at(body, 24),
                redirect: u16_at(body, 32),
                flags: body[34],
                key: &body[PUT_FIXED..PUT_FIXED + key_len],
                url: &body[PUT_FIXED + key_len..],
            })
        }
        KIND_DELETE => {
            if body.len() != key_len {
                return Err(DecodeError::Malformed);
            }
            Body::Delete { key: body }
        }
        KIND_CLICKS => {
            let count = u32_at(body.get(..4).ok_or(DecodeError::Malformed)?, 0) as usize;
            let mut entries = Vec::with_capacity(count.min(body.len() / 10));
            let mut at = 4;
            for _ in 0..count {
                let klen = u16_at(body.get(at..at + 2).ok_or(DecodeError::Malformed)?, 0) as usize;
                let key = body.get(at + 2..at + 2 + klen).ok_or(DecodeError::Malformed)?;
                let total = body.get(at + 2 + klen..at + 10 + klen).ok_or(DecodeError::Malformed)?;
                entries.push((key, u64_at(total, 0)));
                at += 10 + klen;
            }
            if at != body.len() {
                return Err(DecodeError::Malformed);
            }
            Body::Clicks(entries)
        }
        KIND_IDEMPOTENCY => {
            if body.len() < 10 {
                return Err(DecodeError::Malformed);
            }
            let code_len = u16_at(body, 8) as usize;
            if body.len() != 10 + key_len + code_len {
                return Err(DecodeError::Malformed);
            }
            Body::Idempotency { body_hash: u64_at(body, 0), key: &body[10..10 + key_len], code: &body[10 + key_len..] }
        }
        KIND_ROLLUPS => {
            let count = u32_at(body.get(..4).ok_or(DecodeError::Malformed)?, 0) as usize;
            let mut rollups = Vec::with_capacity(count.min(body.len() / ROLLUP_FIXED));
            let mut at = 4;
            for _ in 0..count {
                let (r, used) = decode_rollup(&body[at..])?;
                rollups.push(r);
                at += used;
            }
            if at != body.len() {
                return Err(DecodeError::Malformed);
            }
            Body::Rollups(rollups)
        }
        KIND_RAFT => {
            if body.len() < RAFT_FIXED || key_len != 0 || body[5..8] != [0, 0, 0] {
                return Err(DecodeError::Malformed);
            }
            Body::Raft { group: u32_at(body, 0), what: body[4], index: u64_at(body, 8), data: &body[RAFT_FIXED..] }
        }
        KIND_SYNCED => {
            if body.len() != 8 || key_len != 0 {
                return Err(DecodeError::Malformed);
            }
            Body::Synced { to: u64_at(body, 0) }
        }
        _ => return Err(DecodeError::Malformed),
    };
    Ok((Record { lsn, time_ms, origin, body }, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn check(rec: Record<'_>) {
        let mut buf = vec![];
        let len = encode(&rec, &mut buf);
        assert_eq!(buf.len() % ALIGN, 0);
        let (back, back_len) = decode(&buf, 0).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back_len, len);
        let mut numbered = vec![];
        encode(&Record { lsn: 0, ..rec.clone() }, &mut numbered);
        renumber(&mut numbered, rec.lsn);
        assert_eq!(numbered, buf, "a record numbered after encoding is the one encoded with its LSN");
        let (peeked, peek_len) = peek_put(&buf, 0).unwrap();
        assert_eq!(peek_len, len);
        match &rec.body {
            Body::Put(p) => assert_eq!(peeked, Some((p.key, p.url))),
            _ => assert_eq!(peeked, None),
        }
        for i in 0..len {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 0).is_err(), "flip at {i} went unnoticed");
        }
    }

    proptest! {
        #[test]
        fn put_round_trips(key in bytes(64), url in bytes(300), id: u64, c: i64, e: i64, m: u64, r: u16, f: u8, lsn: u64, t: i64, o: u32) {
            check(Record { lsn, time_ms: t, origin: o, body: Body::Put(Put { key: &key, url: &url, id, created_ms: c, expires_ms: e, max_clicks: m, redirect: r, flags: f }) });
        }

        #[test]
        fn clicks_round_trip(keys in proptest::collection::vec((bytes(64), any::<u64>()), 0..20), lsn: u64) {
            let entries = keys.iter().map(|(k, n)| (k.as_slice(), *n)).collect();
            check(Record { lsn, time_ms: 1, origin: 0, body: Body::Clicks(entries) });
        }

        #[test]
        fn delete_and_idempotency_round_trip(key in bytes(64), code in bytes(64), h: u64, lsn: u64, o: u32) {
            check(Record { lsn, time_ms: 2, origin: o, body: Body::Delete { key: &key } });
            check(Record { lsn, time_ms: 3, origin: 0, body: Body::Idempotency { key: &key, body_hash: h, code: &code } });
        }

        #[test]
        fn rollups_round_trip(
            rollups in proptest::collection::vec(
                (bytes(64), any::<u32>(), any::<u32>(), any::<u32>(), proptest::collection::vec((0u8..5, bytes(255), any::<u32>()), 0..12)),
                0..8,
            ),
            lsn: u64,
            o: u32,
        ) {
            let body = Body::Rollups(
                rollups
                    .iter()
                    .map(|(k, hour, clicks, bots, values)| Rollup {
                        key: k,
                        hour: *hour,
                        clicks: *clicks,
                        bots: *bots,
                        values: values.iter().map(|(d, v, n)| (*d, v.as_slice(), *n)).collect(),
                    })
                    .collect(),
            );
            check(Record { lsn, time_ms: 4, origin: o, body });
        }

        #[test]
        fn raft_records_round_trip(group: u32, what: u8, index: u64, data in bytes(300), lsn: u64) {
            check(Record { lsn, time_ms: 4, origin: 0, body: Body::Raft { group, what, index, data: &data } });
        }

        #[test]
        fn sync_marks_round_trip(to: u64, lsn: u64) {
            check(Record { lsn, time_ms: 5, origin: 0, body: Body::Synced { to } });
        }

        #[test]
        fn decoding_garbage_never_panics(data in bytes(200), at in 0usize..220) {
            let _ = decode(&data, at);
        }
    }

    #[test]
    fn zeros_are_the_end() {
        assert_eq!(decode(&[0u8; 64], 0).unwrap_err(), DecodeError::End);
        assert_eq!(decode(&[0u8; 5], 0).unwrap_err(), DecodeError::End);
    }
}
