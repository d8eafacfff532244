//! Several shortd nodes sharing the links through Raft (openraft).
//!
//! - The codes are split into `--partitions` partitions by xxh3; each is a
//!   Raft group (`raft.rs`) whose log lives in this node's journal
//!   (`raftlog.rs`) and whose state machine is the store. A metadata group
//!   holds the members and the id counter (`metadata.rs`).
//! - Every write is proposed to its partition's leader (forwarded there by
//!   whichever node took the request) and answered once a majority has
//!   committed and the leader has applied it.
//! - Placement comes from the ring over the members (`placement.rs`); each
//!   group's leader moves its membership toward it (learner, catch up,
//!   voter, old voter out), a few groups at a time.
//! - A redirect miss reads this node's replica when it holds the code,
//!   else one coalesced fetch from the partition's leader. API reads are
//!   linearizable (`ensure_linearizable` on the leader).
//!
//! All of it runs on this module's own small runtime, so a slow peer never
//! occupies a worker thread. `docs/cluster.md` describes the behaviour.

pub mod command;
pub mod ids;
pub mod metadata;
pub mod peer;
pub mod placement;
pub mod raft;
pub mod raftlog;
pub mod ring;
pub mod snapshot;
pub mod transport;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use http::{Method, StatusCode};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use self::command::{Command, MetaCommand, NodeId, Outcome, WirePatch};
use self::metadata::MetaState;
use self::peer::Peers;
use self::placement::Placement;
use self::raft::{link_of, partition_of, Applied, GroupSm, Machine, OpenReplica, Raft, Stopped};
use self::raftlog::RaftLog;
use self::wire::WireRecord;
use crate::cache::{Cache, Entry};
use crate::clock;
use crate::code::CodeKey;
use crate::config::{ClusterConfig, Durability};
use crate::store::{Created, Link, NewLink, OpenError, Patch, Store, Stored, Version, WriteError, ALIAS_ID};

/// Longest a write or an API read tries to reach its partition's leader.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest one forwarded proposal may take (a commit under load). A leader
/// cut off by a partition drops packets rather than refusing them, so this
/// is also how long a proposal waits before it tries the group's new
/// leader; a retried proposal is harmless (a create retried with the same
/// code and version is recognised, a PATCH re-applies the same change).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
const CLICKS_EVERY: Duration = Duration::from_millis(500);
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest a graceful stop waits for its last click report, and then for
/// the groups' state machines to finish.
const STOP_REPORT_WITHIN: Duration = Duration::from_secs(3);
/// A member not heard from this long shows as `down`.
const DOWN_AFTER: Duration = Duration::from_secs(3);
/// Groups whose membership one node moves at the same time.
const MOVES_AT_ONCE: usize = 4;
/// Least time between two elections this node starts for one group.
const ELECT_BACKOFF: Duration = Duration::from_secs(10);
/// Ids leased from the metadata group at a time.
const LEASE: u64 = 1024;
/// A follower's replica answers redirects while its leader showed it
/// caught up this recently: the bound on how stale such a read can be.
const FRESH_FOR: Duration = Duration::from_millis(500);

/// Result of fetching a code from another node: `Err(())` when no node
/// that holds it answered.
pub type Fetched = Result<Option<Stored>, ()>;
/// A fetch and the cache generation read before it started: whoever
/// caches the result must insert with that generation, so that an
/// invalidation during the fetch is not undone by it.
pub type SharedFetch = (Fetched, u64);

pub struct Cluster {
    pub cfg: ClusterConfig,
    rt: Handle,
    raft_id: NodeId,
    groups: Vec<Raft>,
    /// Per group: where its state machine stands.
    applied: Vec<Arc<Mutex<Applied>>>,
    machine: Arc<Machine>,
    log: Arc<RaftLog>,
    peers: Arc<Peers>,
    cache: Arc<Cache>,
    key: CodeKey,
    origin: u32,
    /// Leased ids: (next, end).
    ids: tokio::sync::Mutex<(u64, u64)>,
    /// Clicks served here, not yet proposed.
    clicks: Mutex<HashMap<CompactString, u64>>,
    /// Codes being fetched from a peer, with everyone waiting for them.
    fetches: Mutex<HashMap<CompactString, Vec<oneshot::Sender<SharedFetch>>>>,
    placement: RwLock<Arc<Placement>>,
    /// Groups whose membership this node is changing now.
    moving: Mutex<HashSet<u32>>,
    /// Member name -> when this node last heard from it.
    heard: Mutex<HashMap<String, Instant>>,
    /// Per group: when a leader last showed that this replica held every
    /// committed entry, and that commit index (`caught_up`).
    fresh: Vec<Mutex<(Option<Instant>, u64)>>,
    /// Per group: when this node last asked to lead it.
    elected: Mutex<Vec<Option<Instant>>>,
}

/// Why a forwarded request did not settle it.
enum Forward {
    /// Try another node (not the leader, unreachable, election).
    Retry(Option<String>),
    Final(WriteError),
}

#[derive(Serialize, Deserialize)]
struct JoinRequest {
    name: String,
    raft_id: NodeId,
    addr: String,
}

#[derive(Serialize, Deserialize)]
struct NotLeader {
    leader: Option<String>,
}

pub fn origin_of(node_id: &str) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()) as u32).max(1)
}

/// Opens this node's Raft journal in `DATA_DIR/raft/`: before the store,
/// whose replica directory it then owns.
pub fn open_log(data_dir: &Path, cfg: &ClusterConfig, durability: Durability, segment_bytes: u64) -> Result<Arc<RaftLog>, String> {
    let single = std::fs::read_dir(data_dir)
        .map(|d| d.flatten().any(|e| e.file_name().to_str().and_then(crate::journal::segment::segment_number).is_some()))
        .unwrap_or(false);
    if single {
        return Err(format!(
            "{} holds a single node's (or an old cluster's) store; a Raft cluster node needs its own directory: \
             export the links (`shortd export`) and import them through the cluster's API",
            data_dir.display()
        ));
    }
    RaftLog::open(&data_dir.join("raft"), cfg.partitions + 1, durability, segment_bytes).map_err(|e| format!("the Raft log: {e}"))
}

/// This node's replicas, one store per partition, with what a graceful
/// stop left of each.
pub struct Partitions {
    stores: Vec<Arc<Store>>,
    stopped: Vec<Option<Stopped>>,
    open: OpenReplica,
    state: PathBuf,
}

/// Opens each partition's replica in `state/p-NN/` (`open` opens a store).
/// One a graceful stop closed is reopened as it was; any other is cleared,
/// to be rebuilt from its group's snapshot and journal.
pub fn open_partitions(state: &Path, log: &RaftLog, partitions: u32, open: OpenReplica) -> Result<Partitions, OpenError> {
    let raft_id = raft_id(log.dir()).map_err(OpenError::Invalid)?;
    let failed = |path: &Path, e: std::io::Error| OpenError::Invalid(format!("cannot clear {}: {e}", path.display()));
    let clear = |path: &Path| match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(path, e)),
        _ => Ok(()),
    };
    let names: Vec<String> = (0..partitions).map(|p| format!("p-{p:02}")).collect();
    // What else is here is of an older layout or another partitioning.
    for entry in std::fs::read_dir(state).into_iter().flatten().flatten() {
        let path = entry.path();
        if !entry.file_name().to_str().is_some_and(|n| names.iter().any(|m| m == n)) {
            let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.map_err(|e| failed(&path, e))?;
        }
    }
    let mut out = Partitions { stores: Vec::new(), stopped: Vec::new(), open, state: state.to_path_buf() };
    for name in names {
        let dir = state.join(name);
        let mut stopped = Stopped::take(&dir, raft_id).map_err(OpenError::Invalid)?;
        let store = match stopped.is_some().then(|| (out.open)(dir.clone())) {
            Some(Ok(store)) => store,
            reopened => {
                if let Some(Err(e)) = reopened {
                    tracing::warn!(dir = %dir.display(), error = %e, "a cleanly stopped replica did not open; rebuilding it");
                }
                stopped = None;
                clear(&dir)?;
                (out.open)(dir)?
            }
        };
        out.stores.push(Arc::new(store));
        out.stopped.push(stopped);
    }
    let reopened = out.stopped.iter().filter(|s| s.is_some()).count();
    tracing::info!(reopened, rebuilt = partitions as usize - reopened, "partition replicas opened");
    Ok(out)
}

/// This node's Raft id: random, made with its Raft directory, never reused.
fn raft_id(dir: &Path) -> Result<NodeId, String> {
    let path = dir.join("raft-id");
    match std::fs::read_to_string(&path) {
        Ok(t) => return t.trim().parse().map_err(|_| format!("{} is not a number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a Raft id: {e}"))?;
    let id = u64::from_le_bytes(bytes) >> 1 | 1;
    crate::journal::file::write_atomic(&path, &[format!("{id}\n").as_bytes()]).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

fn unavailable(what: impl std::fmt::Display) -> WriteError {
    WriteError::Unavailable(what.to_string())
}

fn unexpected(o: Outcome) -> WriteError {
    unavailable(format!("unexpected answer from the state machine: {o:?}"))
}

impl Cluster {
    /// Starts one Raft group per partition plus the metadata group, over
    /// `log`; `partitions.stores[p]` is partition `p`'s replica.
    pub fn start(cfg: ClusterConfig, log: Arc<RaftLog>, partitions: Partitions, cache: Arc<Cache>) -> Result<Arc<Cluster>, String> {
        let Partitions { stores, stopped, open, state } = partitions;
        if stores.len() != cfg.partitions as usize {
            return Err(format!("{} partition stores for {} partitions", stores.len(), cfg.partitions));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shortd-cluster")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cluster runtime: {e}"))?;
        // Lives as long as the process: tasks on it hold the cluster, and a
        // runtime may not be dropped from one of its own threads.
        let rt = Box::leak(Box::new(runtime)).handle().clone();
        let raft_id = raft_id(log.dir())?;
        let config = openraft::Config {
            cluster_name: "shortd".into(),
            heartbeat_interval: 100,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            install_snapshot_timeout: 120_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.raft_snapshot_entries),
            max_in_snapshot_log_to_keep: cfg.raft_snapshot_entries / 5,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| format!("Raft settings: {e}"))?);
        let peers = Arc::new(Peers::new(&cfg.cluster_key, cfg.peer_timeout));
        let machine = Machine::new(stores, open, state, cache.clone());
        let applied: Vec<Arc<Mutex<Applied>>> = (0..=cfg.partitions).map(|_| Arc::default()).collect();
        let mut stopped = stopped.into_iter();
        let groups = rt.block_on(async {
            let mut groups = Vec::new();
            for g in 0..=cfg.partitions {
                let sm = GroupSm::open(g, machine.clone(), log.dir(), applied[g as usize].clone(), stopped.next().flatten()).await?;
                let net = transport::Network { peers: peers.clone(), group: g };
                let raft = Raft::new(raft_id, config.clone(), net, log.group(g), sm).await.map_err(|e| format!("Raft group {g}: {e}"))?;
                groups.push(raft);
            }
            Ok::<_, String>(groups)
        })?;
        let placement = Arc::new(Placement::new(&MetaState::default(), cfg.partitions, cfg.replication_factor, cfg.vnodes));
        Ok(Arc::new(Cluster {
            key: ids::shared_key(&cfg.cluster_key),
            origin: origin_of(&cfg.node_id),
            rt,
            raft_id,
            groups,
            applied,
            machine,
            log,
            peers,
            cache,
            ids: tokio::sync::Mutex::new((0, 0)),
            clicks: Mutex::default(),
            fetches: Mutex::default(),
            placement: RwLock::new(placement),
            moving: Mutex::default(),
            heard: Mutex::default(),
            fresh: (0..=cfg.partitions).map(|_| Mutex::new((None, 0))).collect(),
            elected: Mutex::new(vec![None; cfg.partitions as usize + 1]),
            cfg,
        }))
    }

    /// Starts the background work: bootstrap or join, placement, click
    /// reports, liveness.
    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        self.rt.spawn(async move { me.begin().await });
        let me = self.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_EVERY).await;
                me.reconcile();
            }
        });
        let me = self.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(CLICKS_EVERY).await;
                me.report_clicks();
            }
        });
        let me = self.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(PING_EVERY).await;
                me.ping().await;
            }
        });
    }

    /// A graceful stop, once no request is left: reports the clicks served
    /// here, shuts every group down, then closes each replica (which syncs
    /// it) and marks it stopped at the point its group applied, so the next
    /// start reopens it instead of rebuilding it. Nothing to hand over:
    /// every committed write is on a majority.
    pub fn stop(self: &Arc<Self>) {
        let by_group = self.take_clicks();
        self.rt.block_on(async {
            let reports = async {
                for (g, counts) in by_group {
                    if let Err(e) = self.propose(g, Command::Clicks { counts }).await {
                        tracing::warn!(group = g, error = %e, "clicks served just before the stop were not recorded");
                    }
                }
            };
            let _ = tokio::time::timeout(STOP_REPORT_WITHIN, reports).await;
            for raft in &self.groups {
                let _ = raft.shutdown().await;
            }
        });
        let deadline = Instant::now() + STOP_REPORT_WITHIN;
        for (p, store) in self.stores().iter().enumerate() {
            // The group's state machine applies what it was handed before
            // it goes; it is gone when its handle on `applied` is.
            let cell = &self.applied[p];
            while Arc::strong_count(cell) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            store.close();
            if Arc::strong_count(cell) > 1 || store.poisoned().is_some() {
                tracing::warn!(partition = p, "replica not closed cleanly; it is rebuilt at the next start");
                continue;
            }
            let stopped = Stopped { raft_id: self.raft_id, applied: cell.lock().clone(), claims: self.machine.claims_of(p as u32) };
            if let Err(e) = stopped.write(&store.shared().dir) {
                tracing::warn!(partition = p, error = %e, "cannot mark the replica stopped; it is rebuilt at the next start");
            }
        }
    }

    pub fn me(&self) -> &str {
        &self.cfg.node_id
    }

    fn meta_group(&self) -> u32 {
        self.cfg.partitions
    }

    /// The store of `code`'s partition: this node's replica of it.
    pub fn store_of(&self, code: &str) -> Arc<Store> {
        self.machine.store_of(code)
    }

    /// Every partition's store, partition 0 first.
    pub fn stores(&self) -> Vec<Arc<Store>> {
        self.machine.stores()
    }

    pub fn partition(&self, key: &str) -> u32 {
        partition_of(key, self.cfg.partitions)
    }

    async fn on_rt<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, WriteError>
    where
        F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, WriteError>> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        self.rt.spawn(async move { f(me).await }).await.map_err(|e| unavailable(format!("cluster task failed: {e}")))?
    }

    // ---- start-up and membership ----

    /// A new node without seeds starts a cluster of one; with seeds it asks
    /// to join. A node with a log just carries on (and says where it is).
    async fn begin(self: &Arc<Self>) {
        let me = BasicNode { addr: self.cfg.advertise.to_string() };
        let initialized = self.groups[self.meta_group() as usize].is_initialized().await.unwrap_or(true);
        if !initialized && self.cfg.seeds.is_empty() {
            for (g, raft) in self.groups.iter().enumerate() {
                if let Err(e) = raft.initialize(BTreeMap::from([(self.raft_id, me.clone())])).await {
                    tracing::error!(group = g, error = %e, "cannot initialize a Raft group");
                }
            }
            tracing::info!(raft_id = self.raft_id, "started a new cluster");
        }
        let join = JoinRequest { name: self.me().to_string(), raft_id: self.raft_id, addr: me.addr.clone() };
        loop {
            let done = if !initialized && !self.cfg.seeds.is_empty() {
                self.ask_seeds(&join).await
            } else {
                let cmd = MetaCommand::Join { name: join.name.clone(), raft_id: join.raft_id, addr: join.addr.clone() };
                self.propose(self.meta_group(), Command::Meta(cmd)).await.is_ok()
            };
            if done {
                tracing::info!(node = self.me(), "member of the cluster");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn ask_seeds(&self, join: &JoinRequest) -> bool {
        let body = Bytes::from(serde_json::to_vec(join).expect("join serialises"));
        for seed in &self.cfg.seeds {
            match self.peers.send("join", seed, Method::POST, "/internal/v1/join", Some(body.clone()), FORWARD_TIMEOUT).await {
                Ok((s, _)) if s.is_success() => return true,
                Ok((s, b)) => tracing::warn!(seed, status = %s, answer = %String::from_utf8_lossy(&b), "seed refused the join"),
                Err(e) => tracing::debug!(seed, error = %e, "seed unreachable"),
            }
        }
        false
    }

    /// `POST /internal/v1/join`: records the node in the metadata; the
    /// group leaders then bring it in.
    pub async fn join(self: &Arc<Self>, body: &[u8]) -> Result<(), WriteError> {
        let j: JoinRequest = serde_json::from_slice(body).map_err(|e| unavailable(format!("join: {e}")))?;
        let cmd = Command::Meta(MetaCommand::Join { name: j.name, raft_id: j.raft_id, addr: j.addr });
        match self.on_rt(move |me| async move { me.propose(me.meta_group(), cmd).await }).await? {
            Outcome::Done => Ok(()),
            Outcome::Refused { reason } => Err(reason.into()),
            other => Err(unexpected(other)),
        }
    }

    /// `DELETE /api/v1/cluster/members/{id}`.
    pub async fn remove_member(self: &Arc<Self>, name: &str) -> Result<(), String> {
        if name == self.me() {
            return Err(format!("{name} is this node; remove it through another member"));
        }
        if !self.machine.meta.read().members.contains_key(name) {
            return Err(format!("no member {name}"));
        }
        let cmd = Command::Meta(MetaCommand::Remove { name: name.to_string() });
        match self.on_rt(move |me| async move { me.propose(me.meta_group(), cmd).await }).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("the metadata group did not take it: {e}")),
        }
    }

    fn placement(&self) -> Arc<Placement> {
        let meta = self.machine.meta.read();
        let current = self.placement.read().clone();
        if current.epoch == meta.epoch {
            return current;
        }
        let fresh = Arc::new(Placement::new(&meta, self.cfg.partitions, self.cfg.replication_factor, self.cfg.vnodes));
        *self.placement.write() = fresh.clone();
        fresh
    }

    fn metrics(&self, group: u32) -> RaftMetrics<NodeId, BasicNode> {
        self.groups[group as usize].metrics().borrow().clone()
    }

    /// For each group this node leads, moves its voters toward the
    /// placement (and, for the metadata group, makes every other member a
    /// learner); removes members silent for `--dead-after`.
    fn reconcile(self: &Arc<Self>) {
        let meta = self.machine.meta.read().clone();
        if meta.members.is_empty() {
            return;
        }
        let placement = self.placement();
        let mut elected = false;
        for g in 0..=self.meta_group() {
            let m = self.metrics(g);
            if m.current_leader != Some(self.raft_id) {
                // Leaders where the placement puts them (its first voter),
                // so that writes and the cost of a crash spread over the
                // nodes; openraft 0.9 has no leadership transfer, so the
                // preferred node, once caught up, asks for an election.
                // An election it loses still costs the group its leader
                // (Raft without pre-vote), so each group is tried at most
                // once per ELECT_BACKOFF.
                let preferred = placement.voter_names(g).first() == Some(&self.me());
                let due = || self.elected.lock()[g as usize].is_none_or(|t| t.elapsed() > ELECT_BACKOFF);
                if preferred && !elected && m.current_leader.is_some() && self.fresh_replica(g) && due() {
                    elected = true;
                    self.elected.lock()[g as usize] = Some(Instant::now());
                    let raft = self.groups[g as usize].clone();
                    self.rt.spawn(async move { raft.trigger().elect().await });
                }
                continue;
            }
            let config = m.membership_config.membership();
            if config.get_joint_config().len() > 1 {
                continue;
            }
            let voters: BTreeSet<NodeId> = config.voter_ids().collect();
            let learners: BTreeSet<NodeId> = config.learner_ids().collect();
            let target = placement.voters(&meta, g);
            let want_learners: BTreeSet<NodeId> = if g == self.meta_group() {
                meta.members.values().map(|m| m.raft_id).filter(|id| !target.contains(id)).collect()
            } else {
                BTreeSet::new()
            };
            if target.is_empty() || (voters == target && learners == want_learners) {
                continue;
            }
            {
                let mut moving = self.moving.lock();
                if moving.contains(&g) || moving.len() >= MOVES_AT_ONCE {
                    continue;
                }
                moving.insert(g);
            }
            let me = self.clone();
            let nodes: BTreeMap<NodeId, BasicNode> =
                meta.members.values().map(|m| (m.raft_id, BasicNode { addr: m.addr.clone() })).collect();
            self.rt.spawn(async move {
                if let Err(e) = me.move_group(g, &voters, &learners, &target, &want_learners, &nodes).await {
                    tracing::warn!(group = g, error = %e, "membership change did not finish; retrying");
                }
                me.moving.lock().remove(&g);
            });
        }
        if self.metrics(self.meta_group()).current_leader == Some(self.raft_id) {
            self.remove_dead(&meta);
        }
    }

    async fn move_group(
        &self,
        g: u32,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
        target: &BTreeSet<NodeId>,
        want_learners: &BTreeSet<NodeId>,
        nodes: &BTreeMap<NodeId, BasicNode>,
    ) -> Result<(), String> {
        let raft = &self.groups[g as usize];
        let wait = Duration::from_secs(60);
        for id in target.iter().chain(want_learners).filter(|id| !voters.contains(id) && !learners.contains(id)) {
            let node = nodes.get(id).cloned().ok_or("member without an address")?;
            // Blocking for a future voter: it is promoted only once caught up.
            let blocking = target.contains(id);
            tracing::info!(group = g, node = id, "adding a learner");
            tokio::time::timeout(wait, raft.add_learner(*id, node, blocking))
                .await
                .map_err(|_| "a learner did not catch up in time".to_string())?
                .map_err(|e| e.to_string())?;
        }
        if voters != target {
            tracing::info!(group = g, ?target, "changing voters");
            raft.change_membership(target.clone(), false).await.map_err(|e| e.to_string())?;
        }
        let config = self.metrics(g).membership_config.membership().clone();
        let extra: BTreeSet<NodeId> = config.learner_ids().filter(|id| !want_learners.contains(id) && !target.contains(id)).collect();
        if !extra.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(extra), false).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn remove_dead(self: &Arc<Self>, meta: &MetaState) {
        let now = Instant::now();
        let dead: Vec<String> = {
            let mut heard = self.heard.lock();
            meta.members
                .keys()
                .filter(|n| n.as_str() != self.me())
                .filter(|n| now.duration_since(*heard.entry(n.to_string()).or_insert(now)) > self.cfg.dead_after)
                .cloned()
                .collect()
        };
        for name in dead {
            tracing::warn!(member = %name, after = ?self.cfg.dead_after, "removing a member not heard from");
            let me = self.clone();
            self.rt.spawn(async move {
                let _ = me.propose(me.meta_group(), Command::Meta(MetaCommand::Remove { name })).await;
            });
        }
    }

    async fn ping(&self) {
        let members: Vec<(String, String)> = self
            .machine
            .meta
            .read()
            .members
            .iter()
            .filter(|(n, _)| n.as_str() != self.me())
            .map(|(n, m)| (n.clone(), m.addr.clone()))
            .collect();
        for (name, addr) in members {
            if let Ok((s, _)) = self.peers.send("ping", &addr, Method::GET, "/internal/v1/ping", None, self.cfg.peer_timeout).await {
                if s.is_success() {
                    self.heard.lock().insert(name, Instant::now());
                }
            }
        }
    }

    // ---- proposals ----

    /// Commits `cmd` in `group` through its leader (this node or another)
    /// and returns what applying it decided.
    pub async fn propose(&self, group: u32, cmd: Command) -> Result<Outcome, WriteError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        let started = Instant::now();
        let result = loop {
            let mut hint = match self.groups[group as usize].client_write(cmd.clone()).await {
                Ok(r) => break Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_node.map(|n| n.addr),
                Err(RaftError::APIError(e)) => break Err(unavailable(e)),
                Err(RaftError::Fatal(e)) => break Err(unavailable(format!("partition {group} stopped: {e}"))),
            };
            // Not the leader: the one it knows, else the placement's voters.
            let mut tried = HashSet::new();
            let voters: Vec<String> = self.voter_addrs(group);
            let mut candidates = voters.into_iter();
            while let Some(addr) = hint.take().or_else(|| candidates.next()) {
                if addr == self.cfg.advertise.to_string() || !tried.insert(addr.clone()) {
                    continue;
                }
                match self.forward(group, &addr, &cmd).await {
                    Ok(o) => return self.proposed(started, Ok(o)),
                    Err(Forward::Final(e)) => return self.proposed(started, Err(e)),
                    Err(Forward::Retry(h)) => hint = h,
                }
            }
            if Instant::now() > deadline {
                break Err(unavailable(format!("partition {group} has no leader that answers; retry")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.proposed(started, result)
    }

    fn proposed(&self, started: Instant, r: Result<Outcome, WriteError>) -> Result<Outcome, WriteError> {
        crate::metrics::raft_proposal(started.elapsed(), r.is_ok());
        r
    }

    fn voter_addrs(&self, group: u32) -> Vec<String> {
        let meta = self.machine.meta.read();
        self.placement().voter_names(group).iter().filter_map(|n| meta.members.get(*n).map(|m| m.addr.clone())).collect()
    }

    async fn forward(&self, group: u32, addr: &str, cmd: &Command) -> Result<Outcome, Forward> {
        let body = Bytes::from(serde_json::to_vec(cmd).expect("command serialises"));
        let path = format!("/internal/v1/propose?group={group}");
        match self.peers.send("propose", addr, Method::POST, &path, Some(body), FORWARD_TIMEOUT).await {
            Ok((StatusCode::OK, b)) => serde_json::from_slice(&b).map_err(|e| Forward::Final(unavailable(e))),
            Ok((StatusCode::MISDIRECTED_REQUEST, b)) => {
                Err(Forward::Retry(serde_json::from_slice::<NotLeader>(&b).ok().and_then(|n| n.leader)))
            }
            Ok((_, _)) | Err(_) => Err(Forward::Retry(None)),
        }
    }

    /// `POST /internal/v1/propose`: commits here if this node leads the
    /// group; otherwise 421 naming the leader it knows.
    pub async fn propose_here(&self, group: u32, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let Some(raft) = self.groups.get(group as usize) else { return (StatusCode::BAD_REQUEST, b"no such group".to_vec()) };
        let Ok(cmd) = serde_json::from_slice::<Command>(body) else { return (StatusCode::BAD_REQUEST, b"not a command".to_vec()) };
        match raft.client_write(cmd).await {
            Ok(r) => (StatusCode::OK, serde_json::to_vec(&r.data).expect("outcome serialises")),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                (StatusCode::MISDIRECTED_REQUEST, serde_json::to_vec(&NotLeader { leader: f.leader_node.map(|n| n.addr) }).expect("json"))
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string().into_bytes()),
        }
    }

    /// `POST /internal/v1/raft/chunk?group=N&id=ID&name=FILE&offset=O`: part
    /// of a snapshot's file, ahead of the snapshot.
    pub async fn snapshot_chunk(&self, group: u32, id: String, name: String, offset: u64, body: Bytes) -> Result<(), String> {
        if group >= self.cfg.partitions {
            return Err("no such partition".into());
        }
        let dir = self.log.dir().to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::receive_chunk(&dir, group, &id, &name, offset, &body))
            .await
            .map_err(|e| e.to_string())?
    }

    /// `POST /internal/v1/raft/{append,vote,snapshot}?group=N`.
    pub async fn raft_message(&self, what: &str, group: u32, body: &[u8]) -> Result<Vec<u8>, String> {
        let raft = self.groups.get(group as usize).ok_or("no such group")?;
        let bad = |e: serde_json::Error| format!("{what}: {e}");
        let answer = match what {
            "append" => {
                let req: openraft::raft::AppendEntriesRequest<raft::TypeConfig> = serde_json::from_slice(body).map_err(bad)?;
                let last = req.entries.last().map(|e| e.log_id).or(req.prev_log_id).map_or(0, |l| l.index);
                let commit = req.leader_commit.map_or(0, |l| l.index);
                let answer = raft.append_entries(req).await;
                if matches!(answer, Ok(openraft::raft::AppendEntriesResponse::Success)) && last >= commit {
                    *self.fresh[group as usize].lock() = (Some(Instant::now()), commit);
                }
                serde_json::to_vec(&answer)
            }
            "vote" => serde_json::to_vec(&raft.vote(serde_json::from_slice(body).map_err(bad)?).await),
            "snapshot" => {
                let (body, dir) = (body.to_vec(), self.log.dir().to_path_buf());
                let (vote, meta, data) =
                    tokio::task::spawn_blocking(move || snapshot::decode(&body, &dir, group)).await.map_err(|e| e.to_string())??;
                let snapshot = openraft::Snapshot { meta, snapshot: Box::new(data) };
                serde_json::to_vec(&raft.install_full_snapshot(vote, snapshot).await)
            }
            _ => return Err(format!("no Raft message {what}")),
        };
        answer.map_err(|e| e.to_string())
    }

    // ---- reads ----

    /// Whether a redirect may be answered from this node's replica: it
    /// leads the code's partition and a majority acknowledged it lately (a
    /// leader lease), or its leader showed within `FRESH_FOR` that it holds
    /// every committed entry and it has applied them, and it has the code
    /// (a code it lacks may be one it has not received yet).
    pub fn authoritative(&self, code: &str) -> bool {
        let g = self.partition(code);
        self.fresh_replica(g) && (self.leads(g) || self.store_of(code).shared().contains(code))
    }

    fn leads(&self, g: u32) -> bool {
        self.groups[g as usize].metrics().borrow().current_leader == Some(self.raft_id)
    }

    /// Whether this node's replica of group `g` is known to be current:
    /// see `authoritative`.
    pub fn fresh_replica(&self, g: u32) -> bool {
        let (leader, quorum_ack, applied) = {
            let m = self.groups[g as usize].metrics();
            let m = m.borrow();
            (m.current_leader, m.millis_since_quorum_ack, m.last_applied.map_or(0, |l| l.index))
        };
        if leader == Some(self.raft_id) {
            return quorum_ack.is_some_and(|ms| ms < FRESH_FOR.as_millis() as u64);
        }
        let (at, commit) = *self.fresh[g as usize].lock();
        at.is_some_and(|t| t.elapsed() < FRESH_FOR) && applied >= commit
    }

    /// The leader's address for `group` as this node knows it, then the
    /// other voters'.
    fn read_order(&self, group: u32) -> Vec<String> {
        let m = self.metrics(group);
        let leader = m.current_leader.and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
        let mut out: Vec<String> = leader.into_iter().collect();
        for a in self.voter_addrs(group) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// A code's record from its partition's leader (or another voter).
    /// When none answers, this node's own replica, however old: a redirect
    /// that may be stale beats none (counted, docs/cluster.md).
    async fn fetch(&self, code: &str) -> Fetched {
        let me = self.cfg.advertise.to_string();
        for addr in self.read_order(self.partition(code)) {
            if addr == me {
                continue;
            }
            match self.peers.send("fetch", &addr, Method::GET, &format!("/internal/v1/records/{code}"), None, self.cfg.peer_timeout).await {
                Ok((StatusCode::OK, b)) => return Ok(serde_json::from_slice::<WireRecord>(&b).ok().and_then(WireRecord::into_stored)),
                Ok((StatusCode::NOT_FOUND, _)) => return Ok(None),
                _ => continue,
            }
        }
        match self.store_of(code).stored(code) {
            Some(s) => {
                crate::metrics::stale_read();
                Ok(Some(s))
            }
            None => Err(()),
        }
    }

    /// `fetch` shared by every request for the same code at the same time.
    pub async fn fetch_shared(self: &Arc<Self>, code: &str) -> SharedFetch {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut f = self.fetches.lock();
            match f.get_mut(code) {
                Some(waiting) => {
                    waiting.push(tx);
                    false
                }
                None => {
                    f.insert(code.into(), vec![tx]);
                    true
                }
            }
        };
        if lead {
            let me = self.clone();
            let code = CompactString::from(code);
            let generation = self.cache.generation();
            self.rt.spawn(async move {
                crate::metrics::forwarded_read();
                let got = me.fetch(&code).await;
                for w in me.fetches.lock().remove(&code).unwrap_or_default() {
                    let _ = w.send((got.clone(), generation));
                }
            });
        }
        rx.await.unwrap_or((Err(()), 0))
    }

    /// Re-fetches a cached code held elsewhere, in the background.
    pub fn refresh(self: &Arc<Self>, code: &str) {
        let (me, code) = (self.clone(), CompactString::from(code));
        self.rt.spawn(async move {
            let stale = me.cache.peek(&code);
            if let (Ok(found), generation) = me.fetch_shared(&code).await {
                let found = found.map_or(crate::store::Lookup::Missing, Stored::into_lookup);
                me.cache.insert(&code, Entry::from_lookup(found), generation, clock::now_ms());
            }
            if let Some(stale) = stale {
                if me.cache.peek(&code).is_some_and(|now| Arc::ptr_eq(&now, &stale)) {
                    stale.retry_refresh();
                }
            }
        });
    }

    /// A link for the API, linearizable: read on the partition's leader
    /// after it has confirmed its leadership with a majority.
    pub async fn read(self: &Arc<Self>, code: &str) -> Result<Option<Stored>, WriteError> {
        let code = CompactString::from(code);
        self.on_rt(move |me| async move { me.read_linearizable(&code).await }).await
    }

    async fn read_linearizable(&self, code: &str) -> Result<Option<Stored>, WriteError> {
        let g = self.partition(code);
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            match self.read_here(g, code).await {
                Ok(found) => return Ok(found),
                Err(hint) => {
                    for addr in hint.into_iter().chain(self.voter_addrs(g)) {
                        if addr == self.cfg.advertise.to_string() {
                            continue;
                        }
                        let path = format!("/internal/v1/records/{code}?linearizable=1");
                        match self.peers.send("read", &addr, Method::GET, &path, None, FORWARD_TIMEOUT).await {
                            Ok((StatusCode::OK, b)) => {
                                return Ok(serde_json::from_slice::<WireRecord>(&b).ok().and_then(WireRecord::into_stored))
                            }
                            Ok((StatusCode::NOT_FOUND, _)) => return Ok(None),
                            _ => continue,
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(unavailable(format!("partition {g} has no leader that answers; retry")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A linearizable read on this node, or the leader's address it knows.
    pub async fn read_here(&self, group: u32, code: &str) -> Result<Option<Stored>, Option<String>> {
        match self.groups[group as usize].ensure_linearizable().await {
            Ok(_) => Ok(self.store_of(code).stored(code)),
            Err(e) => Err(e.forward_to_leader().and_then(|f| f.leader_node.as_ref().map(|n| n.addr.clone()))),
        }
    }

    // ---- writes ----

    pub async fn create(self: &Arc<Self>, new: NewLink) -> Result<Created, WriteError> {
        self.on_rt(move |me| async move { me.create_here(new).await }).await
    }

    async fn create_here(&self, new: NewLink) -> Result<Created, WriteError> {
        for _ in 0..8 {
            let (code, id) = match &new.alias {
                Some(alias) => (CompactString::from(alias.as_str()), ALIAS_ID),
                None => self.next_code().await?,
            };
            let now = clock::now_ms();
            let link = Link {
                code: code.clone(),
                url: new.url.clone(),
                id,
                created_ms: now,
                expires_ms: new.expires_ms,
                max_clicks: new.max_clicks,
                redirect: new.redirect,
                disabled: new.disabled,
                clicks: 0,
            };
            let mine = WireRecord::from(&Stored { code, link: Some(link), version: Version { ms: now, origin: self.origin } });
            // With a key, its partition decides which link the key makes:
            // every retry, through any node, gets the same one.
            let (rec, replayed) = match &new.idempotency {
                None => (mine, false),
                Some((key, hash)) => {
                    let claim = Command::Claim { key: key.clone(), body_hash: *hash, at_ms: now, link: mine.clone() };
                    match self.propose(self.partition(key), claim).await? {
                        Outcome::Claim { body_hash, .. } if body_hash != *hash => return Err(WriteError::IdempotencyMismatch),
                        Outcome::Claim { link, .. } => {
                            let replayed = link.code != mine.code || link.version_ms != mine.version_ms;
                            (link, replayed)
                        }
                        other => return Err(unexpected(other)),
                    }
                }
            };
            let retry_with_new_code = new.alias.is_none() && !replayed;
            match self.propose(self.partition(&rec.code), Command::Create { link: rec }).await? {
                Outcome::Created { link, .. } => {
                    return link_of(link).map(|link| Created { link, replayed }).ok_or_else(|| unavailable("an invalid record"))
                }
                // A generated code an alias took first: draw another.
                Outcome::Refused { reason: command::Refusal::Taken } if retry_with_new_code => continue,
                Outcome::Refused { reason } => return Err(reason.into()),
                other => return Err(unexpected(other)),
            }
        }
        Err(unavailable("no free code found; retry"))
    }

    /// The next code from this node's lease of ids (a new lease when used up).
    async fn next_code(&self) -> Result<(CompactString, u64), WriteError> {
        loop {
            let id = {
                let mut ids = self.ids.lock().await;
                if ids.0 == ids.1 {
                    match self.propose(self.meta_group(), Command::Meta(MetaCommand::Lease { count: LEASE })).await? {
                        Outcome::Lease { first } => *ids = (first, first + LEASE),
                        other => return Err(unexpected(other)),
                    }
                }
                ids.0 += 1;
                ids.0 - 1
            };
            let Some(code) = self.key.encode(id) else { return Err(WriteError::Exhausted) };
            let code = CompactString::from_utf8_lossy(&code);
            if crate::code::validate_alias(&code).is_ok() {
                return Ok((code, id));
            }
        }
    }

    pub async fn update(self: &Arc<Self>, code: &str, patch: Patch, _body: Bytes) -> Result<Link, WriteError> {
        let code = code.to_string();
        self.on_rt(move |me| async move {
            let cmd = Command::Update { code: code.clone(), patch: WirePatch::from(patch), at_ms: clock::now_ms() };
            let out = me.propose(me.partition(&code), cmd).await?;
            me.invalidate_everywhere(&code);
            match out {
                Outcome::Link { link } => link_of(link).ok_or_else(|| unavailable("an invalid record")),
                Outcome::Refused { reason } => Err(reason.into()),
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    pub async fn delete(self: &Arc<Self>, code: &str) -> Result<(), WriteError> {
        let code = code.to_string();
        self.on_rt(move |me| async move {
            let out = me.propose(me.partition(&code), Command::Delete { code: code.clone(), at_ms: clock::now_ms() }).await?;
            me.invalidate_everywhere(&code);
            match out {
                Outcome::Done => Ok(()),
                Outcome::Refused { reason } => Err(reason.into()),
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    /// Drops `code` from every node's cache (replicas drop it when they
    /// apply the change; this reaches the nodes that only cached it).
    fn invalidate_everywhere(self: &Arc<Self>, code: &str) {
        self.cache.invalidate(code);
        let addrs: Vec<String> =
            self.machine.meta.read().members.iter().filter(|(n, _)| n.as_str() != self.me()).map(|(_, m)| m.addr.clone()).collect();
        for addr in addrs {
            let (me, path) = (self.clone(), format!("/internal/v1/invalidate/{code}"));
            self.rt.spawn(async move {
                let _ = me.peers.send("invalidate", &addr, Method::POST, &path, None, me.cfg.peer_timeout).await;
            });
        }
    }

    /// Clicks served here: counted once they are committed (reported every
    /// `CLICKS_EVERY`). Returns false: the store counts them when the
    /// partition applies the report, not now.
    pub fn on_clicks(&self, code: &str, n: u64) -> bool {
        *self.clicks.lock().entry(code.into()).or_default() += n;
        false
    }

    /// One click on a link with a click limit, decided by its partition in
    /// log order: exact across nodes.
    pub async fn claim_click(self: &Arc<Self>, code: &str) -> Result<bool, WriteError> {
        let code = code.to_string();
        self.on_rt(move |me| async move {
            match me.propose(me.partition(&code), Command::ClickLimited { code: code.clone() }).await? {
                Outcome::Click { granted } => Ok(granted),
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    /// The clicks served here since the last report, by partition.
    fn take_clicks(&self) -> HashMap<u32, Vec<(String, u64)>> {
        let pending = std::mem::take(&mut *self.clicks.lock());
        let mut by_group: HashMap<u32, Vec<(String, u64)>> = HashMap::new();
        for (code, n) in pending {
            by_group.entry(self.partition(&code)).or_default().push((code.to_string(), n));
        }
        by_group
    }

    fn report_clicks(self: &Arc<Self>) {
        for (g, counts) in self.take_clicks() {
            let me = self.clone();
            self.rt.spawn(async move {
                if let Err(e) = me.propose(g, Command::Clicks { counts: counts.clone() }).await {
                    tracing::debug!(group = g, error = %e, "click report not committed; kept for the next round");
                    let mut clicks = me.clicks.lock();
                    for (code, n) in counts {
                        *clicks.entry(code.into()).or_default() += n;
                    }
                }
            });
        }
    }

    // ---- state for the API ----

    /// True while this node is a placement voter of some group whose
    /// membership does not have it as a voter yet, or has no leader.
    pub fn joining(&self) -> bool {
        let placement = self.placement();
        if self.machine.meta.read().members.get(self.me()).is_none_or(|m| m.raft_id != self.raft_id) {
            return true;
        }
        (0..=self.meta_group()).any(|g| {
            placement.voter_names(g).contains(&self.me()) && {
                let m = self.metrics(g);
                m.current_leader.is_none() || !m.membership_config.membership().voter_ids().any(|id| id == self.raft_id)
            }
        })
    }

    /// True while a group this node leads is not yet as placed, or one of
    /// its voters is catching up; or while this node is joining.
    pub fn rebalancing(&self) -> bool {
        if self.joining() {
            return true;
        }
        let meta = self.machine.meta.read().clone();
        let placement = self.placement();
        (0..=self.meta_group()).any(|g| {
            let m = self.metrics(g);
            if m.current_leader != Some(self.raft_id) {
                return false;
            }
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let lagging = m
                .replication
                .as_ref()
                .is_some_and(|r| r.iter().any(|(id, matched)| voters.contains(id) && matched.map_or(0, |l| l.index) < applied));
            voters != placement.voters(&meta, g) || lagging
        })
    }

    /// `GET /api/v1/cluster`.
    pub fn view(&self) -> serde_json::Value {
        let meta = self.machine.meta.read().clone();
        let heard = self.heard.lock().clone();
        let joining = self.joining();
        let members: Vec<serde_json::Value> = meta
            .members
            .iter()
            .map(|(name, m)| {
                let state = if name == self.me() {
                    if joining {
                        "joining"
                    } else {
                        "up"
                    }
                } else if heard.get(name).is_some_and(|t| t.elapsed() < DOWN_AFTER) {
                    "up"
                } else {
                    "down"
                };
                serde_json::json!({"id": name, "addr": m.addr, "state": state, "raft_id": m.raft_id.to_string()})
            })
            .collect();
        let mut leading = 0;
        let groups: Vec<serde_json::Value> = (0..=self.meta_group())
            .map(|g| {
                let m = self.metrics(g);
                if m.state == ServerState::Leader {
                    leading += 1;
                }
                let name = |id: NodeId| meta.name_of(id).map(String::from).unwrap_or_else(|| id.to_string());
                let config = m.membership_config.membership();
                serde_json::json!({
                    "group": if g == self.meta_group() { "metadata".to_string() } else { g.to_string() },
                    "leader": m.current_leader.map(name),
                    "voters": config.voter_ids().map(name).collect::<Vec<_>>(),
                    "learners": config.learner_ids().map(name).collect::<Vec<_>>(),
                    "applied": m.last_applied.map_or(0, |l| l.index),
                })
            })
            .collect();
        serde_json::json!({
            "node_id": self.me(),
            "members": members,
            "rebalancing": self.rebalancing(),
            "partitions": self.cfg.partitions,
            "replication_factor": self.cfg.replication_factor,
            "leading": leading,
            "groups": groups,
        })
    }

    /// Why this node cannot take writes, if its Raft log refuses them.
    pub fn poisoned(&self) -> Option<String> {
        self.log.poisoned()
    }
}
