//! Raft messages between nodes: HTTP/1.1 on each node's `--listen` port,
//! under `/internal/v1/raft/`, with the cluster key, over the pooled client
//! of `peer.rs`. One client per (group, target); the group travels in the
//! query string, the message as openraft's own JSON; a snapshot as its
//! files (`snapshot.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use openraft::error::{Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, Snapshot, Vote};
use serde::de::DeserializeOwned;

use super::command::NodeId;
use super::peer::{PeerError, Peers};
use super::raft::TypeConfig;

/// Longest a replica may take to check and take in a snapshot whose files
/// it has.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one chunk of a snapshot file may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Network {
    pub peers: Arc<Peers>,
    pub group: u32,
}

pub struct Client {
    peers: Arc<Peers>,
    group: u32,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Client {
        Client { peers: self.peers.clone(), group: self.group, target, addr: node.addr.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

/// What went wrong between here and the peer, before any answer.
enum Trouble {
    Unreachable(String),
    /// The peer answered, but not with a message (an HTTP error).
    Refused(String),
}

impl Client {
    async fn call<Req: serde::Serialize, Resp: DeserializeOwned>(
        &self,
        what: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Trouble> {
        let body = Bytes::from(serde_json::to_vec(req).map_err(|e| Trouble::Refused(e.to_string()))?);
        self.send_to(what, "", body, timeout).await
    }

    /// Sends to `/internal/v1/raft/{what}?group=N{query}`.
    async fn send_to<Resp: DeserializeOwned>(
        &self,
        what: &'static str,
        query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Resp, Trouble> {
        let path = format!("/internal/v1/raft/{what}?group={}{query}", self.group);
        match self.peers.send(what, &self.addr, Method::POST, &path, Some(body), timeout).await {
            Ok((status, bytes)) if status.is_success() => serde_json::from_slice(&bytes).map_err(|e| Trouble::Refused(e.to_string())),
            Ok((status, bytes)) => Err(Trouble::Refused(format!("{status}: {}", String::from_utf8_lossy(&bytes)))),
            Err(PeerError::Unreachable(_, e)) => Err(Trouble::Unreachable(e)),
        }
    }

    fn rpc_error<E: std::error::Error>(&self, t: Trouble) -> RPCError<NodeId, BasicNode, E> {
        match t {
            Trouble::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&Failed(e))),
            Trouble::Refused(e) => RPCError::Network(NetworkError::new(&Failed(e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            self.call("append", &req, option.hard_ttl()).await.map_err(|t| self.rpc_error(t))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            self.call("vote", &req, option.hard_ttl()).await.map_err(|t| self.rpc_error(t))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let failed = |e: String| {
            tracing::warn!(group = self.group, error = %e, "a snapshot was not sent");
            StreamingError::Network(NetworkError::new(&Failed(e)))
        };
        let data = snapshot.snapshot;
        let read = data.image.clone();
        let image = tokio::task::spawn_blocking(move || read.bytes())
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        let mut sent = Vec::new();
        if let Some(dir) = data.files.clone() {
            let id = snapshot.meta.snapshot_id.clone();
            let names = super::snapshot::file_names(&dir).map_err(|e| failed(e.to_string()))?;
            for name in names {
                let (mut offset, mut hasher) = (0u64, xxhash_rust::xxh3::Xxh3::new());
                loop {
                    let (d, n) = (dir.clone(), name.clone());
                    let chunk = tokio::task::spawn_blocking(move || super::snapshot::read_chunk(&d, &n, offset))
                        .await
                        .map_err(|e| failed(e.to_string()))?
                        .map_err(|e| failed(format!("{}: {e}", dir.join(&name).display())))?;
                    hasher.update(&chunk);
                    let len = chunk.len();
                    let query = format!("&id={id}&name={name}&offset={offset}");
                    match self.send_to::<()>("chunk", &query, Bytes::from(chunk), CHUNK_TIMEOUT).await {
                        Ok(()) => {}
                        Err(Trouble::Unreachable(e)) => return Err(StreamingError::Unreachable(Unreachable::new(&Failed(e)))),
                        Err(Trouble::Refused(e)) => return Err(failed(e)),
                    }
                    offset += len as u64;
                    if len < super::snapshot::CHUNK {
                        break;
                    }
                }
                sent.push((name, offset, hasher.digest()));
            }
        }
        let body = super::snapshot::message(vote, snapshot.meta, &image, sent).map_err(|e| failed(e.to_string()))?;
        let answer: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            match self.send_to("snapshot", "", body.into(), SNAPSHOT_TIMEOUT).await {
                Ok(a) => a,
                Err(Trouble::Unreachable(e)) => return Err(StreamingError::Unreachable(Unreachable::new(&Failed(e)))),
                Err(Trouble::Refused(e)) => return Err(StreamingError::Network(NetworkError::new(&Failed(e)))),
            };
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
