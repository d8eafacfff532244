//! Index tables: the store's index as an on-disk hash table, mapped and
//! read in place, so that neither memory nor start-up time grows with the
//! number of links.
//!
//! A table maps a key's 64-bit hash to the location of the key's newest
//! record and its click total. Keys themselves are not stored: the record
//! at the location carries its key, and a reader checks it (two keys with
//! the same hash both have slots; the reader keeps probing past the one
//! whose record names another key). Tables are written once, by a merge of
//! the previous table with the changes since, and never changed in place.
//!
//! ```text
//! header block (4096 bytes; the rest zero)
//!     0  8 magic       "SHORTDIX"
//!     8  4 version     1
//!    12  4 zero
//!    16  8 slots       number of slots (a whole number of blocks' worth)
//!    24  8 count       occupied slots
//!    32  8 blocks      slot blocks after the header block
//!    40  8 seed_check  xxh3_64 of the hash seed's bytes: a table built
//!                      under another code key is refused
//!    48  8 checks_sum  xxh3_64 of the checksum array
//!    56  8 header_sum  xxh3_64 of bytes [0, 56)
//! blocks × 4096 bytes, 170 slots each (the last 16 bytes of a block zero):
//!     slot  hash u64 (0: empty) | seg u32 | off u32 | clicks u64
//! blocks × 8 bytes: the xxh3_64 of each block
//! ```
//!
//! Opening checks the header and the checksum array, which is 1/512 of the
//! file. Each block is checked against its checksum the first time a read
//! touches it, so a read never trusts bytes that were not verified, and a
//! start does not read the whole table.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut};
use xxhash_rust::xxh3::xxh3_64;

use super::file::rename_durably;
use super::segment::Loc;

pub const BLOCK: usize = 4096;
pub const SLOT: usize = 24;
pub const SLOTS_PER_BLOCK: usize = 170;
const MAGIC: &[u8; 8] = b"SHORTDIX";
const VERSION: u32 = 1;
const HEADER_SUMMED: usize = 56;
/// Slots per entry when a table is built: a load of at most 0.75 keeps
/// linear probes short.
const LOAD_NUM: u64 = 4;
const LOAD_DEN: u64 = 3;
/// Tables up to this size are built in anonymous memory and written with
/// `pwrite` (what the power-loss harness can follow); larger ones through
/// a shared mapping of the file, so a merge of tens of millions of links
/// takes no memory of its own.
const IN_MEMORY_MAX: u64 = 64 << 20;

/// One occupied slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub hash: u64,
    pub loc: Loc,
    pub clicks: u64,
}

/// A block whose bytes do not match its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("index table block {block} fails its checksum")]
pub struct Damaged {
    pub block: u64,
}

/// The hash a table files a key under; never 0 (an empty slot).
pub fn hash_key(seed: u64, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, seed).max(1)
}

pub fn seed_check(seed: u64) -> u64 {
    xxh3_64(&seed.to_le_bytes())
}

pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("index-{number:020}.idx"))
}

/// Index tables in `dir`, newest first.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("index-") && n.ends_with(".idx")))
        .collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

fn home(hash: u64, slots: u64) -> u64 {
    ((hash as u128 * slots as u128) >> 64) as u64
}

fn slot_offset(i: u64) -> usize {
    BLOCK * (1 + (i as usize / SLOTS_PER_BLOCK)) + (i as usize % SLOTS_PER_BLOCK) * SLOT
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_slot(b: &[u8], i: u64) -> Slot {
    let at = slot_offset(i);
    let loc = Loc {
        seg: u32::from_le_bytes(b[at + 8..at + 12].try_into().expect("4")),
        off: u32::from_le_bytes(b[at + 12..at + 16].try_into().expect("4")),
    };
    Slot { hash: u64_at(b, at), loc, clicks: u64_at(b, at + 16) }
}

fn write_slot(b: &mut [u8], i: u64, s: &Slot) {
    let at = slot_offset(i);
    b[at..at + 8].copy_from_slice(&s.hash.to_le_bytes());
    b[at + 8..at + 12].copy_from_slice(&s.loc.seg.to_le_bytes());
    b[at + 12..at + 16].copy_from_slice(&s.loc.off.to_le_bytes());
    b[at + 16..at + 24].copy_from_slice(&s.clicks.to_le_bytes());
}

/// A mapped, read-only table (or the empty one a new store starts with).
pub struct Table {
    map: Option<Mmap>,
    slots: u64,
    count: u64,
    blocks: u64,
    /// One bit per block: verified against its checksum.
    verified: Box<[AtomicU64]>,
    pub path: Option<PathBuf>,
}

impl Table {
    pub fn empty() -> Table {
        Table { map: None, slots: 0, count: 0, blocks: 0, verified: Box::new([]), path: None }
    }

    /// Maps the table at `path`, checking its header and checksum array.
    pub fn open(path: &Path, seed: u64) -> Result<Table, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < BLOCK as u64 {
            return Err(format!("{len} bytes is shorter than a header"));
        }
        // SAFETY: tables are never written after they are renamed into
        // place; the store only reads this mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
        let h = &map[..BLOCK];
        if &h[..8] != MAGIC {
            return Err("bad magic".into());
        }
        if u32::from_le_bytes(h[8..12].try_into().expect("4")) != VERSION {
            return Err("unknown version".into());
        }
        if u64_at(h, 56) != xxh3_64(&h[..HEADER_SUMMED]) {
            return Err("header fails its checksum".into());
        }
        let (slots, count, blocks) = (u64_at(h, 16), u64_at(h, 24), u64_at(h, 32));
        if u64_at(h, 40) != seed_check(seed) {
            return Err("built under another code key".into());
        }
        if blocks != slots.div_ceil(SLOTS_PER_BLOCK as u64) || count > slots || len != (1 + blocks) * BLOCK as u64 + blocks * 8 {
            return Err(format!("sizes do not add up ({slots} slots, {blocks} blocks, {len} bytes)"));
        }
        let checks = &map[(1 + blocks as usize) * BLOCK..];
        if xxh3_64(checks) != u64_at(h, 48) {
            return Err("checksum array fails its checksum".into());
        }
        let _ = map.advise(memmap2::Advice::Random);
        let verified = (0..blocks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Table { map: Some(map), slots, count, blocks, verified, path: Some(path.to_path_buf()) })
    }

    /// Occupied slots.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the file (mapped, page cache).
    pub fn file_bytes(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    fn check_block(&self, map: &[u8], block: u64) -> Result<(), Damaged> {
        let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
        if self.verified[word].load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        let at = BLOCK * (1 + block as usize);
        let want = u64_at(map, (1 + self.blocks as usize) * BLOCK + block as usize * 8);
        if xxh3_64(&map[at..at + BLOCK]) != want {
            return Err(Damaged { block });
        }
        self.verified[word].fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }

    /// Calls `f` with every slot filed under `hash`, in probe order, until
    /// it returns `Some`.
    pub fn find<T>(&self, hash: u64, mut f: impl FnMut(Slot) -> Option<T>) -> Result<Option<T>, Damaged> {
        let Some(map) = &self.map else { return Ok(None) };
        let mut i = home(hash, self.slots);
        let mut block = u64::MAX;
        for _ in 0..self.slots {
            let b = i / SLOTS_PER_BLOCK as u64;
            if b != block {
                self.check_block(map, b)?;
                block = b;
            }
            let s = read_slot(map, i);
            if s.hash == 0 {
                return Ok(None);
            }
            if s.hash == hash {
                if let Some(t) = f(s) {
                    return Ok(Some(t));
                }
            }
            i = if i + 1 == self.slots { 0 } else { i + 1 };
        }
        Ok(None)
    }

    /// Whether finding `hash` reads only pages in memory, as far as its
    /// home block goes, and `record` says so of the first slot filed under
    /// it (the record that would be read to confirm it). A probe that runs
    /// on into the next block is not looked at.
    pub fn resident(&self, hash: u64, record: impl Fn(Loc) -> bool) -> bool {
        let Some(map) = &self.map else { return true };
        let first = home(hash, self.slots);
        let block = first / SLOTS_PER_BLOCK as u64;
        let at = BLOCK * (1 + block as usize);
        if !super::segment::resident(&map[at..at + BLOCK]) {
            return false;
        }
        let verified = self.verified[(block / 64) as usize].load(Ordering::Relaxed) & (1 << (block % 64)) != 0;
        let sum = (1 + self.blocks as usize) * BLOCK + block as usize * 8;
        if !verified && !super::segment::resident(&map[sum..sum + 8]) {
            return false;
        }
        let end = ((block + 1) * SLOTS_PER_BLOCK as u64).min(self.slots);
        for i in first..end {
            let s = read_slot(map, i);
            if s.hash == 0 {
                return true;
            }
            if s.hash == hash {
                return record(s.loc);
            }
        }
        true
    }

    /// Every occupied slot, block by block, each block verified first.
    pub fn for_each(&self, mut f: impl FnMut(Slot)) -> Result<(), Damaged> {
        let Some(map) = &self.map else { return Ok(()) };
        for b in 0..self.blocks {
            self.check_block(map, b)?;
            let first = b * SLOTS_PER_BLOCK as u64;
            for i in first..(first + SLOTS_PER_BLOCK as u64).min(self.slots) {
                let s = read_slot(map, i);
                if s.hash != 0 {
                    f(s);
                }
            }
        }
        Ok(())
    }

    /// Every occupied slot of the blocks that pass their check.
    pub fn for_each_intact(&self, mut f: impl FnMut(Slot)) {
        let Some(map) = &self.map else { return };
        for b in 0..self.blocks {
            if self.check_block(map, b).is_err() {
                continue;
            }
            let first = b * SLOTS_PER_BLOCK as u64;
            for i in first..(first + SLOTS_PER_BLOCK as u64).min(self.slots) {
                let s = read_slot(map, i);
                if s.hash != 0 {
                    f(s);
                }
            }
        }
    }

    /// Verifies every block not verified yet; the first damaged one is
    /// the error.
    pub fn verify(&self) -> Result<(), Damaged> {
        self.for_each(|_| {})
    }
}

/// A table being written: a temporary file mapped read-write, renamed into
/// place by `finish` once complete and synced.
pub struct Builder {
    file: File,
    map: MmapMut,
    slots: u64,
    blocks: u64,
    count: u64,
    tmp: PathBuf,
    finished: bool,
    /// Built in anonymous memory (huge pages where the kernel gives them)
    /// and written to the file at the end; else in the file's own pages.
    in_memory: bool,
}

impl Drop for Builder {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Builder {
    /// A table in `dir` with room for `entries` at a load of at most 0.75,
    /// for a background merge: built in memory up to `IN_MEMORY_MAX` bytes,
    /// in the file's own pages past that (no memory of its own).
    pub fn create(dir: &Path, entries: u64) -> io::Result<Builder> {
        let slots = (entries * LOAD_NUM / LOAD_DEN + 1).div_ceil(SLOTS_PER_BLOCK as u64);
        Builder::make(dir, entries, slots * (BLOCK as u64 + 8) <= IN_MEMORY_MAX)
    }

    /// The same, built in memory and written out at the end: about three
    /// times faster to fill at tens of millions of entries (no page faults
    /// on the file, few TLB misses), for a bulk load that can spend the
    /// memory.
    pub fn create_in_memory(dir: &Path, entries: u64) -> io::Result<Builder> {
        Builder::make(dir, entries, true)
    }

    fn make(dir: &Path, entries: u64, in_memory: bool) -> io::Result<Builder> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let slots = (entries * LOAD_NUM / LOAD_DEN + 1).max(SLOTS_PER_BLOCK as u64).next_multiple_of(SLOTS_PER_BLOCK as u64);
        let blocks = slots / SLOTS_PER_BLOCK as u64;
        let tmp = dir.join(format!("index-{}-{}.idx.tmp", std::process::id(), MADE.fetch_add(1, Ordering::Relaxed)));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        // Blocks reserved up front: a full disk fails here, never as a
        // SIGBUS on a page of the mapping.
        let len = (1 + blocks) * BLOCK as u64 + blocks * 8;
        // Synced once reserved, so that its size is on disk (and seen by the
        // power-loss harness) before any of its bytes.
        let reserved = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)
            .map_err(io::Error::from)
            .and_then(|_| file.sync_all())
            .and_then(|_| {
                if in_memory {
                    let map = memmap2::MmapOptions::new().len(len as usize).map_anon()?;
                    let _ = map.advise(memmap2::Advice::HugePage);
                    Ok(map)
                } else {
                    // SAFETY: the temporary file is this builder's alone until renamed.
                    unsafe { MmapMut::map_mut(&file) }
                }
            });
        match reserved {
            Ok(map) => Ok(Builder { file, map, slots, blocks, count: 0, tmp, finished: false, in_memory }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Calls `f` with every slot filed under `hash` until it returns `Some`.
    pub fn find<T>(&self, hash: u64, mut f: impl FnMut(Slot) -> Option<T>) -> Option<T> {
        let mut i = home(hash, self.slots);
        loop {
            let s = read_slot(&self.map, i);
            if s.hash == 0 {
                return None;
            }
            if s.hash == hash {
                if let Some(t) = f(s) {
                    return Some(t);
                }
            }
            i = if i + 1 == self.slots { 0 } else { i + 1 };
        }
    }

    /// Asks the CPU to bring the home slot of `hash` into the cache.
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let at = slot_offset(home(hash, self.slots));
            // SAFETY: `at` lies inside the mapping; a prefetch reads nothing.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(self.map.as_ptr().add(at).cast()) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Every occupied slot.
    pub fn for_each(&self, mut f: impl FnMut(Slot)) {
        for i in 0..self.slots {
            let s = read_slot(&self.map, i);
            if s.hash != 0 {
                f(s);
            }
        }
    }

    /// This builder's slots in a new one with room for `entries`.
    pub fn grown(self, dir: &Path, entries: u64) -> io::Result<Builder> {
        let mut b = Builder::make(dir, entries.max(self.count), self.in_memory)?;
        self.for_each(|s| b.insert(s));
        Ok(b)
    }

    /// Files `slot` without looking for an equal key (a rehash of a table
    /// whose keys are distinct).
    pub fn insert(&mut self, slot: Slot) {
        let mut i = home(slot.hash, self.slots);
        while read_slot(&self.map, i).hash != 0 {
            i = if i + 1 == self.slots { 0 } else { i + 1 };
        }
        write_slot(&mut self.map, i, &slot);
        self.count += 1;
    }

    /// Calls `f` with each slot filed under `hash` until it returns true,
    /// and writes back what `f` left in it; true if one did.
    pub fn update(&mut self, hash: u64, mut f: impl FnMut(&mut Slot) -> bool) -> bool {
        let mut i = home(hash, self.slots);
        loop {
            let mut s = read_slot(&self.map, i);
            if s.hash == 0 {
                return false;
            }
            if s.hash == hash && f(&mut s) {
                write_slot(&mut self.map, i, &s);
                return true;
            }
            i = if i + 1 == self.slots { 0 } else { i + 1 };
        }
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn capacity(&self) -> u64 {
        // Builders are sized for their entries; past this the load passes 0.75.
        self.slots * LOAD_DEN / LOAD_NUM
    }

    /// Checksums, header, sync, renamed to `path`, directory sync.
    pub fn finish(mut self, path: &Path, seed: u64) -> io::Result<PathBuf> {
        let checks_at = (1 + self.blocks as usize) * BLOCK;
        for b in 0..self.blocks as usize {
            let sum = xxh3_64(&self.map[BLOCK * (1 + b)..BLOCK * (2 + b)]);
            self.map[checks_at + b * 8..checks_at + b * 8 + 8].copy_from_slice(&sum.to_le_bytes());
        }
        let checks_sum = xxh3_64(&self.map[checks_at..]);
        let mut h = [0u8; 64];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.slots.to_le_bytes());
        h[24..32].copy_from_slice(&self.count.to_le_bytes());
        h[32..40].copy_from_slice(&self.blocks.to_le_bytes());
        h[40..48].copy_from_slice(&seed_check(seed).to_le_bytes());
        h[48..56].copy_from_slice(&checks_sum.to_le_bytes());
        let sum = xxh3_64(&h[..HEADER_SUMMED]);
        h[56..64].copy_from_slice(&sum.to_le_bytes());
        self.map[..64].copy_from_slice(&h);
        if self.in_memory {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::FileExt;
            for (i, part) in self.map.chunks(8 << 20).enumerate() {
                let at = (i * (8 << 20)) as u64;
                self.file.write_all_at(part, at)?;
                // The disk starts on each part while the next is copied; the
                // sync below then has little left to wait for.
                // SAFETY: a plain syscall on an open descriptor.
                unsafe { libc::sync_file_range(self.file.as_raw_fd(), at as i64, part.len() as i64, libc::SYNC_FILE_RANGE_WRITE) };
            }
        } else {
            self.map.flush()?;
        }
        self.file.flush()?;
        self.file.sync_all()?;
        rename_durably(&self.tmp, path)?;
        self.finished = true;
        Ok(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(hash: u64, n: u32) -> Slot {
        Slot { hash, loc: Loc { seg: 1, off: n * 8 }, clicks: n as u64 }
    }

    #[test]
    fn a_built_table_finds_every_slot_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = table_path(dir.path(), 7);
        let mut b = Builder::create(dir.path(), 2000).unwrap();
        for n in 1..=5000u32 {
            if b.len() >= b.capacity() {
                let more = b.len() * 2;
                b = b.grown(dir.path(), more).unwrap();
            }
            b.insert(slot(hash_key(9, &n.to_le_bytes()), n));
        }
        assert_eq!(b.find(hash_key(9, &77u32.to_le_bytes()), |s| Some(s.clicks)), Some(77));
        // Two keys under one hash: both kept, told apart by the caller.
        let twin = hash_key(9, &1u32.to_le_bytes());
        b.insert(slot(twin, 9999));
        assert!(b.update(twin, |s| if s.clicks == 9999 {
            s.clicks = 10_000;
            true
        } else {
            false
        }));
        b.finish(&path, 9).unwrap();
        let t = Table::open(&path, 9).unwrap();
        assert_eq!(t.len(), 5001);
        for n in 1..=5000u32 {
            let found = t.find(hash_key(9, &n.to_le_bytes()), |s| (s.loc.off == n * 8).then_some(s.clicks)).unwrap();
            assert_eq!(found, Some(n as u64));
        }
        assert_eq!(t.find(twin, |s| (s.clicks == 10_000).then_some(())).unwrap(), Some(()));
        assert_eq!(t.find(hash_key(9, b"absent"), Some).unwrap(), None);
        let mut seen = 0;
        t.for_each(|_| seen += 1).unwrap();
        assert_eq!(seen, 5001);
        assert!(Table::open(&path, 10).err().unwrap().contains("another code key"));
    }

    #[test]
    fn a_damaged_block_is_an_error_never_a_wrong_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = table_path(dir.path(), 1);
        let mut b = Builder::create(dir.path(), 1000).unwrap();
        for n in 1..=1000u32 {
            b.insert(slot(hash_key(1, &n.to_le_bytes()), n));
        }
        b.finish(&path, 1).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[BLOCK + 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let t = Table::open(&path, 1).unwrap();
        assert_eq!(t.verify(), Err(Damaged { block: 0 }));
        // Damage in the header or the checksum array refuses the file.
        let mut head = bytes.clone();
        head[20] ^= 1;
        std::fs::write(&path, &head).unwrap();
        assert!(Table::open(&path, 1).err().is_some());
        let mut tail = bytes;
        let n = tail.len();
        tail[n - 3] ^= 1;
        std::fs::write(&path, &tail).unwrap();
        assert!(Table::open(&path, 1).err().is_some());
    }
}
