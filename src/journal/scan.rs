//! Walking a segment's records in order, past damage.
//!
//! One walk for everything that reads a whole segment: compaction, the
//! background scrub and `shortd check`. It yields every intact record and,
//! for each damaged range, where it starts and where the next intact record
//! resumes, found by trying every 8-byte boundary after it (as `--repair`
//! does at start-up). A walk reaches the end of a segment only at a header
//! of zeros followed by nothing but zeros, so a zeroed hole in the middle
//! of a segment is damage too, never a silent end. Sync marks are the
//! journal's own bookkeeping: the walk steps over them.

use super::record::{self, Body, DecodeError, Record};

/// What a walk finds next.
pub enum Found<'a> {
    Record {
        at: usize,
        rec: Record<'a>,
        len: usize,
    },
    /// Bytes from `at` do not decode; `resume` is the next intact record.
    Damage {
        at: usize,
        resume: Option<usize>,
        reason: String,
    },
}

/// A walk over `data[from..end]`; `end` is where the writer's data stops
/// (the whole segment for a sealed one).
pub struct Scan<'a> {
    data: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Scan<'a> {
    pub fn new(data: &'a [u8], from: usize, end: usize) -> Scan<'a> {
        Scan { data: &data[..end.min(data.len())], at: from, done: false }
    }

    /// Where the walk stands: the next record to look at, or the end.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Scan<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        if self.done {
            return None;
        }
        let at = self.at;
        let reason = match record::decode(self.data, at) {
            Ok((Record { body: Body::Synced { .. }, .. }, len)) => {
                self.at = at + record::padded(len);
                return self.next();
            }
            Ok((rec, len)) => {
                self.at = at + record::padded(len);
                return Some(Found::Record { at, rec, len });
            }
            Err(DecodeError::End) if self.data[at.min(self.data.len())..].iter().all(|&b| b == 0) => {
                self.done = true;
                return None;
            }
            Err(DecodeError::End) => "zeros where a record should start, with data after them".to_string(),
            Err(e) => e.to_string(),
        };
        let resume = next_record(self.data, at);
        match resume {
            Some(r) => self.at = r,
            None => {
                self.at = self.data.len();
                self.done = true;
            }
        }
        Some(Found::Damage { at, resume, reason })
    }
}

/// The offset of the next intact record after damage at `at`.
pub fn next_record(data: &[u8], at: usize) -> Option<usize> {
    (at + record::ALIGN..data.len()).step_by(record::ALIGN).find(|&o| record::decode(data, o).is_ok())
}

/// What lies past damage at `at`: the intact records after it, and the
/// furthest point a sync mark among them says was on disk.
pub struct PastDamage {
    pub records: usize,
    pub synced_to: u64,
}

pub fn past_damage(data: &[u8], at: usize) -> PastDamage {
    let mut past = PastDamage { records: 0, synced_to: 0 };
    let mut next = next_record(data, at);
    while let Some(o) = next {
        next = match record::decode(data, o) {
            Ok((rec, len)) => {
                match rec.body {
                    Body::Synced { to } => past.synced_to = past.synced_to.max(to),
                    _ => past.records += 1,
                }
                Some(o + record::padded(len))
            }
            Err(DecodeError::End) if data[o..].iter().all(|&b| b == 0) => None,
            Err(_) => next_record(data, o),
        };
    }
    past
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{Body, Record};

    fn put(out: &mut Vec<u8>, key: &str) {
        let body = Body::Delete { key: key.as_bytes() };
        record::encode(&Record { lsn: 1, time_ms: 0, origin: 0, body }, out);
    }

    fn keys(data: &[u8]) -> (Vec<String>, Vec<usize>) {
        let (mut keys, mut damage) = (vec![], vec![]);
        for f in Scan::new(data, 0, data.len()) {
            match f {
                Found::Record { rec: Record { body: Body::Delete { key }, .. }, .. } => keys.push(String::from_utf8_lossy(key).into()),
                Found::Record { .. } => unreachable!(),
                Found::Damage { at, .. } => damage.push(at),
            }
        }
        (keys, damage)
    }

    #[test]
    fn a_walk_resumes_after_a_damaged_record_and_after_a_zeroed_hole() {
        let mut data = Vec::new();
        for k in ["a", "b", "c", "d"] {
            put(&mut data, k);
        }
        let rec_len = data.len() / 4;
        data.extend_from_slice(&[0u8; 64]);
        assert_eq!(keys(&data), (vec!["a".into(), "b".into(), "c".into(), "d".into()], vec![]));
        data[rec_len + 20] ^= 0x40;
        assert_eq!(keys(&data), (vec!["a".into(), "c".into(), "d".into()], vec![rec_len]));
        data[rec_len + 20] ^= 0x40;
        for b in &mut data[2 * rec_len..3 * rec_len] {
            *b = 0;
        }
        assert_eq!(keys(&data), (vec!["a".into(), "b".into(), "d".into()], vec![2 * rec_len]));
    }
}
