//! openraft glue: the type config and the state machine that applies the
//! commands a group's log carries (`command.rs`) to the store.
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

use super::command::{Command, NodeId, Outcome, Refusal};
use super::metadata::MetaState;
use super::wire::WireRecord;
use crate::cache::Cache;
use crate::journal::file;
use crate::store::{ApplyMode, Link, OpenError, Store, Stored, Version, WriteError, IDEMPOTENCY_WINDOW_MS};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        SnapshotData = SnapshotData,
);

pub use super::snapshot::SnapshotData;
use super::snapshot::{self, Meta};

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;

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

/// Opens a partition's replica in a directory (`state/p-NN/`).
pub type OpenReplica = Box<dyn Fn(PathBuf) -> Result<Store, OpenError> + Send + Sync>;

/// What the state machines of every group on this node share: one store
/// per partition (`DATA_DIR/state/p-NN/`), the idempotency claims and the
/// metadata.
pub struct Machine {
    /// Swapped whole when a snapshot is installed.
    stores: Vec<RwLock<Arc<Store>>>,
    open: OpenReplica,
    state_dir: PathBuf,
    pub cache: Arc<Cache>,
    pub partitions: u32,
    claims: Mutex<HashMap<String, Claim>>,
    pub meta: RwLock<MetaState>,
}

impl Machine {
    /// `stores[p]` holds partition `p`'s records, in `state_dir/p-NN/`.
    pub fn new(stores: Vec<Arc<Store>>, open: OpenReplica, state_dir: PathBuf, cache: Arc<Cache>) -> Arc<Machine> {
        let partitions = stores.len() as u32;
        let stores = stores.into_iter().map(RwLock::new).collect();
        Arc::new(Machine { stores, open, state_dir, cache, partitions, claims: Mutex::default(), meta: RwLock::default() })
    }

    pub fn meta_group(&self) -> u32 {
        self.partitions
    }

    /// The store of `code`'s partition.
    pub fn store_of(&self, code: &str) -> Arc<Store> {
        self.replica(partition_of(code, self.partitions))
    }

    pub fn replica(&self, group: u32) -> Arc<Store> {
        self.stores[group as usize].read().clone()
    }

    pub fn stores(&self) -> Vec<Arc<Store>> {
        self.stores.iter().map(|s| s.read().clone()).collect()
    }

    /// A partition's replica directory.
    pub fn replica_dir(&self, group: u32) -> PathBuf {
        self.state_dir.join(format!("p-{group:02}"))
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

    /// Makes a checkpoint of some replica of the partition (`files`) this
    /// node's replica: the store is closed, its directory made anew from
    /// the checkpoint, and reopened in its place. Cached entries of the
    /// partition go: they may be of the state left behind.
    async fn replace_replica(self: &Arc<Self>, group: u32, files: PathBuf) -> Result<(), String> {
        let me = self.clone();
        let store = tokio::task::spawn_blocking(move || {
            me.replica(group).close();
            let dir = me.replica_dir(group);
            crate::store::copy_checkpoint(&files, &dir).map_err(|e| format!("{} into {}: {e}", files.display(), dir.display()))?;
            (me.open)(dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        *self.stores[group as usize].write() = Arc::new(store);
        let p = self.partitions;
        self.cache.invalidate_where(|code| partition_of(code, p) == group);
        Ok(())
    }

    /// Writes a snapshot image of the layout before 2026-12-02 (every
    /// record) into the partition's (empty) replica.
    async fn install_records(&self, group: u32, data: &[u8]) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Records {
            records: Vec<WireRecord>,
            claims: BTreeMap<String, Claim>,
        }
        let image: Records = serde_json::from_slice(data).map_err(|e| format!("partition image: {e}"))?;
        let store = self.replica(group);
        for rec in image.records {
            let stored = rec.into_stored().ok_or("partition image: an invalid record")?;
            store.apply(stored, ApplyMode::Replace).await.map_err(|e| e.to_string())?;
        }
        self.restore_claims(group, image.claims);
        Ok(())
    }
}

fn version(at_ms: i64) -> Version {
    Version { ms: at_ms, origin: 1 }
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
        file::write_atomic(&dir.join(STOPPED), &[&xxh3_64(&json).to_le_bytes(), &json]).map(drop)
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
        std::fs::remove_file(&path).and_then(|()| file::sync_dir(dir)).map_err(|e| format!("{}: {e}", path.display()))?;
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
    /// `DATA_DIR/raft/`, where the snapshots are.
    dir: PathBuf,
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
        let sm = GroupSm { group, machine, dir: dir.to_path_buf(), applied, current: Arc::default() };
        let found = snapshot::read(&sm.path())?;
        if let Some(snapshot::Read::Old(meta, data)) = &found {
            // Rebuilt from the old image and kept in the current layout.
            sm.machine.install_records(group, data).await.map_err(|e| format!("{}: {e}", sm.path().display()))?;
            *sm.applied.lock() = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
            let snapshot = sm.build(meta.clone()).await.map_err(|e| format!("{}: {e}", sm.path().display()))?;
            *sm.current.lock() = Some(snapshot);
            return Ok(sm);
        }
        let current = match found {
            Some(snapshot::Read::Current(meta, image)) => {
                let files = (group != sm.machine.meta_group()).then(|| snapshot::files_dir(dir, group, &meta.snapshot_id));
                Some(Snapshot { meta, snapshot: Box::new(SnapshotData { image, files }) })
            }
            _ => None,
        };
        let snapshot_at = current.as_ref().and_then(|s| s.meta.last_log_id);
        match (stopped, &current) {
            (Some(s), _) if s.applied.log_id >= snapshot_at => {
                sm.machine.restore_claims(group, s.claims);
                *sm.applied.lock() = s.applied;
            }
            (_, Some(snapshot)) => {
                let data: &SnapshotData = &snapshot.snapshot;
                let image = data.image.bytes().map_err(|e| format!("{}: {e}", sm.path().display()))?;
                sm.install(&snapshot.meta, &image, data.files.clone()).await?
            }
            (_, None) => {}
        }
        snapshot::tidy(dir, group, current.as_ref().map(|s| s.meta.snapshot_id.as_str()));
        *sm.current.lock() = current;
        Ok(sm)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("group-{}.snap", self.group))
    }

    /// Makes the state the snapshot's: the metadata, or a partition's
    /// replica and claims.
    async fn install(&self, meta: &Meta, image: &[u8], files: Option<PathBuf>) -> Result<(), String> {
        if self.group == self.machine.meta_group() {
            *self.machine.meta.write() = serde_json::from_slice(image).map_err(|e| format!("metadata image: {e}"))?;
        } else {
            let claims: BTreeMap<String, Claim> = serde_json::from_slice(image).map_err(|e| format!("partition claims: {e}"))?;
            let files = files.ok_or("a partition snapshot without its files")?;
            self.machine.replace_replica(self.group, files).await?;
            self.machine.restore_claims(self.group, claims);
        }
        *self.applied.lock() = Applied { log_id: meta.last_log_id, membership: meta.last_membership.clone() };
        Ok(())
    }

    /// A snapshot of the state now, as `meta` names it: the metadata, or
    /// the partition's claims plus a checkpoint of its replica. Written
    /// down before it is answered; older snapshots of the group go.
    async fn build(&self, meta: Meta) -> io::Result<Snapshot<TypeConfig>> {
        let (files, image) = if self.group == self.machine.meta_group() {
            (None, serde_json::to_vec(&*self.machine.meta.read()).map_err(io::Error::other)?)
        } else {
            let files = snapshot::files_dir(&self.dir, self.group, &meta.snapshot_id);
            let tmp = files.with_extension("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            self.machine.replica(self.group).checkpoint(tmp.clone()).await.map_err(io::Error::other)?;
            let image = serde_json::to_vec(&self.machine.claims_of(self.group)).map_err(io::Error::other)?;
            let files_in = files.clone();
            tokio::task::spawn_blocking(move || {
                if files_in.exists() {
                    std::fs::remove_dir_all(&tmp)
                } else {
                    file::rename_durably(&tmp, &files_in)
                }
            })
            .await
            .map_err(io::Error::other)??;
            (Some(files), image)
        };
        let (path, m, dir, group) = (self.path(), meta.clone(), self.dir.clone(), self.group);
        let image = tokio::task::spawn_blocking(move || {
            let image = snapshot::write(&path, &m, &image)?;
            snapshot::tidy(&dir, group, Some(&m.snapshot_id));
            Ok::<_, io::Error>(image)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData { image, files }) })
    }
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::IO { source: StorageIOError::write_state_machine(&io::Error::other(e.to_string())) }
}

/// Builds a snapshot: the work is done when it is asked for, between two
/// applies of its group (`get_snapshot_builder`), since a checkpoint is a
/// sync, one segment's copy and hard links.
pub struct Builder {
    built: Option<io::Result<Snapshot<TypeConfig>>>,
    current: Arc<Mutex<Option<Snapshot<TypeConfig>>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let built = self.built.take().unwrap_or_else(|| Err(io::Error::other("a snapshot builder used twice")));
        let snapshot = built.map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
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
        let meta = SnapshotMeta { last_log_id: log_id, last_membership: membership, snapshot_id: id };
        Builder { built: Some(self.build(meta).await), current: self.current.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotData { image: snapshot::Image::Received(Vec::new()), files: None }))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<SnapshotData>) -> Result<(), StorageError<NodeId>> {
        let image = snapshot.image.bytes().map_err(|e| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) })?;
        let (path, m, written) = (self.path(), meta.clone(), image.clone());
        let kept = tokio::task::spawn_blocking(move || snapshot::write(&path, &m, &written))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(None, &e) })?;
        self.install(meta, &image, snapshot.files.clone()).await.map_err(sm_error)?;
        let kept = SnapshotData { image: kept, files: snapshot.files };
        snapshot::tidy(&self.dir, self.group, Some(&meta.snapshot_id));
        tracing::info!(group = self.group, at = ?meta.last_log_id, "installed a snapshot sent by the group's leader");
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
