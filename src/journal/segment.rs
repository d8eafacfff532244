//! Log segment files: creation with preallocation, and read-only memory maps.
//!
//! This file holds the `unsafe` of mapping a segment (and of asking the
//! kernel which of a mapping's pages are in memory). A segment is
//! preallocated to its full size before it is mapped and is never truncated
//! while the process runs, so no mapped page lies past the end of its file
//! and a read through the map cannot raise SIGBUS. Writes never go through
//! the map; the writer uses `pwrite` on its own descriptor, which the shared
//! page cache makes visible to the map.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use xxhash_rust::xxh3::xxh3_64;

pub const SEGMENT_HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"SHORTDLG";
/// Format 2: the appender puts sync marks in the segment (`record`'s
/// `synced` kind), which a start reads to tell unsynced damage from damage
/// to synced data. Format 1 segments (older builds) are read as before.
const FORMAT_VERSION: u32 = 2;
const FORMATS_READ: [u32; 2] = [1, 2];

pub fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08}.log"))
}

/// Where a segment is built before it is renamed into place.
pub fn temporary_path(dir: &Path, number: u32) -> PathBuf {
    segment_path(dir, number).with_extension("log.tmp")
}

/// The page size `resident` assumes (x86-64 and aarch64 Linux defaults).
const PAGE: usize = 4096;
/// Pages `resident` checks at most in one call.
const RESIDENT_PAGES: usize = 4;

/// Whether every page under `bytes`, a slice of a file mapping, is in the
/// page cache, so that reading it cannot wait for the disk. Spans of more
/// than `RESIDENT_PAGES` pages answer false.
pub fn resident(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let start = bytes.as_ptr() as usize & !(PAGE - 1);
    let end = bytes.as_ptr() as usize + bytes.len();
    let pages = (end - start).div_ceil(PAGE);
    let mut held = [0u8; RESIDENT_PAGES];
    if pages > RESIDENT_PAGES {
        return false;
    }
    // SAFETY: mincore only reads the page tables for [start, end), which
    // lies within the live mapping `bytes` borrows (rounded down to its
    // page); `held` has room for one byte per page of that span.
    let r = unsafe { libc::mincore(start as *mut libc::c_void, end - start, held.as_mut_ptr()) };
    r == 0 && held[..pages].iter().all(|b| b & 1 == 1)
}

/// Parses `00000042.log` into 42.
pub fn segment_number(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 8 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// One mapped segment. Readers hold it through an `Arc`, so a segment that
/// compaction removes stays readable until the last reader lets go.
pub struct Segment {
    pub number: u32,
    pub path: PathBuf,
    map: Mmap,
}

impl Segment {
    /// Creates a zero-filled segment of `size` bytes with its header, and
    /// returns the write handle beside the mapping. With `written_zeros` the
    /// zeros are written out, not just reserved: see `write_zeros`.
    ///
    /// The file is built under a temporary name and renamed into place, so
    /// a crash mid-roll leaves a stray `.tmp` (removed at the next start),
    /// never a segment without its header.
    pub fn create(dir: &Path, number: u32, size: u64, written_zeros: bool) -> io::Result<(Segment, File)> {
        let file = Segment::prepare(dir, number, size, written_zeros)?;
        Segment::install(dir, number, file)
    }

    /// The slow half of `create`: the segment built and synced under its
    /// temporary name, which a helper thread can do ahead of the roll.
    pub fn prepare(dir: &Path, number: u32, size: u64, written_zeros: bool) -> io::Result<File> {
        let tmp = temporary_path(dir, number);
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        let made = (|| {
            preallocate(&file, size)?;
            if written_zeros {
                write_zeros(&file, size)?;
            }
            file.write_all_at(&header(number, FORMAT_VERSION), 0)?;
            file.sync_all()
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(file)
    }

    /// The quick half of `create`: a prepared segment renamed into place
    /// and mapped.
    pub fn install(dir: &Path, number: u32, file: File) -> io::Result<(Segment, File)> {
        let (tmp, path) = (temporary_path(dir, number), segment_path(dir, number));
        if let Err(e) = super::file::rename_durably(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let seg = Segment::map(number, path, &file)?;
        Ok((seg, file))
    }

    /// Maps an existing segment and checks its header.
    pub fn open(dir: &Path, number: u32) -> io::Result<Segment> {
        let seg = Segment::map_existing(dir, number)?;
        seg.check_header()?;
        Ok(seg)
    }

    /// `open` for many segments: every header is asked of the disk before
    /// any is checked, so a start with a cold page cache waits about one
    /// disk read, not one per segment (47 of them took 0.4 s at 20 M links).
    /// A failure names its segment.
    pub fn open_many(dir: &Path, numbers: &[u32]) -> Result<Vec<Segment>, (u32, io::Error)> {
        let mut mapped = Vec::with_capacity(numbers.len());
        for &n in numbers {
            let seg = Segment::map_existing(dir, n).map_err(|e| (n, e))?;
            let _ = seg.map.advise_range(memmap2::Advice::WillNeed, 0, SEGMENT_HEADER_LEN.min(seg.map.len()));
            mapped.push(seg);
        }
        for seg in &mapped {
            seg.check_header().map_err(|e| (seg.number, e))?;
        }
        Ok(mapped)
    }

    fn map_existing(dir: &Path, number: u32) -> io::Result<Segment> {
        let path = segment_path(dir, number);
        let file = File::open(&path)?;
        Segment::map(number, path, &file)
    }

    fn check_header(&self) -> io::Result<()> {
        if self.map.len() < SEGMENT_HEADER_LEN || !FORMATS_READ.iter().any(|&v| self.map[..SEGMENT_HEADER_LEN] == header(self.number, v)) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad segment header"));
        }
        Ok(())
    }

    /// Whether the appender keeps sync marks in this segment (format 2 on).
    pub fn has_sync_marks(&self) -> bool {
        self.map.get(8..12).is_some_and(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]) >= 2)
    }

    fn map(number: u32, path: PathBuf, file: &File) -> io::Result<Segment> {
        // SAFETY: the file is preallocated and only ever grows while mapped
        // (recovery truncates nothing; it overwrites a bad tail with zeros),
        // so every mapped page is backed by the file. Writes go through
        // pwrite, never through this read-only map; the bytes a reader sees
        // may change only in the unwritten tail, which readers reach only
        // through index entries pointing at completed writes.
        let map = unsafe { Mmap::map(file)? };
        Ok(Segment { number, path, map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn header(number: u32, version: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&number.to_le_bytes());
    let sum = xxh3_64(&h[..24]);
    h[24..32].copy_from_slice(&sum.to_le_bytes());
    h
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    // Reserving the blocks up front means a later pwrite inside the segment
    // cannot fail for lack of space; ENOSPC shows up here, at roll time.
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size).map_err(io::Error::from)
}

/// Blocks that `fallocate` reserves are "unwritten" extents: the first
/// write into one must also change the extent tree, so every fdatasync of
/// a fresh stretch of the segment carries a metadata write beside the data
/// (like an append that grows a file). Writing the zeros once, when the
/// segment is made, leaves later fdatasyncs only the data to flush: here
/// (ext4, virtio disk) 131–141 µs per 8 KiB pwrite + fdatasync against
/// 195–224 µs into reserved blocks and 214–218 µs appending. It costs one
/// extra sequential write of the segment (~35 ms for 64 MiB here), so
/// only logs that sync per batch or on a timer ask for it.
fn write_zeros(file: &File, size: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// The mapped segments by number, shared by readers and the log's writer.
/// Readers take an `Arc` out, so a segment removed here stays readable
/// until its last reader lets go.
#[derive(Default)]
pub struct Segments {
    map: parking_lot::RwLock<std::collections::BTreeMap<u32, std::sync::Arc<Segment>>>,
}

impl Segments {
    pub fn get(&self, n: u32) -> Option<std::sync::Arc<Segment>> {
        self.map.read().get(&n).cloned()
    }

    /// Every segment, oldest first.
    pub fn all(&self) -> Vec<std::sync::Arc<Segment>> {
        self.map.read().values().cloned().collect()
    }

    pub fn insert(&self, seg: Segment) {
        self.map.write().insert(seg.number, std::sync::Arc::new(seg));
    }

    pub fn remove(&self, n: u32) {
        self.map.write().remove(&n);
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    pub fn contains(&self, n: u32) -> bool {
        self.map.read().contains_key(&n)
    }

    /// Bytes the segment files span.
    pub fn bytes(&self) -> u64 {
        self.map.read().values().map(|s| s.len() as u64).sum()
    }

    /// Padded length and kind of the record at `loc`, read from its header.
    pub fn record_len_at(&self, loc: Loc) -> Option<(u64, u8)> {
        let segs = self.map.read();
        let seg = segs.get(&loc.seg)?;
        let len = super::record::claimed_len(seg.bytes(), loc.off as usize).ok()?;
        Some((super::record::padded(len) as u64, seg.bytes()[loc.off as usize + super::record::KIND_OFFSET]))
    }
}

/// Where a record lies: segment number and byte offset. Ordering follows
/// the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub seg: u32,
    pub off: u32,
}
