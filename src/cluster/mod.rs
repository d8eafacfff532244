//! Several shortd nodes sharing the links: membership (`gossip`), placement
//! (`ring`), node-to-node requests (`peer`), and here the rules that tie them
//! together. `docs/cluster.md` describes the behaviour; in short:
//!
//! - Writes go to a code's first reachable holder (the coordinator), which
//!   appends and replicates to the other holders before answering. A holder
//!   that cannot be reached gets the write later: the coordinator leaves it
//!   with the next node on the ring with a hint (or keeps the hint itself),
//!   and hints are handed over when the holder is back.
//! - Reads of codes held elsewhere fetch from the first reachable holder,
//!   one fetch per code at a time, and go into the local cache.
//! - A node joining, or coming back, pulls every record it should hold from
//!   its peers before it calls itself `up`; when the ring changes, each
//!   node pulls what it newly holds. Versions (time, origin node) decide
//!   between copies: the last writer wins.
//! - Clicks are counted where served and pushed to the holders as deltas.
//!
//! All peer traffic runs on this module's own small runtime, so a slow peer
//! never occupies a worker thread.

pub mod gossip;
pub mod ids;
pub mod peer;
pub mod ring;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use http::{Method, StatusCode};
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

use self::gossip::{Gossip, Member, State};
use self::ids::Ids;
use self::peer::Peers;
use self::ring::Ring;
use self::wire::{ClickPush, SyncPage, SyncRequest, WireRecord};
use crate::cache::{Cache, Entry};
use crate::clock;
use crate::code::CodeKey;
use crate::config::ClusterConfig;
use crate::store::{ApplyMode, Created, Link, NewLink, Patch, Store, Stored, Version, WriteError, ALIAS_ID, IDEMPOTENCY_WINDOW_MS};

const CLICK_PUSH_EVERY: Duration = Duration::from_millis(200);
/// Codes per click push: at most about 90 bytes of JSON each, so a push
/// stays under 1 MiB.
const CLICKS_PER_PUSH: usize = 8_000;
const HINT_EVERY: Duration = Duration::from_secs(1);
const SYNC_PAGE: usize = 1000;
/// Records a sync page looks at before it returns (maybe empty) with a cursor.
const SYNC_SCAN: usize = 100_000;
/// How long a seeded node waits to hear from its seeds before it starts alone.
const SEED_WAIT: Duration = Duration::from_secs(15);

/// What this node knows of the cluster at one moment.
pub struct View {
    pub members: Vec<Member>,
    pub ring: Ring,
}

impl View {
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A fetch's outcome: the record, `None` if no holder has it, `Err` if no
/// holder answered.
type Fetched = Result<Option<Stored>, ()>;

/// A shared fetch's outcome with the cache generation read before it
/// started: whoever caches the result must insert with that generation, so
/// that an invalidation during the fetch is not undone by it.
pub type SharedFetch = (Fetched, u64);

pub struct Cluster {
    pub cfg: ClusterConfig,
    /// This node's id hashed, written into every change's version.
    pub origin: u32,
    rt: Handle,
    gossip: Gossip,
    peers: Peers,
    view: RwLock<Arc<View>>,
    ids: Ids,
    key: CodeKey,
    store: Arc<Store>,
    cache: Arc<Cache>,
    state: Mutex<State>,
    syncing: AtomicBool,
    resync: Notify,
    /// Peer id -> codes whose newest record it has not received yet.
    hints: Mutex<HashMap<String, HashSet<CompactString>>>,
    /// Peer id -> click deltas to push to it.
    clicks: Mutex<HashMap<String, HashMap<CompactString, u64>>>,
    /// Codes being fetched from a peer, with everyone waiting for them.
    fetches: Mutex<HashMap<CompactString, Vec<oneshot::Sender<SharedFetch>>>>,
    /// Peers seen down and now reachable again, to pull from once.
    reconnected: Mutex<HashSet<String>>,
    /// Idempotency-Key -> (code, body hash, time), kept per node in memory.
    idem: Mutex<HashMap<String, (CompactString, u64, i64)>>,
}

pub fn origin_of(node_id: &str) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()) as u32).max(1)
}

fn status_error(status: StatusCode, body: &[u8]) -> WriteError {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(String::from))
        .unwrap_or_else(|| format!("a peer answered {status}"));
    match status {
        StatusCode::CONFLICT => WriteError::Taken,
        StatusCode::NOT_FOUND => WriteError::NotFound,
        StatusCode::GONE => WriteError::Gone,
        StatusCode::UNPROCESSABLE_ENTITY => WriteError::IdempotencyMismatch,
        StatusCode::INSUFFICIENT_STORAGE => WriteError::DiskFull(detail),
        _ => WriteError::Unavailable(detail),
    }
}

fn mode_name(mode: ApplyMode) -> &'static str {
    match mode {
        ApplyMode::Create => "create",
        ApplyMode::Newer => "newer",
    }
}

pub fn parse_mode(s: &str) -> Option<ApplyMode> {
    match s {
        "create" => Some(ApplyMode::Create),
        "newer" => Some(ApplyMode::Newer),
        _ => None,
    }
}

impl Cluster {
    /// Starts gossip on `listen` (the bound HTTP address, UDP on the same
    /// port). Codes are permuted with a key derived from the cluster key.
    pub fn start(
        cfg: ClusterConfig,
        listen: SocketAddr,
        data_dir: &std::path::Path,
        store: Arc<Store>,
        cache: Arc<Cache>,
    ) -> Result<Arc<Cluster>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shortd-cluster")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cluster runtime: {e}"))?;
        // Lives as long as the process: tasks on it hold the cluster, and a
        // runtime may not be dropped from one of its own threads.
        let rt = Box::leak(Box::new(runtime)).handle().clone();
        let gossip = rt.block_on(Gossip::start(&cfg, listen)).map_err(|e| format!("cannot start gossip on udp {listen}: {e}"))?;
        let ids = Ids::open(data_dir, &cfg.node_id).map_err(|e| format!("cluster id counter in {}: {e}", data_dir.display()))?;
        let key = ids::shared_key(&cfg.cluster_key);
        let me = Member { id: cfg.node_id.clone(), addr: cfg.advertise, state: State::Joining, generation: 0 };
        let view = View { ring: Ring::new(&[cfg.node_id.as_str()], cfg.vnodes), members: vec![me] };
        Ok(Arc::new(Cluster {
            origin: origin_of(&cfg.node_id),
            peers: Peers::new(&cfg.cluster_key, cfg.peer_timeout),
            rt,
            gossip,
            view: RwLock::new(Arc::new(view)),
            ids,
            key,
            store,
            cache,
            state: Mutex::new(State::Joining),
            syncing: AtomicBool::new(false),
            resync: Notify::new(),
            hints: Mutex::new(HashMap::new()),
            clicks: Mutex::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
            reconnected: Mutex::new(HashSet::new()),
            idem: Mutex::new(HashMap::new()),
            cfg,
        }))
    }

    /// Starts the background work: membership, joining and rebalancing,
    /// hint handoff and click pushes.
    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        self.rt.spawn(async move { me.watch_members().await });
        let me = self.clone();
        self.rt.spawn(async move { me.keep_in_sync().await });
        let me = self.clone();
        self.rt.spawn(async move { me.hand_over_hints().await });
        let me = self.clone();
        self.rt.spawn(async move { me.push_clicks().await });
    }

    /// Tells peers this node is leaving, then stops gossip.
    pub fn leave(&self) {
        *self.state.lock() = State::Leaving;
        self.rt.block_on(async {
            self.gossip.set("state", "leaving").await;
            tokio::time::sleep(self.cfg.gossip_interval * 2).await;
        });
        self.gossip.shutdown();
    }

    pub fn me(&self) -> &str {
        &self.cfg.node_id
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    pub fn state(&self) -> State {
        *self.state.lock()
    }

    /// Moving records: this node is pulling, or a member is still joining.
    pub fn rebalancing(&self) -> bool {
        self.syncing.load(Ordering::Relaxed) || self.view().members.iter().any(|m| m.state == State::Joining)
    }

    /// Whether this node's store answers for `code`: it holds the code
    /// and has caught up (is not joining).
    pub fn authoritative(&self, code: &str) -> bool {
        self.state() != State::Joining && self.view().ring.holds(self.me(), code, self.cfg.replication_factor)
    }

    /// Runs `f` on the cluster runtime, where peer connections live.
    async fn on_rt<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, WriteError>
    where
        F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, WriteError>> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        self.rt.spawn(async move { f(me).await }).await.map_err(|e| WriteError::Unavailable(format!("cluster task failed: {e}")))?
    }

    // ---- reads ----

    /// The newest record of `code` from the first holder that has it.
    async fn fetch(&self, code: &str) -> Fetched {
        let view = self.view();
        let mut answered = false;
        for h in self.in_order(&view, code) {
            if h == self.me() {
                if let Some(s) = self.store.stored(code) {
                    return Ok(Some(s));
                }
                answered |= self.state() == State::Up;
                continue;
            }
            let Some(m) = view.member(h).filter(|m| m.state.reachable()) else { continue };
            match self.ask(m, code).await {
                Some(Some(s)) => return Ok(Some(s)),
                Some(None) => answered = true,
                None => {}
            }
        }
        if answered {
            return Ok(None);
        }
        // No holder answered: a copy kept here (as a former holder, or with
        // a hint) is better than nothing.
        match self.store.stored(code) {
            Some(s) => Ok(Some(s)),
            None => Err(()),
        }
    }

    /// One peer's record of a code: `Some(None)` if it has none, `None` if
    /// it did not answer (or answered something unreadable).
    async fn ask(&self, m: &Member, code: &str) -> Option<Option<Stored>> {
        let path = format!("/internal/v1/records/{code}");
        match self.peers.send("read", m, Method::GET, &path, None, self.cfg.peer_timeout).await {
            Ok((StatusCode::OK, body)) => serde_json::from_slice::<WireRecord>(&body).ok().and_then(WireRecord::into_stored).map(Some),
            Ok((StatusCode::NOT_FOUND, _)) => Some(None),
            _ => None,
        }
    }

    /// A code's holders, those that are `up` first: a joining member may
    /// not have pulled its share yet, so it is asked (or made coordinator)
    /// only when no caught-up holder is reachable.
    fn in_order<'v>(&self, view: &'v View, code: &str) -> Vec<&'v str> {
        let holders = view.ring.holders(code, self.cfg.replication_factor);
        let up =
            |h: &&str| if *h == self.me() { self.state() != State::Joining } else { view.member(h).is_some_and(|m| m.state == State::Up) };
        let (mut first, rest): (Vec<&str>, Vec<&str>) = holders.into_iter().partition(up);
        first.extend(rest);
        first
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

    /// Re-fetches a cached code held elsewhere, in the background: a viral
    /// link costs its holder one fetch per cache TTL per node.
    pub fn refresh(self: &Arc<Self>, code: &str) {
        let (me, code) = (self.clone(), CompactString::from(code));
        self.rt.spawn(async move {
            let stale = me.cache.peek(&code);
            if let (Ok(found), generation) = me.fetch_shared(&code).await {
                let found = found.map_or(crate::store::Lookup::Missing, Stored::into_lookup);
                me.cache.insert(&code, Entry::from_lookup(found), generation, clock::now_ms());
            }
            // Not replaced (no holder answered, or an invalidation raced):
            // the next request tries again rather than trusting it forever.
            if let Some(stale) = stale {
                if me.cache.peek(&code).is_some_and(|now| Arc::ptr_eq(&now, &stale)) {
                    stale.retry_refresh();
                }
            }
        });
    }

    /// A link for the API: from this node's store when it answers for the
    /// code, else from a holder.
    pub async fn read(self: &Arc<Self>, code: &str) -> Result<Option<Stored>, WriteError> {
        if self.authoritative(code) {
            return Ok(self.store.stored(code));
        }
        let code = CompactString::from(code);
        self.on_rt(move |me| async move {
            me.fetch(&code).await.map_err(|()| WriteError::Unavailable("no node that holds this link answered".into()))
        })
        .await
    }

    // ---- writes ----

    pub async fn create(self: &Arc<Self>, new: NewLink) -> Result<Created, WriteError> {
        if let Some((key, hash)) = &new.idempotency {
            let earlier = self.idem.lock().get(key).cloned();
            if let Some((code, earlier_hash, _)) = earlier.filter(|e| e.2 + IDEMPOTENCY_WINDOW_MS > clock::now_ms()) {
                if earlier_hash != *hash {
                    return Err(WriteError::IdempotencyMismatch);
                }
                return match self.read(&code).await? {
                    Some(Stored { link: Some(link), .. }) => Ok(Created { link, replayed: true }),
                    Some(_) => Err(WriteError::Gone),
                    None => Err(WriteError::NotFound),
                };
            }
        }
        let idem = new.idempotency.clone();
        let created = self.on_rt(move |me| async move { me.create_here(new).await }).await?;
        if let Some((key, hash)) = idem {
            let mut m = self.idem.lock();
            let cutoff = clock::now_ms() - IDEMPOTENCY_WINDOW_MS;
            m.retain(|_, e| e.2 > cutoff);
            m.insert(key, (created.link.code.clone(), hash, clock::now_ms()));
        }
        Ok(created)
    }

    async fn create_here(&self, new: NewLink) -> Result<Created, WriteError> {
        for _ in 0..64 {
            let (code, id) = match &new.alias {
                Some(alias) => (CompactString::from(alias.as_str()), ALIAS_ID),
                None => {
                    let id =
                        self.ids.next().map_err(|e| WriteError::Unavailable(format!("id counter: {e}")))?.ok_or(WriteError::Exhausted)?;
                    let Some(code) = self.key.encode(id) else { return Err(WriteError::Exhausted) };
                    let code = CompactString::from_utf8_lossy(&code);
                    if crate::code::validate_alias(&code).is_err() {
                        continue;
                    }
                    (code, id)
                }
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
            let stored = Stored { code, link: Some(link.clone()), version: Version { ms: now, origin: self.origin } };
            match self.write(stored, ApplyMode::Create).await {
                Ok(()) => return Ok(Created { link, replayed: false }),
                Err(WriteError::Taken) if new.alias.is_none() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(WriteError::Unavailable("no free code found; retry".into()))
    }

    /// Sends a change to its coordinator: the first reachable holder, or
    /// this node when none answers.
    async fn write(&self, stored: Stored, mode: ApplyMode) -> Result<(), WriteError> {
        let view = self.view();
        let body = Bytes::from(serde_json::to_vec(&WireRecord::from(&stored)).unwrap_or_default());
        for h in self.in_order(&view, &stored.code) {
            if h == self.me() {
                return self.coordinate(stored, mode).await;
            }
            let Some(m) = view.member(h).filter(|m| m.state.reachable()) else { continue };
            if !self.peers.available(h) {
                continue;
            }
            let path = format!("/internal/v1/records/{}?mode={}&coordinate=1", stored.code, mode_name(mode));
            match self.peers.send("write", m, Method::PUT, &path, Some(body.clone()), self.write_timeout()).await {
                Ok((s, _)) if s.is_success() => return Ok(()),
                Ok((s, b)) => return Err(status_error(s, &b)),
                Err(_) => continue,
            }
        }
        self.coordinate(stored, mode).await
    }

    /// A forwarded write waits one peer timeout: the coordinator's own
    /// replication round fits inside it (`attempt_timeout`).
    fn write_timeout(&self) -> Duration {
        self.cfg.peer_timeout
    }

    /// Per replica attempt: the whole round (every other holder, plus one
    /// fallback node each at half this) stays within 3/4 of a peer timeout.
    fn attempt_timeout(&self) -> Duration {
        self.cfg.peer_timeout / (2 * self.cfg.replication_factor.saturating_sub(1).max(1) as u32)
    }

    /// Applies a change here and replicates it to the other holders.
    pub async fn coordinate(&self, stored: Stored, mode: ApplyMode) -> Result<(), WriteError> {
        if !self.authoritative(&stored.code) {
            // Not caught up on this code: a claim checked against this
            // store alone could overwrite a link it has not pulled yet.
            self.catch_up_on(&stored.code).await;
        }
        self.store.apply(stored.clone(), mode).await?;
        self.cache.invalidate(&stored.code);
        self.replicate(&stored).await;
        Ok(())
    }

    pub async fn coordinate_on_rt(self: &Arc<Self>, stored: Stored, mode: ApplyMode) -> Result<(), WriteError> {
        self.on_rt(move |me| async move { me.coordinate(stored, mode).await }).await
    }

    /// Sends a record to every other holder; one that cannot take it gets
    /// it later through a hint.
    async fn replicate(&self, stored: &Stored) {
        let view = self.view();
        let walk = view.ring.walk(&stored.code);
        let r = self.cfg.replication_factor.min(walk.len());
        let (holders, spare) = walk.split_at(r);
        let i_hold = holders.contains(&self.me());
        let body = Bytes::from(serde_json::to_vec(&WireRecord::from(stored)).unwrap_or_default());
        for &h in holders.iter().filter(|&&h| h != self.me()) {
            if self.put_to(&view, h, &stored.code, &body, None, self.attempt_timeout()).await {
                continue;
            }
            // The next reachable node past the holders keeps it with a hint.
            let mut handed = false;
            if i_hold {
                let next = spare
                    .iter()
                    .find(|&&s| s != self.me() && self.peers.available(s) && view.member(s).is_some_and(|m| m.state.reachable()));
                if let Some(&s) = next {
                    handed = self.put_to(&view, s, &stored.code, &body, Some(h), self.attempt_timeout() / 2).await;
                }
            }
            if !handed {
                self.add_hint(h, &stored.code);
            }
        }
    }

    async fn put_to(&self, view: &View, node: &str, code: &str, body: &Bytes, hint: Option<&str>, timeout: Duration) -> bool {
        let Some(m) = view.member(node).filter(|m| m.state.reachable()) else { return false };
        if !self.peers.available(node) {
            return false;
        }
        let path = match hint {
            Some(h) => format!("/internal/v1/records/{code}?mode=newer&hint={h}"),
            None => format!("/internal/v1/records/{code}?mode=newer"),
        };
        matches!(self.peers.send("replicate", m, Method::PUT, &path, Some(body.clone()), timeout).await, Ok((s, _)) if s.is_success())
    }

    pub fn add_hint(&self, node: &str, code: &str) {
        let mut h = self.hints.lock();
        h.entry(node.to_string()).or_default().insert(code.into());
        crate::metrics::hints_pending(h.values().map(HashSet::len).sum());
    }

    /// PATCH through the coordinator; `body` is the client's JSON, which the
    /// coordinator validates again.
    pub async fn update(self: &Arc<Self>, code: &str, patch: Patch, body: Bytes) -> Result<Link, WriteError> {
        let code = CompactString::from(code);
        self.on_rt(move |me| async move {
            match me.forward(&code, Method::PATCH, Some(body)).await {
                Some(Ok(answer)) => serde_json::from_slice::<WireRecord>(&answer)
                    .ok()
                    .and_then(WireRecord::into_stored)
                    .and_then(|s| s.link)
                    .ok_or_else(|| WriteError::Unavailable("a peer sent an unreadable link".into())),
                Some(Err(e)) => Err(e),
                None => me.update_here(&code, patch).await,
            }
        })
        .await
    }

    pub async fn delete(self: &Arc<Self>, code: &str) -> Result<(), WriteError> {
        let code = CompactString::from(code);
        self.on_rt(move |me| async move {
            match me.forward(&code, Method::DELETE, None).await {
                Some(r) => r.map(drop),
                None => me.delete_here(&code).await,
            }
        })
        .await
    }

    /// Sends a client's change to the first reachable holder unless that is
    /// this node (`None`: do it here).
    async fn forward(&self, code: &str, method: Method, body: Option<Bytes>) -> Option<Result<Bytes, WriteError>> {
        let view = self.view();
        for h in self.in_order(&view, code) {
            if h == self.me() {
                return None;
            }
            let Some(m) = view.member(h).filter(|m| m.state.reachable()) else { continue };
            if !self.peers.available(h) {
                continue;
            }
            let path = format!("/internal/v1/links/{code}");
            match self.peers.send("write", m, method.clone(), &path, body.clone(), self.write_timeout()).await {
                Ok((s, b)) if s.is_success() => return Some(Ok(b)),
                Ok((s, b)) => return Some(Err(status_error(s, &b))),
                Err(_) => continue,
            }
        }
        None
    }

    /// Brings a record here first when this node lacks it (it may be
    /// catching up, or standing in for unreachable holders).
    async fn catch_up_on(&self, code: &str) {
        if self.store.stored(code).is_none() || !self.authoritative(code) {
            if let Some(s) = self.fetch_from_others(code).await {
                let _ = self.store.apply(s, ApplyMode::Newer).await;
            }
        }
    }

    /// `fetch` that skips this node's own copy.
    async fn fetch_from_others(&self, code: &str) -> Option<Stored> {
        let view = self.view();
        for h in self.in_order(&view, code).into_iter().filter(|h| *h != self.me()) {
            let Some(m) = view.member(h).filter(|m| m.state.reachable()) else { continue };
            if let Some(Some(s)) = self.ask(m, code).await {
                return Some(s);
            }
        }
        None
    }

    pub async fn update_here(self: &Arc<Self>, code: &str, patch: Patch) -> Result<Link, WriteError> {
        self.catch_up_on(code).await;
        let link = self.store.update(code, patch).await?;
        self.cache.invalidate(code);
        if let Some(s) = self.store.stored(code) {
            self.replicate(&s).await;
        }
        self.invalidate_elsewhere(code);
        Ok(link)
    }

    pub async fn delete_here(self: &Arc<Self>, code: &str) -> Result<(), WriteError> {
        self.catch_up_on(code).await;
        self.store.delete(code).await?;
        self.cache.invalidate(code);
        if let Some(s) = self.store.stored(code) {
            self.replicate(&s).await;
        }
        self.invalidate_elsewhere(code);
        Ok(())
    }

    pub async fn update_here_on_rt(self: &Arc<Self>, code: &str, patch: Patch) -> Result<Link, WriteError> {
        let code = CompactString::from(code);
        self.on_rt(move |me| async move { me.update_here(&code, patch).await }).await
    }

    pub async fn delete_here_on_rt(self: &Arc<Self>, code: &str) -> Result<(), WriteError> {
        let code = CompactString::from(code);
        self.on_rt(move |me| async move { me.delete_here(&code).await }).await
    }

    /// Drops the code from every other node's cache, so a change or delete
    /// shows everywhere at once rather than after the cache TTL.
    fn invalidate_elsewhere(self: &Arc<Self>, code: &str) {
        let view = self.view();
        for m in view.members.iter().filter(|m| m.id != self.me() && m.state.reachable()) {
            let (me, m, path) = (self.clone(), m.clone(), format!("/internal/v1/invalidate/{code}"));
            self.rt.spawn(async move {
                let _ = me.peers.send("invalidate", &m, Method::POST, &path, None, me.cfg.peer_timeout).await;
            });
        }
    }

    // ---- clicks ----

    /// Queues served clicks for the code's other holders; true if this node
    /// holds the code and should count them in its own store too.
    pub fn on_clicks(&self, code: &str, n: u64) -> bool {
        let view = self.view();
        let mut local = false;
        let mut pending = self.clicks.lock();
        for h in view.ring.holders(code, self.cfg.replication_factor) {
            if h == self.me() {
                local = true;
            } else {
                *pending.entry(h.to_string()).or_default().entry(code.into()).or_default() += n;
            }
        }
        local
    }

    async fn push_clicks(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CLICK_PUSH_EVERY);
        loop {
            tick.tick().await;
            let batches = std::mem::take(&mut *self.clicks.lock());
            let view = self.view();
            for (node, counts) in batches {
                let Some(m) = view.member(&node).filter(|m| m.state.reachable()) else { continue };
                let counts: Vec<(CompactString, u64)> = counts.into_iter().collect();
                // Chunks stay well inside the peer's request body limit.
                for chunk in counts.chunks(CLICKS_PER_PUSH) {
                    let push = ClickPush { clicks: chunk.iter().map(|(c, n)| (c.to_string(), *n)).collect() };
                    let body = Bytes::from(serde_json::to_vec(&push).unwrap_or_default());
                    let sent = self.peers.send("clicks", m, Method::POST, "/internal/v1/clicks", Some(body), self.cfg.peer_timeout).await;
                    if !matches!(sent, Ok((s, _)) if s.is_success()) {
                        // Kept for the next round; dropped if the peer is down by then.
                        let mut pending = self.clicks.lock();
                        let p = pending.entry(node.clone()).or_default();
                        for (c, n) in chunk {
                            *p.entry(c.clone()).or_default() += n;
                        }
                    }
                }
            }
        }
    }

    // ---- membership, joining, rebalancing ----

    async fn watch_members(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.gossip_interval);
        loop {
            tick.tick().await;
            let mut members = self.gossip.members().await;
            let me = self.state();
            match members.iter_mut().find(|m| m.id == self.me()) {
                Some(m) => m.state = me,
                None => members.push(Member { id: self.cfg.node_id.clone(), addr: self.cfg.advertise, state: me, generation: 0 }),
            }
            let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
            let old = self.view();
            let changed = {
                let mut sorted = ids.clone();
                sorted.sort();
                sorted != old.ring.nodes()
            };
            let ring = if changed { Ring::new(&ids, self.cfg.vnodes) } else { old.ring.clone() };
            if changed {
                tracing::info!(members = ?ring.nodes(), "ring changed");
            }
            // A member back from down (partition, pause) may have taken
            // writes this node missed, and missed some of this node's.
            let back: Vec<String> = members
                .iter()
                .filter(|m| m.id != self.me() && m.state.reachable() && old.member(&m.id).is_some_and(|o| o.state == State::Down))
                .map(|m| m.id.clone())
                .collect();
            if !back.is_empty() {
                tracing::info!(members = ?back, "members reachable again");
                // Rebalancing until the pull from them is done.
                let mut pending = self.reconnected.lock();
                self.syncing.store(true, Ordering::Relaxed);
                pending.extend(back);
                drop(pending);
                self.resync.notify_one();
            }
            {
                // Under this lock, so that keep_in_sync cannot clear the flag
                // between the two.
                let _pending = self.reconnected.lock();
                if changed {
                    // Rebalancing from before anyone sees the new ring until
                    // the pull for it is done.
                    self.syncing.store(true, Ordering::Relaxed);
                }
                *self.view.write() = Arc::new(View { members, ring });
            }
            if changed {
                self.resync.notify_one();
            }
        }
    }

    async fn set_state(&self, state: State) {
        *self.state.lock() = state;
        self.gossip.set("state", state.name()).await;
        tracing::info!(state = state.name(), "cluster state");
    }

    /// Joins (pulls everything this node holds from its peers, then goes
    /// `up`), and after each ring change pulls what it newly holds.
    async fn keep_in_sync(self: Arc<Self>) {
        let started = Instant::now();
        // The ring as of the last complete pull; `None` until the first.
        let mut synced: Option<Vec<String>> = None;
        // Up without having pulled from anyone (no seed answered): the
        // first pull once peers appear takes everything this node holds.
        let mut alone = false;
        loop {
            let view = self.view();
            let peers: Vec<&Member> = view.members.iter().filter(|m| m.id != self.me() && m.state.reachable()).collect();
            if synced.is_none() && peers.is_empty() {
                if !self.cfg.seeds.is_empty() && started.elapsed() < SEED_WAIT {
                    tokio::time::sleep(self.cfg.gossip_interval).await;
                    continue;
                }
                synced = Some(view.ring.nodes().to_vec());
                alone = true;
                self.set_state(State::Up).await;
                continue;
            }
            if synced.as_deref() == Some(view.ring.nodes()) && (!alone || peers.is_empty()) {
                let back = std::mem::take(&mut *self.reconnected.lock());
                if !back.is_empty() {
                    // Everything this node holds, from those peers only.
                    let only: HashSet<String> = back.into_iter().collect();
                    if !self.pull(&view, None, Some(&only)).await.0 {
                        self.reconnected.lock().extend(only);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
                {
                    // Done, unless a ring change or a returning member came
                    // in meanwhile (they set the flag before they show).
                    let pending = self.reconnected.lock();
                    if pending.is_empty() && synced.as_deref() == Some(self.view().ring.nodes()) {
                        self.syncing.store(false, Ordering::Relaxed);
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), self.resync.notified()).await;
                continue;
            }
            if synced.is_none() {
                // Let gossip introduce the rest of the members first.
                tokio::time::sleep(self.cfg.gossip_interval * 5).await;
            }
            let view = self.view();
            self.syncing.store(true, Ordering::Relaxed);
            let previous = if alone { None } else { synced.as_deref() };
            let (done, contacted) = self.pull(&view, previous, None).await;
            if done {
                synced = Some(view.ring.nodes().to_vec());
                // Pulling from nobody (every peer down) is not catching up.
                alone &= contacted == 0;
                if self.state() == State::Joining {
                    self.set_state(State::Up).await;
                }
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Pulls from every reachable peer the records this node holds under
    /// `view`'s ring (only those it did not hold under `previous`).
    /// Returns whether every peer answered, and how many were asked.
    async fn pull(&self, view: &View, previous: Option<&[String]>, only: Option<&HashSet<String>>) -> (bool, usize) {
        let mut complete = true;
        let mut moved = 0u64;
        let from = |m: &&Member| m.id != self.me() && m.state.reachable() && only.is_none_or(|o| o.contains(&m.id));
        let peers: Vec<&Member> = view.members.iter().filter(from).collect();
        for &m in &peers {
            let mut cursor = None;
            loop {
                let req = SyncRequest {
                    node: self.cfg.node_id.clone(),
                    members: view.ring.nodes().to_vec(),
                    previous: previous.map(<[String]>::to_vec),
                    vnodes: self.cfg.vnodes,
                    replicas: self.cfg.replication_factor,
                    cursor: cursor.clone(),
                };
                let body = Bytes::from(serde_json::to_vec(&req).unwrap_or_default());
                let page = match self.peers.send("sync", m, Method::POST, "/internal/v1/sync", Some(body), self.cfg.peer_timeout * 20).await
                {
                    Ok((StatusCode::OK, b)) => serde_json::from_slice::<SyncPage>(&b).ok(),
                    _ => None,
                };
                let Some(page) = page else {
                    tracing::warn!(peer = %m.id, "could not pull records; will retry");
                    complete = false;
                    break;
                };
                for rec in page.records.into_iter().filter_map(WireRecord::into_stored) {
                    let code = rec.code.clone();
                    if let Ok(true) = self.store.apply(rec, ApplyMode::Newer).await {
                        moved += 1;
                        self.cache.invalidate(&code);
                    }
                }
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        crate::metrics::keys_moved(moved);
        if moved > 0 {
            tracing::info!(records = moved, "pulled records from peers");
        }
        (complete, peers.len())
    }

    /// Serves a peer's `pull`: one page of the records it should hold.
    pub fn sync_page(&self, req: &SyncRequest) -> SyncPage {
        let ring = Ring::new(&req.members, req.vnodes.clamp(1, 4096));
        let previous = req.previous.as_ref().map(|p| Ring::new(p, req.vnodes.clamp(1, 4096)));
        let r = req.replicas.clamp(1, 5);
        let cursor = req.cursor.as_deref().and_then(crate::store::Cursor::decode);
        let (records, next) = self.store.records(cursor, SYNC_PAGE, SYNC_SCAN, |code| {
            ring.holds(&req.node, code, r) && previous.as_ref().is_none_or(|p| !p.holds(&req.node, code, r))
        });
        SyncPage { records: records.iter().map(WireRecord::from).collect(), next: next.map(|c| c.encode()) }
    }

    /// Hands hinted records to their holders once they are reachable.
    async fn hand_over_hints(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HINT_EVERY);
        loop {
            tick.tick().await;
            let view = self.view();
            let targets: Vec<(String, Vec<CompactString>)> =
                self.hints.lock().iter().map(|(n, codes)| (n.clone(), codes.iter().cloned().collect())).collect();
            for (node, codes) in targets {
                if !view.member(&node).is_some_and(|m| m.state.reachable()) {
                    continue;
                }
                for code in codes {
                    // Taken off first: a newer hint for the same code made
                    // while this one is in flight puts it back.
                    if let Some(set) = self.hints.lock().get_mut(&node) {
                        set.remove(&code);
                    }
                    let delivered = match self.store.stored(&code) {
                        Some(s) => {
                            let body = Bytes::from(serde_json::to_vec(&WireRecord::from(&s)).unwrap_or_default());
                            self.put_to(&view, &node, &code, &body, None, self.cfg.peer_timeout).await
                        }
                        None => true,
                    };
                    if !delivered {
                        self.hints.lock().entry(node.clone()).or_default().insert(code);
                        break;
                    }
                }
            }
            let mut h = self.hints.lock();
            // Hints for a member that left the ring are moot: its share has
            // moved to the nodes that hold it now.
            h.retain(|node, codes| !codes.is_empty() && view.member(node).is_some());
            crate::metrics::hints_pending(h.values().map(HashSet::len).sum());
        }
    }

    /// Removes a member from the ring for every node (operator action).
    pub async fn remove_member(self: &Arc<Self>, id: &str) -> Result<(), String> {
        if id == self.me() {
            return Err("a node cannot remove itself; remove it through another node".into());
        }
        let view = self.view();
        let Some(m) = view.member(id) else { return Err(format!("no member {id}")) };
        let generation = m.generation;
        let me = self.clone();
        let id = id.to_string();
        self.rt.spawn(async move { me.gossip.remove(&id, generation).await }).await.map_err(|e| e.to_string())
    }
}
