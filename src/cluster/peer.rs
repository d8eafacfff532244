//! Requests to other nodes: a pooled HTTP/1.1 client, a timeout on every
//! request and a circuit breaker per peer.
//!
//! A peer that fails to answer (refused, reset, timed out) is skipped for
//! `COOLDOWN`; after that one request is let through to try it again. So a
//! dead or stopped peer costs one timeout per cooldown, not one per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

use crate::metrics;

/// Header that carries `--cluster-key` on every node-to-node request.
pub const KEY_HEADER: &str = "x-shortd-cluster-key";
const COOLDOWN: Duration = Duration::from_secs(1);
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
}

pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    key: Option<HeaderValue>,
    pub timeout: Duration,
    /// Peer address -> until when it is skipped.
    open_until: Mutex<HashMap<String, Instant>>,
    /// Peer address -> when it last answered.
    answered: Mutex<HashMap<String, Instant>>,
}

impl Peers {
    pub fn new(key: &str, timeout: Duration) -> Peers {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(http);
        Peers { client, key: HeaderValue::from_str(key).ok(), timeout, open_until: Mutex::default(), answered: Mutex::default() }
    }

    /// Whether requests to `peer` are let through now (closed breaker).
    pub fn available(&self, peer: &str) -> bool {
        self.open_until.lock().get(peer).is_none_or(|&t| Instant::now() >= t)
    }

    /// How long ago `peer` last answered, if it ever did.
    pub fn silent_for(&self, peer: &str) -> Option<Duration> {
        self.answered.lock().get(peer).map(|t| t.elapsed())
    }

    /// Sends one request and reads the whole answer. Any HTTP status is an
    /// answer; only transport failures and timeouts are errors, and they
    /// open the breaker.
    pub async fn send(
        &self,
        op: &'static str,
        peer: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let addr: SocketAddr = peer.parse().map_err(|_| PeerError::Unreachable(peer.into(), "not a HOST:PORT address".into()))?;
        {
            let mut open = self.open_until.lock();
            if let Some(&until) = open.get(peer) {
                let now = Instant::now();
                if now < until {
                    metrics::peer_request(op, Duration::ZERO, false);
                    return Err(PeerError::Unreachable(peer.into(), "circuit open after recent failures".into()));
                }
                // Half-open: this request tries; others keep skipping meanwhile.
                open.insert(peer.to_string(), now + COOLDOWN);
            }
        }
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.exchange(addr, method, path, body)).await;
        let outcome = match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        metrics::peer_request(op, started.elapsed(), outcome.is_ok());
        match outcome {
            Ok(answer) => {
                self.open_until.lock().remove(peer);
                self.answered.lock().insert(peer.to_string(), Instant::now());
                Ok(answer)
            }
            Err(e) => {
                tracing::debug!(peer, op, error = %e, "peer request failed");
                self.open_until.lock().insert(peer.to_string(), Instant::now() + COOLDOWN);
                Err(PeerError::Unreachable(peer.into(), e))
            }
        }
    }

    async fn exchange(&self, addr: SocketAddr, method: Method, path: &str, body: Option<Bytes>) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
        if let Some(k) = &self.key {
            req = req.header(KEY_HEADER, k.clone());
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default())).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, bytes))
    }
}
