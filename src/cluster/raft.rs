//! openraft glue: the type config, the commands a group's log carries, and
//! the state machine that applies them to the store.
//!
//! A command names one key, so a partition's state is exactly the store's
//! records of the codes (and idempotency keys) that hash to it. The
//! proposer fixes everything that is not deterministic (the code, the
//! time); `apply` only checks the store's current state and moves it, so
//! every replica that applies the same log reaches the same state.
//!
//! Each partition has a store of its own (`DATA_DIR/state/p-NN/`), this
//! node's replica of it, never synced while it runs: the Raft journal is
//! what is durable. A graceful stop closes each replica (which syncs it)
//! and leaves beside it a `stopped` file naming the applied point, the
//! membership and the partition's idempotency claims; the next start
//! reopens such a replica and replays only the journal after that point.
//! A replica without one (after a crash) is rebuilt from the group's
//! snapshot plus the journal.
//!
//! A snapshot of a partition is its records and claims as JSON, written
//! to `DATA_DIR/raft/group-N.snap` (a checked header with the meta, then
//! the checked image) before the log behind it is purged, and sent whole
//! to a replica that is too far behind. It stays on disk: what openraft
//! holds is a handle to the open file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use compact_str::CompactString;
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::metadata::{MetaCommand, MetaState};
use super::wire::WireRecord;
use crate::cache::Cache;
use crate::store::{ApplyMode, Link, Patch, Store, Stored, Version, WriteError, IDEMPOTENCY_WINDOW_MS};

pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        SnapshotData = SnapshotData,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

/// What a group's log carries. Each names one key of its group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Claim a code that nobody holds (an alias, or a code from a lease).
    Create {
        link: WireRecord,
    },
    Update {
        code: String,
        patch: WirePatch,
        at_ms: i64,
    },
    Delete {
        code: String,
        at_ms: i64,
    },
    /// Bind an Idempotency-Key to the link its first request would make.
    Claim {
        key: String,
        body_hash: u64,
        at_ms: i64,
        link: WireRecord,
    },
    /// Clicks served by some node since it last reported.
    Clicks {
        counts: Vec<(String, u64)>,
    },
    /// One click on a link with a click limit, granted or not.
    ClickLimited {
        code: String,
    },
    Meta(MetaCommand),
}

/// What applying a command decided.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Created { link: WireRecord, replayed: bool },
    Link { link: WireRecord },
    Claim { body_hash: u64, link: WireRecord },
    Click { granted: bool },
    Lease { first: u64 },
    Refused { reason: Refusal },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Taken,
    NotFound,
    Gone,
}

impl From<Refusal> for WriteError {
    fn from(r: Refusal) -> WriteError {
        match r {
            Refusal::Taken => WriteError::Taken,
            Refusal::NotFound => WriteError::NotFound,
            Refusal::Gone => WriteError::Gone,
        }
    }
}

/// A PATCH as the log carries it (`store::Patch`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WirePatch {
    pub url: Option<String>,
    pub expires_ms: Option<i64>,
    pub max_clicks: Option<u64>,
    pub redirect: Option<u16>,
    pub disabled: Option<bool>,
}

impl From<Patch> for WirePatch {
    fn from(p: Patch) -> WirePatch {
        WirePatch { url: p.url, expires_ms: p.expires_ms, max_clicks: p.max_clicks, redirect: p.redirect, disabled: p.disabled }
    }
}

/// An Idempotency-Key's binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claim {
    pub body_hash: u64,
    pub at_ms: i64,
    pub link: WireRecord,
}

/// The partition of a code or an idempotency key.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (xxh3_64(key.as_bytes()) % u64::from(partitions)) as u32
}

/// What the state machines of every group on this node share: one store
/// per partition (`DATA_DIR/state/p-NN/`), the idempotency claims and the
/// metadata.
pub struct Machine {
    stores: Vec<Arc<Store>>,
    pub cache: Arc<Cache>,
    pub partitions: u32,
    claims: Mutex<HashMap<String, Claim>>,
    pub meta: RwLock<MetaState>,
}

impl Machine {
    /// `stores[p]` holds partition `p`'s records.
    pub fn new(stores: Vec<Arc<Store>>, cache: Arc<Cache>) -> Arc<Machine> {
        let partitions = stores.len() as u32;
        Arc::new(Machine { stores, cache, partitions, claims: Mutex::default(), meta: RwLock::default() })
    }

    pub fn meta_group(&self) -> u32 {
        self.partitions
    }

    /// The store of `code`'s partition.
    pub fn store_of(&self, code: &str) -> &Arc<Store> {
        &self.stores[partition_of(code, self.partitions) as usize]
    }

    pub fn stores(&self) -> &[Arc<Store>] {
        &self.stores
    }

    async fn apply(&self, cmd: Command) -> Result<Outcome, WriteError> {
        Ok(match cmd {
            Command::Create { link } => {
                let stored = link.into_stored().ok_or_else(|| WriteError::Unavailable("a create of an invalid record".into()))?;
                let code = stored.code.clone();
                let outcome = match self.store_of(&code).apply(stored, ApplyMode::Create).await {
                    Ok(written) => Outcome::Created { link: self.record(&code)?, replayed: !written },
                    Err(WriteError::Taken) => Outcome::Refused { reason: Refusal::Taken },
                    Err(e) => return Err(e),
                };
                self.cache.invalidate(&code);
                outcome
            }
            Command::Update { code, patch, at_ms } => match self.store_of(&code).stored(&code) {
                None => Outcome::Refused { reason: Refusal::NotFound },
                Some(Stored { link: None, .. }) => Outcome::Refused { reason: Refusal::Gone },
                Some(Stored { link: Some(mut l), .. }) => {
                    l.url = patch.url.unwrap_or(l.url);
                    l.expires_ms = patch.expires_ms.unwrap_or(l.expires_ms);
                    l.max_clicks = patch.max_clicks.unwrap_or(l.max_clicks);
                    l.redirect = patch.redirect.unwrap_or(l.redirect);
                    l.disabled = patch.disabled.unwrap_or(l.disabled);
                    let code = l.code.clone();
                    let change = Stored { code: code.clone(), link: Some(l), version: version(at_ms) };
                    self.store_of(&code).apply(change, ApplyMode::Replace).await?;
                    self.cache.invalidate(&code);
                    Outcome::Link { link: self.record(&code)? }
                }
            },
            Command::Delete { code, at_ms } => match self.store_of(&code).stored(&code) {
                None => Outcome::Refused { reason: Refusal::NotFound },
                Some(Stored { link: None, .. }) => Outcome::Refused { reason: Refusal::Gone },
                Some(_) => {
                    let code = CompactString::from(code);
                    self.store_of(&code)
                        .apply(Stored { code: code.clone(), link: None, version: version(at_ms) }, ApplyMode::Replace)
                        .await?;
                    self.cache.invalidate(&code);
                    Outcome::Done
                }
            },
            Command::Claim { key, body_hash, at_ms, link } => {
                let mut claims = self.claims.lock();
                match claims.get(&key).filter(|c| c.at_ms + IDEMPOTENCY_WINDOW_MS > at_ms) {
                    Some(c) => Outcome::Claim { body_hash: c.body_hash, link: c.link.clone() },
                    None => {
                        if claims.len() % 1024 == 1023 {
                            claims.retain(|_, c| c.at_ms + IDEMPOTENCY_WINDOW_MS > at_ms);
                        }
                        claims.insert(key, Claim { body_hash, at_ms, link: link.clone() });
                        Outcome::Claim { body_hash, link }
                    }
                }
            }
            Command::Clicks { counts } => {
                for (code, n) in counts {
                    self.store_of(&code).add_clicks(&code, n);
                }
                Outcome::Done
            }
            Command::ClickLimited { code } => {
                let store = self.store_of(&code);
                let granted = match store.stored(&code) {
                    Some(Stored { link: Some(l), .. }) if l.max_clicks > 0 => store.try_click_limited(&code, l.max_clicks),
                    _ => false,
                };
                Outcome::Click { granted }
            }
            Command::Meta(m) => self.meta.write().apply(m),
        })
    }

    fn record(&self, code: &str) -> Result<WireRecord, WriteError> {
        self.store_of(code)
            .stored(code)
            .map(|s| WireRecord::from(&s))
            .ok_or_else(|| WriteError::Unavailable(format!("{code} vanished while applied")))
    }

    /// A partition's state as bytes: its records and claims (or, for the
    /// metadata group, the metadata).
    fn image(&self, group: u32) -> Vec<u8> {
        if group == self.meta_group() {
            return serde_json::to_vec(&*self.meta.read()).expect("metadata serialises");
        }
        let store = &self.stores[group as usize];
        let shared = store.shared();
        let mut codes = Vec::new();
        // A key can sit in more than one layer of the index: deduplicated below.
        let walked = shared.index.for_each(|key, loc| {
            if let Some(code) = key.map(compact_str::CompactString::from).or_else(|| shared.key_at(loc)) {
                codes.push(code);
            }
        });
        if let Err(e) = walked {
            tracing::error!(group, error = %e, "partition image left out keys of a damaged index block");
        }
        codes.sort_unstable();
        codes.dedup();
        let records: Vec<WireRecord> = codes.into_iter().filter_map(|code| store.stored(&code).map(|s| WireRecord::from(&s))).collect();
        serde_json::to_vec(&Image { records, claims: self.claims_of(group) }).expect("an image serialises")
    }

    /// The idempotency claims of a partition.
    pub fn claims_of(&self, group: u32) -> BTreeMap<String, Claim> {
        let p = self.partitions;
        self.claims.lock().iter().filter(|(k, _)| partition_of(k, p) == group).map(|(k, c)| (k.clone(), c.clone())).collect()
    }

    /// Makes `claims` the partition's idempotency claims.
    fn restore_claims(&self, group: u32, claims: BTreeMap<String, Claim>) {
        let p = self.partitions;
        let mut all = self.claims.lock();
        all.retain(|k, _| partition_of(k, p) != group);
        all.extend(claims);
    }

    /// Makes a partition's state the image's. Records are written over
    /// whatever is here: the image is of a later log position than any
    /// state this replica has applied, and a key once written is never
    /// forgotten (tombstones are kept), so every key here is in it.
    async fn install(&self, group: u32, data: &[u8]) -> Result<(), String> {
        if group == self.meta_group() {
            *self.meta.write() = serde_json::from_slice(data).map_err(|e| format!("metadata image: {e}"))?;
            return Ok(());
        }
        let image: Image = serde_json::from_slice(data).map_err(|e| format!("partition image: {e}"))?;
        let store = &self.stores[group as usize];
        for rec in image.records {
            let stored = rec.into_stored().ok_or("partition image: an invalid record")?;
            let code = stored.code.clone();
            store.apply(stored, ApplyMode::Replace).await.map_err(|e| e.to_string())?;
            self.cache.invalidate(&code);
        }
        self.restore_claims(group, image.claims);
        Ok(())
    }
}

fn version(at_ms: i64) -> Version {
    Version { ms: at_ms, origin: 1 }
}

#[derive(Serialize, Deserialize)]
struct Image {
    records: Vec<WireRecord>,
    claims: BTreeMap<String, Claim>,
}

/// A snapshot's image: in the file this node keeps it in, held open so a
/// newer snapshot renamed over the path leaves an older handle's bytes as
/// they were, or as received from a leader (already checked).
#[derive(Clone)]
pub enum SnapshotData {
    File { file: Arc<File>, at: u64, len: u64, sum: u64 },
    Received(Vec<u8>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::File { len, .. } => write!(f, "snapshot file ({len} bytes)"),
            SnapshotData::Received(b) => write!(f, "received snapshot ({} bytes)", b.len()),
        }
    }
}

impl SnapshotData {
    /// The image, checked against the checksum it was written with.
    pub fn bytes(&self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Received(b) => Ok(b.clone()),
            SnapshotData::File { file, at, len, sum } => {
                let mut data = vec![0; *len as usize];
                file.read_exact_at(&mut data, *at)?;
                if xxh3_64(&data) != *sum {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's image fails its checksum"));
                }
                Ok(data)
            }
        }
    }
}

/// `group-N.snap`: this header, the meta's JSON, then the image. The
/// header's own checksum covers it and the meta, so a start reads only
/// these; the image is checked when it is read.
const SNAP_MAGIC: &[u8; 8] = b"shortdS1";
const SNAP_HEADER: usize = 36;

fn snap_header(meta_json: &[u8], data: &[u8]) -> [u8; SNAP_HEADER] {
    let mut h = [0u8; SNAP_HEADER];
    h[..8].copy_from_slice(SNAP_MAGIC);
    h[8..12].copy_from_slice(&(meta_json.len() as u32).to_le_bytes());
    h[12..20].copy_from_slice(&(data.len() as u64).to_le_bytes());
    h[20..28].copy_from_slice(&xxh3_64(data).to_le_bytes());
    let head_sum = xxh3_64(&[&h[..28], meta_json].concat());
    h[28..].copy_from_slice(&head_sum.to_le_bytes());
    h
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The snapshot in `path`, if there is one: its meta, and a handle to its
/// image.
fn read_snapshot(path: &Path) -> Result<Option<(Meta, SnapshotData)>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = || format!("{}: damaged snapshot (checksum); remove it and let the group's leader send a new one", path.display());
    let io_err = |e: io::Error| format!("{}: {e}", path.display());
    let mut h = [0u8; SNAP_HEADER];
    if file.read_exact(&mut h).is_err() || &h[..8] != SNAP_MAGIC {
        return read_old_snapshot(path).map(Some);
    }
    let meta_len = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
    let len = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(h[20..28].try_into().expect("8 bytes"));
    let at = (SNAP_HEADER + meta_len) as u64;
    if file.metadata().map_err(io_err)?.len() != at + len {
        return Err(damaged());
    }
    let mut meta_json = vec![0; meta_len];
    file.read_exact(&mut meta_json).map_err(io_err)?;
    if u64::from_le_bytes(h[28..].try_into().expect("8 bytes")) != xxh3_64(&[&h[..28], &meta_json[..]].concat()) {
        return Err(damaged());
    }
    let meta: Meta = serde_json::from_slice(&meta_json).map_err(|_| damaged())?;
    Ok(Some((meta, SnapshotData::File { file: Arc::new(file), at, len, sum })))
}

/// A snapshot of the layout before 2026-12-02 (checksum, then the JSON of
/// meta and image), rewritten in the current one.
fn read_old_snapshot(path: &Path) -> Result<(Meta, SnapshotData), String> {
    #[derive(Deserialize)]
    struct Old {
        meta: Meta,
        data: Vec<u8>,
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let damaged = || format!("{}: damaged snapshot (checksum); remove it and let the group's leader send a new one", path.display());
    if bytes.len() < 8 || u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) != xxh3_64(&bytes[8..]) {
        return Err(damaged());
    }
    let old: Old = serde_json::from_slice(&bytes[8..]).map_err(|_| damaged())?;
    let data = write_snapshot(path, &old.meta, &old.data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((old.meta, data))
}

/// Writes a snapshot (temporary file, sync, rename, directory sync) and
/// returns a handle to its image.
fn write_snapshot(path: &Path, meta: &Meta, data: &[u8]) -> io::Result<SnapshotData> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let header = snap_header(&meta_json, data);
    let tmp = path.with_extension("snap.tmp");
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(&header)?;
    f.write_all(&meta_json)?;
    f.write_all(data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    crate::journal::segment::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    let (at, len) = ((SNAP_HEADER + meta_json.len()) as u64, data.len() as u64);
    Ok(SnapshotData::File { file: Arc::new(f), at, len, sum: xxh3_64(data) })
}

/// Where a group's state machine stands: moved by every apply, read by a
/// graceful stop once the group is shut down.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    pub log_id: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// `state/p-NN/stopped`: a replica closed by a graceful stop at `applied`,
/// with what of the partition lives only in memory (its claims).
#[derive(Serialize, Deserialize)]
pub struct Stopped {
    pub raft_id: NodeId,
    pub applied: Applied,
    pub claims: BTreeMap<String, Claim>,
}

const STOPPED: &str = "stopped";

impl Stopped {
    /// Writes the marker into `dir` (checksum, then JSON), durably.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let tmp = dir.join("stopped.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&xxh3_64(&json).to_le_bytes())?;
        f.write_all(&json)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(STOPPED))?;
        crate::journal::segment::sync_dir(dir)
    }

    /// The marker in `dir`, if it is sound and of this node's Raft
    /// identity. It is removed (durably) either way: the replica is about
    /// to move on from the point it names.
    pub fn take(dir: &Path, raft_id: NodeId) -> Result<Option<Stopped>, String> {
        let path = dir.join(STOPPED);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        std::fs::remove_file(&path)
            .and_then(|()| crate::journal::segment::sync_dir(dir))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let sound = bytes.len() >= 8 && u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) == xxh3_64(&bytes[8..]);
        let stopped = sound.then(|| serde_json::from_slice::<Stopped>(&bytes[8..]).ok()).flatten();
        Ok(match stopped {
            Some(s) if s.raft_id == raft_id => Some(s),
            Some(_) => {
                tracing::warn!(file = %path.display(), "a replica left by another Raft identity; rebuilding it");
                None
            }
            None => {
                tracing::warn!(file = %path.display(), "damaged clean-stop marker; rebuilding the replica");
                None
            }
        })
    }
}

/// One group's state machine.
pub struct GroupSm {
    group: u32,
    machine: Arc<Machine>,
    path: PathBuf,
    applied: Arc<Mutex<Applied>>,
    /// The newest snapshot built or installed (also on disk).
    current: Arc<Mutex<Option<Snapshot<TypeConfig>>>>,
}

impl GroupSm {
    /// The state machine of `group`. A replica reopened after a clean stop
    /// (`stopped`) carries on from it; any other is rebuilt from the
    /// snapshot on disk, as is one the snapshot has overtaken.
    pub async fn open(
        group: u32,
        machine: Arc<Machine>,
        dir: &Path,
        applied: Arc<Mutex<Applied>>,
        stopped: Option<Stopped>,
    ) -> Result<GroupSm, String> {
        let path = dir.join(format!("group-{group}.snap"));
        let current = read_snapshot(&path)?;
        let snapshot_at = current.as_ref().and_then(|(m, _)| m.last_log_id);
        match (stopped, &current) {
            (Some(s), _) if s.applied.log_id >= snapshot_at => {
                machine.restore_claims(group, s.claims);
                *applied.lock() = s.applied;
            }
            (_, Some((meta, data))) => {
                let image = data.bytes().map_err(|e| format!("{}: {e}", path.display()))?;
                machine.install(group, &image).await?;
                *applied.lock() = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
            }
            (_, None) => {}
        }
        let current = current.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(data) });
        Ok(GroupSm { group, machine, path, applied, current: Arc::new(Mutex::new(current)) })
    }
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::IO { source: StorageIOError::write_state_machine(&io::Error::other(e.to_string())) }
}

/// Builds a snapshot from the state at the moment it is made (between two
/// applies of its group, which is all the image depends on).
pub struct Builder {
    meta: Meta,
    data: Vec<u8>,
    path: PathBuf,
    current: Arc<Mutex<Option<Snapshot<TypeConfig>>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (path, meta, data) = (self.path.clone(), self.meta.clone(), std::mem::take(&mut self.data));
        let kept = tokio::task::spawn_blocking(move || write_snapshot(&path, &meta, &data))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
        let snapshot = Snapshot { meta: self.meta.clone(), snapshot: Box::new(kept) };
        *self.current.lock() = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let a = self.applied.lock();
        Ok((a.log_id, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            let outcome = match e.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Membership(m) => {
                    self.applied.lock().membership = StoredMembership::new(Some(e.log_id), m);
                    Outcome::Done
                }
                EntryPayload::Normal(cmd) => self
                    .machine
                    .apply(cmd)
                    .await
                    .map_err(|err| StorageError::IO { source: StorageIOError::apply(e.log_id, &io::Error::other(err.to_string())) })?,
            };
            self.applied.lock().log_id = Some(e.log_id);
            out.push(outcome);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let Applied { log_id, membership } = self.applied.lock().clone();
        let id = log_id.map_or_else(|| "empty".to_string(), |l| format!("{}-{}", l.leader_id, l.index));
        Builder {
            meta: SnapshotMeta { last_log_id: log_id, last_membership: membership, snapshot_id: id },
            data: self.machine.image(self.group),
            path: self.path.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotData::Received(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<SnapshotData>) -> Result<(), StorageError<NodeId>> {
        let image = snapshot.bytes().map_err(|e| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) })?;
        let (path, m, data) = (self.path.clone(), meta.clone(), image.clone());
        let kept = tokio::task::spawn_blocking(move || write_snapshot(&path, &m, &data))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
        self.machine.install(self.group, &image).await.map_err(sm_error)?;
        tracing::info!(group = self.group, at = ?meta.last_log_id, bytes = image.len(), "installed a snapshot sent by the group's leader");
        *self.applied.lock() = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        *self.current.lock() = Some(Snapshot { meta: meta.clone(), snapshot: Box::new(kept) });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.current.lock().clone())
    }
}

/// A link as the API shows it, from a record sent by another node.
pub fn link_of(rec: WireRecord) -> Option<Link> {
    rec.into_stored().and_then(|s| s.link)
}
