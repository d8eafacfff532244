//! shortd: a URL shortener built as a key-value redirect server.
//!
//! How a request flows:
//! - `http::server` accepts on one `SO_REUSEPORT` listener per worker thread
//!   and runs hyper's HTTP/1.1 connection loop; `http::router` maps the path.
//! - `GET /{code}` goes to `http::redirect`: `cache` (sharded, TTL with
//!   jitter, coalesced loads) -> on a miss `store` (in-memory index over the
//!   memory-mapped `journal`) -> a 30x with a prebuilt `Location`. Each
//!   click lands in the worker's buffer in `clicks` and reaches the store
//!   through one aggregator thread, which also feeds `hot` (heavy hitters).
//! - `/api/v1/...` goes to `http::api`, which validates input (`input` for
//!   the fields, `code` for aliases, `target` for URLs) and sends changes to
//!   the store's single writer thread (`store::writer`: the link rules,
//!   snapshots, compaction), which appends through `journal::log` (group
//!   commit). `journal` is bytes only; `store` owns what records mean.
//! - `analytics` turns each redirect's agent, referrer and address into
//!   hourly rollups per link (bots apart), read by `/api/v1/.../stats`.
//! - `metrics` names every metric and renders `/metrics`; `config` holds
//!   every setting; `cli` has the offline commands (export, import, check).
//! - `links` is the seam the handlers call: this node's store and cache,
//!   or the cluster.
//! - `ui` is the web UI at `/ui/`: static files embedded in the binary,
//!   talking to the API from the browser.
//! - `cluster` spreads links over several nodes: partitions that are Raft
//!   groups (openraft) over a journal of their own, placed by a
//!   consistent-hash ring, with a metadata group for members and id leases.

pub mod analytics;
pub mod cache;
pub mod cli;
pub mod clicks;
pub mod clock;
pub mod cluster;
pub mod code;
pub mod config;
pub mod hash;
pub mod hot;
pub mod http;
pub mod import;
pub mod input;
pub mod journal;
pub mod links;
pub mod lists;
pub mod metrics;
pub mod store;
pub mod target;
pub mod ui;

pub use config::{Cli, Command, Config};
pub use http::server::Server;
