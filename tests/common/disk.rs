//! Byte-level access to a data directory: its segments, records and
//! snapshots, for reading what the store wrote and damaging it on purpose.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shortd::journal::record;
use shortd::journal::segment::{segment_number, SEGMENT_HEADER_LEN};

/// Segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .expect("read data dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = segment_number(e.file_name().to_str()?)?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

pub fn newest_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("at least one segment")
}

/// Snapshot files in `dir`.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect()
}

pub fn remove_snapshots(dir: &Path) {
    for p in snapshots(dir) {
        std::fs::remove_file(p).expect("remove snapshot");
    }
}

/// A record found by walking a segment: where it starts, its padded size
/// and its kind.
#[derive(Clone, Copy, Debug)]
pub struct RecordAt {
    pub off: usize,
    pub padded: usize,
    pub kind: u8,
    pub key_end: usize,
}

/// Every record of a segment file from its header to the first byte that
/// does not decode, the log's sync marks left out.
pub fn records(path: &Path) -> Vec<RecordAt> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).expect("read segment");
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok((rec, len)) = record::decode(&data, at) {
        let kind = data[at + 12];
        if kind == record::KIND_SYNCED {
            at += record::padded(len);
            continue;
        }
        let key_end = match rec.body {
            record::Body::Put(p) => at + record::HEADER_LEN + 40 + p.key.len(),
            _ => at + len,
        };
        out.push(RecordAt { off: at, padded: record::padded(len), kind, key_end });
        at += record::padded(len);
    }
    out
}

/// Where the data of a segment ends: just after its last good record,
/// sync marks included.
pub fn data_end(path: &Path) -> usize {
    let data = std::fs::read(path).expect("read segment");
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok((_, len)) = record::decode(&data, at) {
        at += record::padded(len);
    }
    at
}

/// The key (code) of the put record at `off`.
pub fn put_key(path: &Path, off: usize) -> String {
    let data = std::fs::read(path).expect("read segment");
    match record::decode(&data, off).expect("a record").0.body {
        record::Body::Put(p) => String::from_utf8(p.key.to_vec()).expect("utf-8 key"),
        other => panic!("not a put at {off}: {other:?}"),
    }
}

pub fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).expect("open segment for writing");
    f.write_all_at(bytes, off).expect("write into segment");
    f.sync_all().expect("sync segment");
}

pub fn flip_bit(path: &Path, off: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).expect("open segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).expect("read byte");
    b[0] ^= 0x04;
    f.write_all_at(&b, off).expect("write byte");
    f.sync_all().expect("sync");
}

/// Appends bytes past the current end of a file (which grows it).
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = OpenOptions::new().append(true).open(path).expect("open for append");
    f.write_all(bytes).expect("append");
    f.sync_all().expect("sync");
}

/// Bytes that no record header can be mistaken for: never eight zeros in a
/// row, and no plausible length field.
pub fn garbage(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 0x80
        })
        .collect()
}

/// Copies every file of a data directory except the lock: what a crash at
/// this moment would leave on disk, when the store was synced and idle.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for e in std::fs::read_dir(from).expect("read data dir") {
        let e = e.expect("dir entry");
        let name = e.file_name();
        if name == "lock" || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::copy(e.path(), to.join(&name)) {
            Ok(_) => {}
            // A snapshot's temporary file may be renamed away meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("copy {}: {err}", e.path().display()),
        }
    }
}
