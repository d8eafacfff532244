//! The trace that `shim.c` records, and the crash states a power loss allows
//! at each point of it.
//!
//! Model (ALICE's "abstract persistence model", simplified to what shortd
//! does):
//! - a file's content and size changes (writes, truncations, the size that
//!   `fallocate` gave it) are durable once an `fsync` or `fdatasync` of that
//!   file, begun after them, has returned;
//! - directory changes (create, rename, unlink) are durable once an `fsync`
//!   of the directory, begun after them, has returned;
//! - at a crash, each 4 KiB page of a file holds its content as of some
//!   moment between its last durable state and the crash (so writes that
//!   were not synced are kept or lost page by page, in any combination, and
//!   a later write to a page may survive while an earlier write to another
//!   page is lost); the file's size is its size as of some such moment too;
//! - the directory changes that were not synced survive as a prefix, in
//!   the order they were made (an assumption: ext4 and XFS journal them in
//!   order; a file system that reorders them would allow more states).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::Path;

pub const PAGE: usize = 4096;

pub const T_OPEN: u32 = 1;
pub const T_CLOSE: u32 = 2;
pub const T_WRITE: u32 = 3;
pub const T_TRUNC: u32 = 4;
pub const T_SYNC_BEGIN: u32 = 5;
pub const T_SYNC_END: u32 = 6;
pub const T_RENAME: u32 = 7;
pub const T_UNLINK: u32 = 8;
pub const T_FALLOC: u32 = 9;
pub const T_SFR: u32 = 10;
/// Written by the test's clients, not the shim: a request is about to be sent.
pub const T_SEND: u32 = 100;
/// Written by the test's clients: a request's response was received.
pub const T_ACK: u32 = 101;

const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

#[derive(Debug, Clone)]
pub enum Op {
    Open { fd: i32, flags: u32, path: String },
    Close { fd: i32 },
    Write { fd: i32, off: u64, data: Vec<u8> },
    Trunc { fd: i32, size: u64 },
    SyncBegin { tid: u32, fd: i32, size: u64, data_only: bool },
    SyncEnd { tid: u32, fd: i32 },
    Rename { from: String, to: String },
    Unlink { path: String },
    Falloc { fd: i32, off: u64, len: u64 },
    SyncFileRange,
    Send { req: u64 },
    Ack { req: u64 },
}

impl Op {
    /// Whether the server made this operation (not a client's mark).
    pub fn is_server(&self) -> bool {
        !matches!(self, Op::Send { .. } | Op::Ack { .. })
    }

    pub fn short(&self) -> String {
        match self {
            Op::Open { fd, flags, path } => format!("open({path:?}, {flags:#o}) = {fd}"),
            Op::Close { fd } => format!("close({fd})"),
            Op::Write { fd, off, data } => format!("pwrite({fd}, {} bytes at {off})", data.len()),
            Op::Trunc { fd, size } => format!("ftruncate({fd}, {size})"),
            Op::SyncBegin { fd, data_only, .. } => format!("{}({fd}) begins", if *data_only { "fdatasync" } else { "fsync" }),
            Op::SyncEnd { fd, .. } => format!("sync({fd}) returned"),
            Op::Rename { from, to } => format!("rename({from:?}, {to:?})"),
            Op::Unlink { path } => format!("unlink({path:?})"),
            Op::Falloc { fd, off, len } => format!("fallocate({fd}, {off}, {len})"),
            Op::SyncFileRange => "sync_file_range".into(),
            Op::Send { req } => format!("client sends request {req}"),
            Op::Ack { req } => format!("client has the answer to request {req}"),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One 32-byte mark record, as the clients append it to the trace.
pub fn mark(kind: u32, req: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&32u32.to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[12..16].copy_from_slice(&(-1i32).to_le_bytes());
    h[16..24].copy_from_slice(&req.to_le_bytes());
    h
}

pub fn parse(trace: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut at = 0;
    while at < trace.len() {
        assert!(at + 32 <= trace.len(), "trace ends inside a record header at byte {at}");
        let len = u32_at(trace, at) as usize;
        assert!(len >= 32 && at + len <= trace.len(), "bad record length {len} at byte {at}");
        let ty = u32_at(trace, at + 4);
        let tid = u32_at(trace, at + 8);
        let fd = u32_at(trace, at + 12) as i32;
        let a = u64_at(trace, at + 16);
        let b = u64_at(trace, at + 24);
        let payload = &trace[at + 32..at + len];
        let text = || String::from_utf8(payload.to_vec()).expect("paths are UTF-8");
        ops.push(match ty {
            T_OPEN => Op::Open { fd, flags: a as u32, path: text() },
            T_CLOSE => Op::Close { fd },
            T_WRITE => Op::Write { fd, off: a, data: payload.to_vec() },
            T_TRUNC => Op::Trunc { fd, size: a },
            T_SYNC_BEGIN => Op::SyncBegin { tid, fd, size: b, data_only: a == 1 },
            T_SYNC_END => Op::SyncEnd { tid, fd },
            T_RENAME => {
                let (from, to) = payload.split_at(a as usize);
                Op::Rename { from: String::from_utf8(from.to_vec()).expect("UTF-8"), to: String::from_utf8(to.to_vec()).expect("UTF-8") }
            }
            T_UNLINK => Op::Unlink { path: text() },
            T_FALLOC => Op::Falloc { fd, off: a, len: b & ((1 << 56) - 1) },
            T_SFR => Op::SyncFileRange,
            T_SEND => Op::Send { req: a },
            T_ACK => Op::Ack { req: a },
            other => panic!("unknown trace record type {other} at byte {at}"),
        });
        at += len;
    }
    ops
}

#[derive(Debug, Clone)]
enum FileOp {
    /// Index of an `Op::Write` in the trace.
    Write(usize),
    Trunc(u64),
    /// The size is at least this (fstat at a sync, after fallocate).
    AtLeast(u64),
}

#[derive(Debug, Default)]
struct Inode {
    ops: Vec<(usize, FileOp)>,
    /// (position of SYNC_END, position of its SYNC_BEGIN): covers ops at or before the begin.
    syncs: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Create { name: String, ino: usize },
    Rename { from: String, to: String },
    Unlink { name: String },
}

/// The history of one traced run, ready to build crash states from.
pub struct History {
    pub ops: Vec<Op>,
    inodes: Vec<Inode>,
    dir_ops: Vec<(usize, DirOp)>,
    dir_syncs: Vec<(usize, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Everything written survives (as after `kill -9`).
    AllKept,
    /// Only what was synced survives.
    NoneKept,
    /// Each page and each file size independently at a random moment.
    PerPage,
    /// Each page either all or nothing of what was not synced.
    PerPageBinary,
    /// Per file, the unsynced changes survive up to a random one (in order).
    Prefix,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [Strategy::AllKept, Strategy::NoneKept, Strategy::PerPage, Strategy::PerPageBinary, Strategy::Prefix];
}

/// Files by name, with their content.
pub type State = BTreeMap<String, Vec<u8>>;

const DIR: usize = usize::MAX;

impl History {
    pub fn new(ops: Vec<Op>) -> History {
        let mut inodes: Vec<Inode> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut fds: HashMap<i32, usize> = HashMap::new();
        let mut begun: HashMap<(u32, i32), usize> = HashMap::new();
        let mut dir_ops = Vec::new();
        let mut dir_syncs = Vec::new();
        for (pos, op) in ops.iter().enumerate() {
            match op {
                Op::Open { fd, flags, path } => {
                    if path.is_empty() {
                        fds.insert(*fd, DIR);
                        continue;
                    }
                    assert!(!path.contains('/'), "shortd made a subdirectory: {path}");
                    let ino = match names.get(path) {
                        Some(&ino) => {
                            if flags & O_TRUNC != 0 {
                                inodes[ino].ops.push((pos, FileOp::Trunc(0)));
                            }
                            ino
                        }
                        None => {
                            assert!(flags & O_CREAT != 0, "op {pos}: opened {path:?}, which the trace never created");
                            inodes.push(Inode::default());
                            let ino = inodes.len() - 1;
                            names.insert(path.clone(), ino);
                            dir_ops.push((pos, DirOp::Create { name: path.clone(), ino }));
                            ino
                        }
                    };
                    fds.insert(*fd, ino);
                }
                Op::Close { fd } => {
                    fds.remove(fd);
                }
                Op::Write { fd, .. } => {
                    let ino = *fds.get(fd).unwrap_or_else(|| panic!("op {pos}: write to an unknown fd {fd}"));
                    assert_ne!(ino, DIR, "op {pos}: write to the directory");
                    inodes[ino].ops.push((pos, FileOp::Write(pos)));
                }
                Op::Trunc { fd, size } => {
                    let ino = fds[fd];
                    inodes[ino].ops.push((pos, FileOp::Trunc(*size)));
                }
                Op::Falloc { fd, off, len } => {
                    let ino = fds[fd];
                    inodes[ino].ops.push((pos, FileOp::AtLeast(off + len)));
                }
                Op::SyncBegin { tid, fd, size, .. } => {
                    let ino = *fds.get(fd).unwrap_or_else(|| panic!("op {pos}: sync of an unknown fd {fd}"));
                    if ino != DIR {
                        inodes[ino].ops.push((pos, FileOp::AtLeast(*size)));
                    }
                    begun.insert((*tid, *fd), pos);
                }
                Op::SyncEnd { tid, fd } => {
                    let begin = begun.remove(&(*tid, *fd)).unwrap_or_else(|| panic!("op {pos}: sync end without a begin"));
                    match fds[fd] {
                        DIR => dir_syncs.push((pos, begin)),
                        ino => inodes[ino].syncs.push((pos, begin)),
                    }
                }
                Op::Rename { from, to } => {
                    let ino = names.remove(from).unwrap_or_else(|| panic!("op {pos}: rename of unknown {from:?}"));
                    names.insert(to.clone(), ino);
                    dir_ops.push((pos, DirOp::Rename { from: from.clone(), to: to.clone() }));
                }
                Op::Unlink { path } => {
                    names.remove(path).unwrap_or_else(|| panic!("op {pos}: unlink of unknown {path:?}"));
                    dir_ops.push((pos, DirOp::Unlink { name: path.clone() }));
                }
                Op::SyncFileRange | Op::Send { .. } | Op::Ack { .. } => {}
            }
        }
        History { ops, inodes, dir_ops, dir_syncs }
    }

    /// Positions a crash can happen at: just before each operation of the
    /// server, and after the last. State `k` holds the effects of ops `[0, k)`.
    pub fn crash_points(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.ops.iter().enumerate().filter(|(_, o)| o.is_server()).map(|(i, _)| i).collect();
        v.push(self.ops.len());
        v
    }

    /// The server op just before crash point `k`, for reports.
    pub fn describe(&self, k: usize) -> String {
        match self.ops[..k].iter().enumerate().rev().find(|(_, o)| o.is_server()) {
            Some((i, o)) => format!("after op {i}: {}", o.short()),
            None => "before any op".into(),
        }
    }

    /// What was pending at `k`: (unsynced file ops, unsynced directory ops).
    pub fn pending(&self, k: usize) -> (usize, usize) {
        let files =
            self.inodes.iter().map(|ino| ino.ops.iter().filter(|(p, _)| *p < k && !is_durable(covered(&ino.syncs, k), *p)).count()).sum();
        let dir = self.dir_ops.iter().filter(|(p, _)| *p < k && !dir_covered(&self.dir_syncs, k, *p)).count();
        (files, dir)
    }

    /// One crash state at `k`.
    pub fn state(&self, k: usize, strategy: Strategy, rng: &mut fastrand::Rng) -> State {
        // Names: the durable directory, then a prefix of the rest.
        let mut durable = Vec::new();
        let mut pending = Vec::new();
        for (p, d) in &self.dir_ops {
            if *p >= k {
                break;
            }
            if dir_covered(&self.dir_syncs, k, *p) && pending.is_empty() {
                durable.push(d);
            } else {
                // Once one directory op is pending, later ones are applied in
                // order after it (a prefix), even if a sync covers them:
                // a sync that covers a later op covers the earlier ones too.
                pending.push((*p, d));
            }
        }
        // A sync covering a later pending op makes every op before it durable.
        let last_covered = pending.iter().rposition(|(p, _)| dir_covered(&self.dir_syncs, k, *p));
        let keep = match strategy {
            Strategy::AllKept => pending.len(),
            Strategy::NoneKept => last_covered.map_or(0, |i| i + 1),
            _ => rng.usize(last_covered.map_or(0, |i| i + 1)..=pending.len()),
        };
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for d in durable.into_iter().chain(pending[..keep].iter().map(|(_, d)| *d)) {
            match d {
                DirOp::Create { name, ino } => {
                    names.insert(name.clone(), *ino);
                }
                DirOp::Rename { from, to } => {
                    let ino = names.remove(from).expect("renamed file exists in a prefix");
                    names.insert(to.clone(), ino);
                }
                DirOp::Unlink { name } => {
                    names.remove(name);
                }
            }
        }
        let mut contents: HashMap<usize, Vec<u8>> = HashMap::new();
        names
            .into_iter()
            .map(|(name, ino)| {
                let bytes = contents.entry(ino).or_insert_with(|| self.content(ino, k, strategy, rng)).clone();
                (name, bytes)
            })
            .collect()
    }

    fn content(&self, ino: usize, k: usize, strategy: Strategy, rng: &mut fastrand::Rng) -> Vec<u8> {
        let inode = &self.inodes[ino];
        let cover = covered(&inode.syncs, k);
        let mut base = Vec::new();
        let mut pending = Vec::new();
        for (p, op) in &inode.ops {
            if *p >= k {
                break;
            }
            if is_durable(cover, *p) {
                self.apply(&mut base, op);
            } else {
                pending.push(op);
            }
        }
        let m = pending.len();
        if m == 0 {
            return base;
        }
        let full = |n: usize| {
            let mut v = base.clone();
            for op in &pending[..n] {
                self.apply(&mut v, op);
            }
            v
        };
        match strategy {
            Strategy::AllKept => full(m),
            Strategy::NoneKept => base,
            Strategy::Prefix => full(rng.usize(0..=m)),
            Strategy::PerPage | Strategy::PerPageBinary => {
                // Sizes after each prefix of the pending ops; the file's size
                // is one of them, each page's content is that of some prefix.
                let mut sizes = Vec::with_capacity(m + 1);
                let mut size = base.len() as u64;
                sizes.push(size);
                for op in &pending {
                    size = match op {
                        FileOp::Write(i) => match &self.ops[*i] {
                            Op::Write { off, data, .. } => size.max(off + data.len() as u64),
                            _ => unreachable!(),
                        },
                        FileOp::Trunc(s) => *s,
                        FileOp::AtLeast(s) => size.max(*s),
                    };
                    sizes.push(size);
                }
                let pick = |rng: &mut fastrand::Rng| {
                    if strategy == Strategy::PerPage {
                        rng.usize(0..=m)
                    } else if rng.bool() {
                        m
                    } else {
                        0
                    }
                };
                let final_size = sizes[pick(rng)] as usize;
                let pages = final_size.div_ceil(PAGE);
                // Each page's version: how many pending ops it has seen.
                let cut: Vec<usize> = (0..pages).map(|_| pick(rng)).collect();
                let mut out = vec![0u8; final_size];
                // Start from the base content, then replay pending ops page by
                // page, each page only up to its cut.
                let n = base.len().min(final_size);
                out[..n].copy_from_slice(&base[..n]);
                // Sizes as the ops go, to apply truncation per page.
                for (j, op) in pending.iter().enumerate() {
                    match op {
                        FileOp::Write(i) => {
                            let Op::Write { off, data, .. } = &self.ops[*i] else { unreachable!() };
                            let (off, end) = (*off as usize, *off as usize + data.len());
                            let mut at = off;
                            while at < end.min(final_size) {
                                let page = at / PAGE;
                                let page_end = ((page + 1) * PAGE).min(end).min(final_size);
                                if j < cut[page] {
                                    out[at..page_end].copy_from_slice(&data[at - off..page_end - off]);
                                }
                                at = page_end;
                            }
                        }
                        FileOp::Trunc(s) => {
                            // Bytes past a truncation read as zeros in versions after it.
                            let s = *s as usize;
                            for (page, &c) in cut.iter().enumerate() {
                                if j < c {
                                    let from = (page * PAGE).max(s);
                                    let to = ((page + 1) * PAGE).min(final_size);
                                    if from < to {
                                        out[from..to].fill(0);
                                    }
                                }
                            }
                        }
                        FileOp::AtLeast(_) => {}
                    }
                }
                out
            }
        }
    }

    /// For diagnosis: the last write before `k` to byte `off` of the file
    /// named `name` at `k`, and the end of the first sync that covered it.
    pub fn write_covering(&self, name: &str, off: u64, k: usize) -> Option<(usize, Option<usize>)> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (p, d) in &self.dir_ops {
            if *p >= k {
                break;
            }
            match d {
                DirOp::Create { name, ino } => {
                    names.insert(name, *ino);
                }
                DirOp::Rename { from, to } => {
                    if let Some(ino) = names.remove(from.as_str()) {
                        names.insert(to, ino);
                    }
                }
                DirOp::Unlink { name } => {
                    names.remove(name.as_str());
                }
            }
        }
        let inode = &self.inodes[*names.get(name)?];
        let w = inode.ops.iter().rev().find_map(|(p, op)| match (op, &self.ops[*p]) {
            (FileOp::Write(_), Op::Write { off: o, data, .. }) if *p < k && *o <= off && off < o + data.len() as u64 => Some(*p),
            _ => None,
        })?;
        let synced = inode.syncs.iter().filter(|(_, begin)| *begin > w).map(|(end, _)| *end).min();
        Some((w, synced))
    }

    /// For diagnosis: where a file was renamed to `name` (the last time).
    pub fn renamed_to(&self, name: &str) -> Option<usize> {
        self.dir_ops.iter().rev().find_map(|(p, d)| matches!(d, DirOp::Rename { to, .. } if to == name).then_some(*p))
    }

    fn apply(&self, v: &mut Vec<u8>, op: &FileOp) {
        match op {
            FileOp::Write(i) => {
                let Op::Write { off, data, .. } = &self.ops[*i] else { unreachable!() };
                let end = *off as usize + data.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[*off as usize..end].copy_from_slice(data);
            }
            FileOp::Trunc(s) => v.resize(*s as usize, 0),
            FileOp::AtLeast(s) => {
                if v.len() < *s as usize {
                    v.resize(*s as usize, 0);
                }
            }
        }
    }
}

/// The newest position covered by a sync of this file completed before `k`.
fn covered(syncs: &[(usize, usize)], k: usize) -> Option<usize> {
    syncs.iter().filter(|(end, _)| *end < k).map(|(_, begin)| *begin).max()
}

fn is_durable(cover: Option<usize>, p: usize) -> bool {
    cover.is_some_and(|c| p <= c)
}

fn dir_covered(syncs: &[(usize, usize)], k: usize, p: usize) -> bool {
    syncs.iter().any(|(end, begin)| *end < k && p < *begin)
}

/// Writes a state into `dir` (which must not exist).
pub fn materialize(state: &State, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in state {
        let f = fs::File::create(dir.join(name))?;
        // Sparse where zero, as the preallocated segments are.
        f.set_len(bytes.len() as u64)?;
        use std::os::unix::fs::FileExt;
        for (i, chunk) in bytes.chunks(PAGE).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                f.write_all_at(chunk, (i * PAGE) as u64)?;
            }
        }
    }
    Ok(())
}

/// Reads every file of `dir` (for the check that the model matches reality).
pub fn read_dir(dir: &Path) -> io::Result<State> {
    let mut s = State::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        s.insert(e.file_name().to_string_lossy().into_owned(), fs::read(e.path())?);
    }
    Ok(s)
}

/// A short hash of a state, to skip starting on the same state twice.
pub fn fingerprint(state: &State) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, bytes) in state {
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.digest()
}
