//! Snapshots: the index image at a log position.
//!
//! A snapshot lets start-up skip the log before its replay position. It is
//! written to a temporary file, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either the old snapshot or the new one. The
//! image may be "fuzzy" (the index can change while it is written); replay
//! from the recorded position fixes that up, because replay keeps whichever
//! location of a key lies later in the log.
//!
//! ```text
//! header  magic "SHORTDSN" | version u32 | replay_seg u32 | replay_off u64 |
//!         next_id u64 | next_lsn u64 | created_ms i64          (48 bytes)
//! entries tag u8, then by tag:
//!         1 location  key_len u8 | key | seg u32 | off u32 | live u8 (1: put, 0: delete)
//!         2 clicks    key_len u8 | key | total u64
//!         3 idem      key_len u8 | key | body_hash u64 | at_ms i64 | code_len u8 | code
//!         4 live      seg u32 | live_bytes u64
//!         5 rollup    len u32 | one rollup, as in a rollups record (record.rs)
//!         6 counts    live_links u64
//!         255 end
//! trailer entries u64 | xxh3_64 of every byte before it (u64)
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::file::rename_durably;

const MAGIC: &[u8; 8] = b"SHORTDSN";
/// 2: location entries carry a live byte. 3: rollup entries. 4: the
/// locations and most click totals live in the index table of the same
/// number (`table.rs`); a counts entry holds the live links. Versions 2
/// and 3 are read as they are (their locations load into memory).
pub const VERSION: u32 = 4;
const OLDEST_READ: u32 = 2;
const HEADER_LEN: usize = 48;
const TAG_LOC: u8 = 1;
const TAG_CLICKS: u8 = 2;
const TAG_IDEM: u8 = 3;
const TAG_LIVE: u8 = 4;
const TAG_ROLLUP: u8 = 5;
const TAG_COUNTS: u8 = 6;
const TAG_END: u8 = 255;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub replay_seg: u32,
    pub replay_off: u64,
    pub next_id: u64,
    pub next_lsn: u64,
    pub created_ms: i64,
}

/// One entry as read back from a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Loc {
        key: &'a [u8],
        seg: u32,
        off: u32,
        live: bool,
    },
    Clicks {
        key: &'a [u8],
        total: u64,
    },
    Idem {
        key: &'a [u8],
        body_hash: u64,
        at_ms: i64,
        code: &'a [u8],
    },
    Live {
        seg: u32,
        bytes: u64,
    },
    /// One rollup's bytes (`record::decode_rollup` reads them).
    Rollup(&'a [u8]),
    Counts {
        live_links: u64,
    },
}

pub fn snapshot_path(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    dir.join(format!("snapshot-{:020}.snap", meta.next_lsn))
}

/// Streams entries into a checksummed snapshot file. Dropped unfinished,
/// it removes its temporary file.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hash: Xxh3,
    entries: u64,
    tmp: PathBuf,
    path: PathBuf,
    finished: bool,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, meta: &SnapshotMeta) -> io::Result<Self> {
        let path = snapshot_path(dir, meta);
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp)?;
        let mut w =
            SnapshotWriter { out: BufWriter::with_capacity(1 << 20, file), hash: Xxh3::new(), entries: 0, tmp, path, finished: false };
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&meta.replay_seg.to_le_bytes());
        h.extend_from_slice(&meta.replay_off.to_le_bytes());
        h.extend_from_slice(&meta.next_id.to_le_bytes());
        h.extend_from_slice(&meta.next_lsn.to_le_bytes());
        h.extend_from_slice(&meta.created_ms.to_le_bytes());
        w.put(&h)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn put_key(&mut self, tag: u8, key: &[u8]) -> io::Result<()> {
        self.entries += 1;
        self.put(&[tag, key.len() as u8])?;
        self.put(key)
    }

    pub fn loc(&mut self, key: &[u8], seg: u32, off: u32, live: bool) -> io::Result<()> {
        self.put_key(TAG_LOC, key)?;
        self.put(&seg.to_le_bytes())?;
        self.put(&off.to_le_bytes())?;
        self.put(&[live as u8])
    }

    pub fn clicks(&mut self, key: &[u8], total: u64) -> io::Result<()> {
        self.put_key(TAG_CLICKS, key)?;
        self.put(&total.to_le_bytes())
    }

    pub fn idem(&mut self, key: &[u8], body_hash: u64, at_ms: i64, code: &[u8]) -> io::Result<()> {
        self.put_key(TAG_IDEM, key)?;
        self.put(&body_hash.to_le_bytes())?;
        self.put(&at_ms.to_le_bytes())?;
        self.put(&[code.len() as u8])?;
        self.put(code)
    }

    pub fn live(&mut self, seg: u32, bytes: u64) -> io::Result<()> {
        self.entries += 1;
        self.put(&[TAG_LIVE])?;
        self.put(&seg.to_le_bytes())?;
        self.put(&bytes.to_le_bytes())
    }

    /// One rollup's bytes, from `record::encode_rollup`.
    pub fn rollup(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.entries += 1;
        self.put(&[TAG_ROLLUP])?;
        self.put(&(bytes.len() as u32).to_le_bytes())?;
        self.put(bytes)
    }

    pub fn counts(&mut self, live_links: u64) -> io::Result<()> {
        self.entries += 1;
        self.put(&[TAG_COUNTS])?;
        self.put(&live_links.to_le_bytes())
    }

    /// Writes the trailer, makes the file durable and renames it into place.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.put(&[TAG_END])?;
        let entries = self.entries.to_le_bytes();
        self.put(&entries)?;
        let sum = self.hash.digest();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        rename_durably(&self.tmp, &self.path)?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed at byte {0}")]
    Malformed(usize),
}

/// A snapshot file read into memory and verified.
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub version: u32,
    data: Vec<u8>,
}

impl Snapshot {
    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        Snapshot::parse(std::fs::read(path)?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Snapshot, SnapshotError> {
        if data.len() < HEADER_LEN + 17 || &data[..8] != MAGIC {
            return Err(SnapshotError::Malformed(0));
        }
        let body_end = data.len() - 8;
        let sum = u64::from_le_bytes(data[body_end..].try_into().expect("8 bytes"));
        if sum != xxh3_64(&data[..body_end]) {
            return Err(SnapshotError::Checksum);
        }
        let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        if !(OLDEST_READ..=VERSION).contains(&u32_at(8)) {
            return Err(SnapshotError::Malformed(8));
        }
        let meta = SnapshotMeta {
            replay_seg: u32_at(12),
            replay_off: u64_at(16),
            next_id: u64_at(24),
            next_lsn: u64_at(32),
            created_ms: u64_at(40) as i64,
        };
        let snap = Snapshot { meta, version: u32_at(8), data };
        let mut count = 0u64;
        let end = snap.for_each(|_| count += 1)?;
        if end + 17 != snap.data.len() || u64::from_le_bytes(snap.data[end + 1..end + 9].try_into().expect("8 bytes")) != count {
            return Err(SnapshotError::Malformed(end));
        }
        Ok(snap)
    }

    /// Calls `f` for every entry; returns the offset of the end tag.
    pub fn for_each<'s>(&'s self, mut f: impl FnMut(Entry<'s>)) -> Result<usize, SnapshotError> {
        let d = &self.data[..self.data.len() - 8];
        let mut at = HEADER_LEN;
        let take = |at: &mut usize, n: usize| -> Result<&'s [u8], SnapshotError> {
            let s = d.get(*at..*at + n).ok_or(SnapshotError::Malformed(*at))?;
            *at += n;
            Ok(s)
        };
        let num = |b: &[u8]| {
            let mut x = [0u8; 8];
            x[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(x)
        };
        loop {
            let tag = take(&mut at, 1)?[0];
            if tag == TAG_END {
                return Ok(at - 1);
            }
            if tag == TAG_LIVE {
                let seg = num(take(&mut at, 4)?) as u32;
                let bytes = num(take(&mut at, 8)?);
                f(Entry::Live { seg, bytes });
                continue;
            }
            if tag == TAG_COUNTS {
                f(Entry::Counts { live_links: num(take(&mut at, 8)?) });
                continue;
            }
            if tag == TAG_ROLLUP {
                let len = num(take(&mut at, 4)?) as usize;
                f(Entry::Rollup(take(&mut at, len)?));
                continue;
            }
            let klen = take(&mut at, 1)?[0] as usize;
            let key = take(&mut at, klen)?;
            match tag {
                TAG_LOC => {
                    let seg = num(take(&mut at, 4)?) as u32;
                    let off = num(take(&mut at, 4)?) as u32;
                    let live = take(&mut at, 1)?[0] == 1;
                    f(Entry::Loc { key, seg, off, live });
                }
                TAG_CLICKS => f(Entry::Clicks { key, total: num(take(&mut at, 8)?) }),
                TAG_IDEM => {
                    let body_hash = num(take(&mut at, 8)?);
                    let at_ms = num(take(&mut at, 8)?) as i64;
                    let clen = take(&mut at, 1)?[0] as usize;
                    f(Entry::Idem { key, body_hash, at_ms, code: take(&mut at, clen)? });
                }
                _ => return Err(SnapshotError::Malformed(at - klen - 2)),
            }
        }
    }
}

/// Snapshot files in `dir`, newest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".snap")))
        .collect();
    found.sort();
    found.reverse();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { replay_seg: 3, replay_off: 4096, next_id: 77, next_lsn: 900, created_ms: 5 };
        let mut w = SnapshotWriter::create(dir.path(), &meta).unwrap();
        w.loc(b"abc", 1, 32, true).unwrap();
        w.clicks(b"abc", 12).unwrap();
        w.idem(b"key-1", 99, 1234, b"abc").unwrap();
        w.live(1, 500).unwrap();
        w.rollup(b"rollup bytes").unwrap();
        w.counts(41).unwrap();
        let path = w.finish().unwrap();
        let snap = Snapshot::read(&path).unwrap();
        assert_eq!(snap.meta, meta);
        let mut seen = vec![];
        snap.for_each(|e| seen.push(format!("{e:?}"))).unwrap();
        assert_eq!(seen.len(), 6);
        assert!(seen[5].contains("41"));
        assert!(seen[2].contains("Idem"));
        let mut bytes = std::fs::read(&path).unwrap();
        for i in [0, 20, 50, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert!(Snapshot::parse(bytes.clone()).is_err(), "flip at {i}");
            bytes[i] ^= 1;
        }
        assert_eq!(list(dir.path()).unwrap(), vec![path]);
    }
}
