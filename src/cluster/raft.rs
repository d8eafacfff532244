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
//! node's replica of it. They are rebuilt at start from each group's
//! snapshot file plus the committed log after it, so they need no
//! durability of their own.
//! A snapshot of a partition is its records and claims as JSON, written
//! to `DATA_DIR/raft/group-N.snap` with a checksum before the log behind
//! it is purged, and sent whole to a replica that is too far behind.

use std::collections::{BTreeMap, HashMap};
use std::io;
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
        SnapshotData = Vec<u8>,
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
        let p = self.partitions;
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
        let claims: BTreeMap<String, Claim> =
            self.claims.lock().iter().filter(|(k, _)| partition_of(k, p) == group).map(|(k, c)| (k.clone(), c.clone())).collect();
        serde_json::to_vec(&Image { records, claims }).expect("an image serialises")
    }

    /// Makes a partition's state the image's. Records are written over
    /// whatever is here: the image is of a later log position than any
    /// state this replica has applied.
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
        let p = self.partitions;
        let mut claims = self.claims.lock();
        claims.retain(|k, _| partition_of(k, p) != group);
        claims.extend(image.claims);
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

/// A snapshot as kept on disk: checksum, then the JSON of meta and image.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// One group's state machine.
pub struct GroupSm {
    group: u32,
    machine: Arc<Machine>,
    path: PathBuf,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The newest snapshot built or installed (also on disk).
    current: Arc<Mutex<Option<Snapshot<TypeConfig>>>>,
}

impl GroupSm {
    /// The state machine of `group`, with the snapshot on disk (if any)
    /// installed into the store.
    pub async fn open(group: u32, machine: Arc<Machine>, dir: &Path) -> Result<GroupSm, String> {
        let path = dir.join(format!("group-{group}.snap"));
        let mut sm = GroupSm { group, machine, path, applied: None, membership: StoredMembership::default(), current: Arc::default() };
        if let Some(file) = read_snapshot(&sm.path)? {
            sm.machine.install(group, &file.data).await?;
            sm.applied = file.meta.last_log_id;
            sm.membership = file.meta.last_membership.clone();
            *sm.current.lock() = Some(Snapshot { meta: file.meta, snapshot: Box::new(file.data) });
        }
        Ok(sm)
    }
}

fn read_snapshot(path: &Path) -> Result<Option<SnapshotFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = || format!("{}: damaged snapshot (checksum); remove it and let the group's leader send a new one", path.display());
    if bytes.len() < 8 || u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) != xxh3_64(&bytes[8..]) {
        return Err(damaged());
    }
    serde_json::from_slice(&bytes[8..]).map(Some).map_err(|_| damaged())
}

fn write_snapshot(path: &Path, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(&SnapshotFile { meta: meta.clone(), data: data.to_vec() }).map_err(io::Error::other)?;
    let mut bytes = xxh3_64(&json).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let tmp = path.with_extension("snap.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    crate::journal::segment::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::IO { source: StorageIOError::write_state_machine(&io::Error::other(e.to_string())) }
}

/// Builds a snapshot from the state at the moment it is made (between two
/// applies of its group, which is all the image depends on).
pub struct Builder {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
    path: PathBuf,
    current: Arc<Mutex<Option<Snapshot<TypeConfig>>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (path, meta, data) = (self.path.clone(), self.meta.clone(), std::mem::take(&mut self.data));
        let (meta, data) = tokio::task::spawn_blocking(move || write_snapshot(&path, &meta, &data).map(|()| (meta, data)))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
        let kept: Snapshot<TypeConfig> = Snapshot { meta: meta.clone(), snapshot: Box::new(data.clone()) };
        *self.current.lock() = Some(kept);
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
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
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Outcome::Done
                }
                EntryPayload::Normal(cmd) => self
                    .machine
                    .apply(cmd)
                    .await
                    .map_err(|err| StorageError::IO { source: StorageIOError::apply(e.log_id, &io::Error::other(err.to_string())) })?,
            };
            self.applied = Some(e.log_id);
            out.push(outcome);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let id = self.applied.map_or_else(|| "empty".to_string(), |l| format!("{}-{}", l.leader_id, l.index));
        Builder {
            meta: SnapshotMeta { last_log_id: self.applied, last_membership: self.membership.clone(), snapshot_id: id },
            data: self.machine.image(self.group),
            path: self.path.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Vec<u8>>, StorageError<NodeId>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Vec<u8>>,
    ) -> Result<(), StorageError<NodeId>> {
        let (path, m, data) = (self.path.clone(), meta.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || write_snapshot(&path, &m, &data))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
        self.machine.install(self.group, &snapshot).await.map_err(sm_error)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.current.lock() = Some(Snapshot { meta: meta.clone(), snapshot });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.current.lock().as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: s.snapshot.clone() }))
    }
}

/// A link as the API shows it, from a record sent by another node.
pub fn link_of(rec: WireRecord) -> Option<Link> {
    rec.into_stored().and_then(|s| s.link)
}
