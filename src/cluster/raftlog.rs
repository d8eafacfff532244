//! The Raft log of every group this node hosts, in one journal.
//!
//! Entries, votes, commit points, purges and truncations are journal
//! records of kind `raft` (`journal::record`), appended to
//! `DATA_DIR/raft/` by one writer thread. That thread takes whatever the
//! groups sent meanwhile, writes it with one `pwrite` and syncs once:
//! group commit across groups. openraft hears that an append is durable
//! (`LogFlushed`) only after that sync under `--durability always`; a vote
//! is synced in every mode, because a node must never vote twice in a term.
//!
//! Unpurged entries are also kept in memory per group, so reads never
//! decode the journal. Start-up replays the journal into that state. A
//! sealed segment is removed once every entry in it is purged; each new
//! segment opens with every group's vote, commit point and purge point, so
//! removing old segments never loses them.

// openraft's traits fix `StorageError` as the error type, large as it is.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;

use super::command::NodeId;
use super::raft::{Entry, TypeConfig};
use crate::config::Durability;
use crate::journal::log::{Log, LogHandles, LogOptions};
use crate::journal::open::{open_segments, replay_segment, ReplayRules};
use crate::journal::record::{Body, Record};
use crate::journal::segment::SEGMENT_HEADER_LEN;
use crate::journal::{OpenError, Poison};

const ENTRY: u8 = 1;
const VOTE: u8 = 2;
const COMMITTED: u8 = 3;
const PURGED: u8 = 4;
const TRUNCATED: u8 = 5;
/// Most operations the writer takes into one batch.
const BATCH: usize = 4096;

/// One group's log as openraft sees it.
#[derive(Default)]
pub struct GroupState {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

enum Op {
    Append {
        group: u32,
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    Vote {
        group: u32,
        data: Vec<u8>,
        done: tokio::sync::oneshot::Sender<io::Result<()>>,
    },
    /// Committed, purged or truncated: durable with the next sync.
    Mark {
        group: u32,
        what: u8,
        index: u64,
        data: Vec<u8>,
    },
    /// Remove sealed segments whose entries are all purged.
    Prune,
}

/// The journal shared by all groups; cheap to clone per group.
pub struct RaftLog {
    dir: PathBuf,
    tx: Sender<Op>,
    groups: Vec<Arc<Mutex<GroupState>>>,
    poison: Poison,
}

impl RaftLog {
    /// Opens (or creates) `dir`, replays it and starts the writer thread.
    pub fn open(dir: &Path, groups: u32, durability: Durability, segment_bytes: u64) -> Result<Arc<RaftLog>, OpenError> {
        let opened = open_segments(dir, false)?;
        let states: Vec<Arc<Mutex<GroupState>>> = (0..groups).map(|_| Arc::default()).collect();
        // Segment -> group -> the highest entry index in it.
        let mut tops: BTreeMap<u32, HashMap<u32, u64>> = BTreeMap::new();
        let (mut active, mut end, mut next_lsn) = (0u32, SEGMENT_HEADER_LEN as u64, 1u64);
        let rules = ReplayRules { repair: false, read_only: false };
        for (i, &n) in opened.numbers.iter().enumerate() {
            let seg = opened.segments.get(n).expect("opened segment");
            let newest = i + 1 == opened.numbers.len();
            let mut bad = None;
            let top = tops.entry(n).or_default();
            let stop = replay_segment(&seg, SEGMENT_HEADER_LEN, newest, rules, |rec, _, _| {
                next_lsn = next_lsn.max(rec.lsn + 1);
                let Body::Raft { group, what, index, data } = rec.body else {
                    bad = Some("a record that is not Raft's");
                    return;
                };
                let Some(state) = states.get(group as usize) else {
                    bad = Some("a group this node does not know (was --partitions changed?)");
                    return;
                };
                if let Err(e) = replay(&mut state.lock(), what, index, data) {
                    bad = Some(e);
                }
                if what == ENTRY {
                    let t = top.entry(group).or_default();
                    *t = (*t).max(index);
                }
            })?;
            if let Some(reason) = bad {
                return Err(OpenError::Damaged { file: seg.path.clone(), offset: 0, reason: reason.into() });
            }
            (active, end) = (n, stop as u64);
        }
        let handles = LogHandles { segments: opened.segments, poison: Poison::default(), written: Arc::new(AtomicU64::new(0)) };
        let poison = handles.poison.clone();
        let log = Log::open(LogOptions { dir: dir.to_path_buf(), durability, segment_bytes }, handles, active, end, next_lsn);
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer { log, rx, groups: states.clone(), tops, lock: opened.lock, interval: Duration::from_millis(10) };
        std::thread::Builder::new()
            .name("shortd-raft-log".into())
            .spawn(move || writer.run())
            .map_err(|e| OpenError::Invalid(format!("cannot start the Raft log writer: {e}")))?;
        Ok(Arc::new(RaftLog { dir: dir.to_path_buf(), tx, groups: states, poison }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log store openraft drives for `group`.
    pub fn group(self: &Arc<Self>, group: u32) -> GroupLog {
        GroupLog { group, log: self.clone() }
    }

    /// Why the log refuses writes, once it does.
    pub fn poisoned(&self) -> Option<String> {
        self.poison.read().clone()
    }

    /// Lets the writer remove segments that hold only purged entries.
    pub fn prune(&self) {
        let _ = self.tx.send(Op::Prune);
    }

    fn send(&self, op: Op) -> Result<(), StorageError<NodeId>> {
        self.tx.send(op).map_err(|_| io_error(io::Error::other("the Raft log writer has stopped")))
    }
}

fn replay(state: &mut GroupState, what: u8, index: u64, data: &[u8]) -> Result<(), &'static str> {
    let json = |_| "a Raft record whose data does not parse";
    match what {
        ENTRY => {
            if state.purged.is_none_or(|p| index > p.index) {
                // A later entry at an index replaces one a new leader overwrote.
                state.entries.split_off(&index);
                state.entries.insert(index, serde_json::from_slice(data).map_err(json)?);
            }
        }
        VOTE => state.vote = Some(serde_json::from_slice(data).map_err(json)?),
        COMMITTED => state.committed = serde_json::from_slice(data).map_err(json)?,
        PURGED => {
            let purged: Option<LogId<NodeId>> = serde_json::from_slice(data).map_err(json)?;
            if let Some(p) = purged {
                state.entries = state.entries.split_off(&(p.index + 1));
            }
            state.purged = state.purged.max(purged);
        }
        TRUNCATED => drop(state.entries.split_off(&index)),
        _ => return Err("a Raft record of an unknown type"),
    }
    Ok(())
}

struct Writer {
    log: Log,
    rx: Receiver<Op>,
    groups: Vec<Arc<Mutex<GroupState>>>,
    tops: BTreeMap<u32, HashMap<u32, u64>>,
    /// Held while the process runs: one process per Raft directory.
    #[allow(dead_code)]
    lock: Option<std::fs::File>,
    interval: Duration,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(self.interval) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    if self.log.sync_due_in(self.interval).is_some_and(|d| d.is_zero()) {
                        let _ = self.log.sync();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.log.sync();
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.write(batch);
        }
    }

    fn write(&mut self, batch: Vec<Op>) {
        let mut must_sync = false;
        let mut prune = false;
        let mut failed = None;
        for op in &batch {
            let r = match op {
                Op::Append { group, entries, .. } => entries.iter().try_for_each(|(index, data)| self.append(*group, ENTRY, *index, data)),
                Op::Vote { group, data, .. } => {
                    must_sync = true;
                    self.append(*group, VOTE, 0, data)
                }
                Op::Mark { group, what, index, data } => self.append(*group, *what, *index, data),
                Op::Prune => {
                    prune = true;
                    Ok(())
                }
            };
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        }
        let committed = self.log.commit(must_sync);
        let result = match (failed, committed) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.to_string()),
            (None, Ok(())) => Ok(()),
        };
        for op in batch {
            match op {
                Op::Append { done, .. } => done.log_io_completed(result.clone().map_err(io::Error::other)),
                Op::Vote { done, .. } => drop(done.send(result.clone().map_err(io::Error::other))),
                Op::Mark { .. } | Op::Prune => {}
            }
        }
        if prune && result.is_ok() {
            self.prune();
        }
    }

    fn append(&mut self, group: u32, what: u8, index: u64, data: &[u8]) -> Result<(), String> {
        let before = self.log.end().seg;
        let rec = Record { lsn: 0, time_ms: crate::clock::now_ms(), origin: 0, body: Body::Raft { group, what, index, data } };
        let (loc, _) = self.log.append(rec).map_err(|e| e.to_string())?;
        if what == ENTRY {
            let t = self.tops.entry(loc.seg).or_default().entry(group).or_default();
            *t = (*t).max(index);
        }
        if loc.seg != before {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Every group's vote, commit point and purge point, at the start of a
    /// new segment, so older segments can go once their entries are purged.
    fn checkpoint(&mut self) -> Result<(), String> {
        for (g, state) in self.groups.clone().iter().enumerate() {
            let (vote, committed, purged) = {
                let s = state.lock();
                (s.vote, s.committed, s.purged)
            };
            if let Some(v) = vote {
                self.append_plain(g as u32, VOTE, &json(&v))?;
            }
            self.append_plain(g as u32, COMMITTED, &json(&committed))?;
            self.append_plain(g as u32, PURGED, &json(&purged))?;
        }
        Ok(())
    }

    fn append_plain(&mut self, group: u32, what: u8, data: &[u8]) -> Result<(), String> {
        let rec = Record { lsn: 0, time_ms: crate::clock::now_ms(), origin: 0, body: Body::Raft { group, what, index: 0, data } };
        self.log.append(rec).map(drop).map_err(|e| e.to_string())
    }

    fn prune(&mut self) {
        let active = self.log.end().seg;
        let purged: Vec<Option<u64>> = self.groups.iter().map(|g| g.lock().purged.map(|p| p.index)).collect();
        let removable: Vec<u32> = self
            .tops
            .iter()
            .take_while(|(&seg, tops)| {
                seg != active && tops.iter().all(|(&g, &top)| purged.get(g as usize).copied().flatten().is_some_and(|p| top <= p))
            })
            .map(|(&seg, _)| seg)
            .collect();
        for seg in removable {
            self.tops.remove(&seg);
            if self.log.segments().contains(seg) {
                self.log.remove_segment(seg);
            }
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("Raft state serialises")
}

fn io_error(e: io::Error) -> StorageError<NodeId> {
    StorageError::IO { source: StorageIOError::write_logs(&e) }
}

/// One group's view of the shared journal: what openraft calls the log store.
#[derive(Clone)]
pub struct GroupLog {
    group: u32,
    log: Arc<RaftLog>,
}

impl GroupLog {
    fn state(&self) -> &Mutex<GroupState> {
        &self.log.groups[self.group as usize]
    }

    fn mark(&self, what: u8, index: u64, data: Vec<u8>) -> Result<(), StorageError<NodeId>> {
        self.log.send(Op::Mark { group: self.group, what, index, data })
    }
}

impl RaftLogReader<TypeConfig> for GroupLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.state().lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for GroupLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let s = self.state().lock();
        let last = s.entries.values().next_back().map(|e| e.log_id).or(s.purged);
        Ok(LogState { last_purged_log_id: s.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.state().lock().vote = Some(*vote);
        let (done, wait) = tokio::sync::oneshot::channel();
        self.log.send(Op::Vote { group: self.group, data: json(vote), done })?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::IO { source: StorageIOError::write_vote(&e) }),
            Err(_) => Err(io_error(io::Error::other("the Raft log writer has stopped"))),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.state().lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.state().lock().committed = committed;
        self.mark(COMMITTED, 0, json(&committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.state().lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut s = self.state().lock();
            for e in entries {
                encoded.push((e.log_id.index, json(&e)));
                s.entries.insert(e.log_id.index, e);
            }
        }
        self.log.send(Op::Append { group: self.group, entries: encoded, done: callback })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        drop(self.state().lock().entries.split_off(&log_id.index));
        self.mark(TRUNCATED, log_id.index, Vec::new())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut s = self.state().lock();
            s.entries = s.entries.split_off(&(log_id.index + 1));
            s.purged = s.purged.max(Some(log_id));
        }
        self.mark(PURGED, log_id.index, json(&Some(log_id)))?;
        self.log.prune();
        Ok(())
    }
}
