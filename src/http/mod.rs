//! The HTTP edge: sockets and connections (`server`), routing (`router`),
//! the redirect hot path (`redirect`), the JSON API (`api`) and its errors
//! (`problem`).

pub mod access;
pub mod api;
pub mod problem;
pub mod redirect;
pub mod router;
pub mod server;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use crate::cache::Cache;
use crate::clicks::ClickBuffer;
use crate::config::Config;
use crate::hot::HotKeys;
use crate::metrics::{Metrics, WorkerStats};
use crate::store::Store;

/// Everything a request handler may use, shared by all workers.
pub struct App {
    pub cfg: Config,
    pub access: access::Access,
    pub store: Arc<Store>,
    pub cache: Cache,
    pub hot: Arc<HotKeys>,
    pub metrics: Arc<Metrics>,
    pub cache_control: HeaderValue,
    /// `public_url` with a trailing slash; a code appended makes `short_url`.
    pub public_base: String,
    /// The public host, which targets may not point at.
    pub own_host: Option<String>,
    shutting_down: AtomicBool,
}

impl App {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// What one worker thread owns: its counters and its click buffer.
pub struct Worker {
    pub stats: Arc<WorkerStats>,
    pub clicks: RefCell<ClickBuffer>,
}
