//! Membership and failure detection through chitchat (Scuttlebutt gossip
//! with a phi-accrual failure detector, as run by Quickwit).
//!
//! Each node publishes a few keys: `addr` (where its HTTP listens), `state`
//! (`joining`, `up`, `leaving`) and `removed:{id}` markers for members an
//! operator removed through it. Everything else (who is alive, who is down)
//! comes from chitchat; this module turns its state into `Member`s.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;

use crate::config::ClusterConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Joining,
    Up,
    Down,
    Leaving,
}

impl State {
    fn parse(s: &str) -> State {
        match s {
            "up" => State::Up,
            "leaving" => State::Leaving,
            _ => State::Joining,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Joining => "joining",
            State::Up => "up",
            State::Down => "down",
            State::Leaving => "leaving",
        }
    }

    /// Worth sending requests to.
    pub fn reachable(self) -> bool {
        self != State::Down
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub id: String,
    pub addr: SocketAddr,
    pub state: State,
    #[serde(skip)]
    pub generation: u64,
}

pub struct Gossip {
    handle: ChitchatHandle,
    me: ChitchatId,
    /// When each member was first seen down, for `--dead-after`.
    down_since: parking_lot::Mutex<HashMap<String, Instant>>,
    dead_after: Duration,
}

impl Gossip {
    /// Binds UDP on `listen` (the HTTP port) and starts gossiping.
    pub async fn start(cfg: &ClusterConfig, listen: SocketAddr) -> Result<Gossip, String> {
        let generation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let me = ChitchatId::new(cfg.node_id.as_str(), generation, cfg.advertise);
        let cluster_id = format!("shortd-{:016x}", xxhash_rust::xxh3::xxh3_64(cfg.cluster_key.as_bytes()));
        let config = ChitchatConfig {
            chitchat_id: me.clone(),
            cluster_id,
            gossip_interval: cfg.gossip_interval,
            listen_addr: listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: cfg.gossip_interval * 2,
                dead_node_grace_period: Duration::from_secs(24 * 3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let kv = vec![("addr".to_string(), cfg.advertise.to_string()), ("state".to_string(), "joining".to_string())];
        let handle = spawn_chitchat(config, kv, &UdpTransport).await.map_err(|e| e.to_string())?;
        Ok(Gossip { handle, me, down_since: parking_lot::Mutex::new(HashMap::new()), dead_after: cfg.dead_after })
    }

    pub async fn set(&self, key: &str, value: &str) {
        self.handle.chitchat().lock().await.self_node_state().set(key, value);
    }

    /// Every member this node knows of, latest incarnation of each, minus
    /// those removed by an operator or down longer than `--dead-after`.
    pub async fn members(&self) -> Vec<Member> {
        let cc = self.handle.chitchat();
        let cc = cc.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = cc.live_nodes().collect();
        let mut latest: BTreeMap<&str, Member> = BTreeMap::new();
        let mut removed: HashMap<String, u64> = HashMap::new();
        for (id, node) in cc.node_states() {
            for (k, v) in node.key_values() {
                if let (Some(who), Ok(generation)) = (k.strip_prefix("removed:"), v.parse::<u64>()) {
                    let g = removed.entry(who.to_string()).or_default();
                    *g = (*g).max(generation);
                }
            }
            let Some(addr) = node.get("addr").and_then(|a| a.parse().ok()) else { continue };
            let state =
                if *id == self.me || live.contains(id) { State::parse(node.get("state").unwrap_or("joining")) } else { State::Down };
            let m = Member { id: id.node_id.to_string(), addr, state, generation: id.generation_id };
            match latest.get(&*id.node_id) {
                Some(old) if old.generation > id.generation_id => {}
                _ => {
                    latest.insert(&id.node_id, m);
                }
            }
        }
        drop(live);
        let mut down_since = self.down_since.lock();
        let now = Instant::now();
        let members: Vec<Member> = latest
            .into_values()
            .filter(|m| removed.get(&m.id).is_none_or(|&g| m.generation > g))
            .filter(|m| {
                if m.state != State::Down {
                    down_since.remove(&m.id);
                    return true;
                }
                now.duration_since(*down_since.entry(m.id.clone()).or_insert(now)) < self.dead_after
            })
            .collect();
        members
    }

    /// Marks `id` removed (up to its current incarnation) for every node.
    pub async fn remove(&self, id: &str, generation: u64) {
        self.set(&format!("removed:{id}"), &generation.to_string()).await;
    }

    pub fn me(&self) -> &str {
        &self.me.node_id
    }

    pub fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}
