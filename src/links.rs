//! The one seam between the HTTP edge and where links live (groupcache's
//! `PeerPicker` idea): `Local` is this node's store and cache, `Clustered`
//! hands each call to the cluster, which decides which node answers. The
//! handlers in `http/` call these methods and never ask which one it is.
//!
//! The redirect hit path does not come here: it reads the cache first, and
//! only a miss (or a stale entry) asks `held_here`, `refresh` or
//! `fetch_shared`. The one exception is a click on a link with a click
//! limit in a cluster, which its partition decides (`claim_click`).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::cache::Cache;
use crate::cluster::{Cluster, SharedFetch};
use crate::store::{Created, Cursor, Link, Lookup, NewLink, Order, Patch, Store, Stored, WriteError};

/// Where a listing stopped: the partition (always 0 on a single node) and
/// the place in its store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListCursor {
    part: u32,
    at: Option<Cursor>,
}

impl ListCursor {
    /// A single node's cursors are the store's; a cluster's are prefixed
    /// with the partition.
    pub fn encode(&self, clustered: bool) -> String {
        let at = self.at.map(|c| c.encode()).unwrap_or_default();
        if clustered {
            format!("{:x}-{at}", self.part)
        } else {
            at
        }
    }

    pub fn decode(text: &str, clustered: bool) -> Option<ListCursor> {
        let (part, at) = match clustered {
            true => {
                let (p, at) = text.split_once('-')?;
                (u32::from_str_radix(p, 16).ok().filter(|_| !p.is_empty() && p.len() <= 8)?, at)
            }
            false => (0, text),
        };
        let at = match at {
            "" if clustered => None,
            at => Some(Cursor::decode(at)?),
        };
        Some(ListCursor { part, at })
    }
}

/// A create waiting for its answer (the batch API queues many at once).
pub type Queued = oneshot::Receiver<Result<Created, WriteError>>;

/// A store of the links: a single node's, or a partition's replica, held
/// while it is used (installing a snapshot swaps a replica).
pub enum StoreRef<'a> {
    Local(&'a Arc<Store>),
    Replica(Arc<Store>),
}

impl std::ops::Deref for StoreRef<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        match self {
            StoreRef::Local(s) => s,
            StoreRef::Replica(s) => s,
        }
    }
}

#[derive(Clone)]
pub enum Links {
    /// A single node: the store holds every link.
    Local { store: Arc<Store>, cache: Arc<Cache> },
    /// Several nodes share the links.
    Clustered(Arc<Cluster>),
}

impl Links {
    pub async fn create(&self, new: NewLink) -> Result<Created, WriteError> {
        match self {
            Links::Local { store, .. } => store.create(new).await,
            // Boxed: a cluster's create is a large future, and a local
            // create would otherwise carry its size on every request.
            Links::Clustered(c) => Box::pin(c.create(new)).await,
        }
    }

    /// Starts a create without waiting for it. A single node queues it to
    /// the writer (which commits a batch together); a cluster proposes each
    /// to its partition, one by one.
    pub async fn create_queued(&self, new: NewLink) -> Result<Queued, WriteError> {
        match self {
            Links::Local { store, .. } => store.create_queued(new),
            Links::Clustered(c) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(c.create(new).await);
                Ok(rx)
            }
        }
    }

    /// A link for the API.
    pub async fn get(&self, code: &str) -> Result<Lookup, WriteError> {
        match self {
            Links::Local { store, .. } => Ok(store.lookup(code)),
            Links::Clustered(c) => Ok(c.read(code).await?.map_or(Lookup::Missing, Stored::into_lookup)),
        }
    }

    /// Applies a PATCH; `body` is the client's JSON, which a cluster
    /// forwards to the code's coordinator.
    pub async fn update(&self, code: &str, patch: Patch, body: Bytes) -> Result<Link, WriteError> {
        match self {
            Links::Local { store, cache } => {
                let link = store.update(code, patch).await?;
                cache.invalidate(code);
                Ok(link)
            }
            Links::Clustered(c) => c.update(code, patch, body).await,
        }
    }

    pub async fn delete(&self, code: &str) -> Result<(), WriteError> {
        match self {
            Links::Local { store, cache } => {
                store.delete(code).await?;
                cache.invalidate(code);
                Ok(())
            }
            Links::Clustered(c) => c.delete(code).await,
        }
    }

    /// The store that holds `code` on this node: the one store of a single
    /// node, or this node's replica of the code's partition.
    #[inline]
    pub fn store_of(&self, code: &str) -> StoreRef<'_> {
        match self {
            Links::Local { store, .. } => StoreRef::Local(store),
            Links::Clustered(c) => StoreRef::Replica(c.store_of(code)),
        }
    }

    /// Every store that holds links here: one, or one per partition.
    pub fn stores(&self) -> Cow<'_, [Arc<Store>]> {
        match self {
            Links::Local { store, .. } => Cow::Borrowed(std::slice::from_ref(store)),
            Links::Clustered(c) => Cow::Owned(c.stores()),
        }
    }

    /// Up to `limit` links from `cursor` on, and the next page's cursor: a
    /// search when `q` is set, else every link, in `order`. In a cluster
    /// the pages go through this node's replicas partition by partition,
    /// each in `order`. It may read the whole log: call it off a worker.
    pub fn list(&self, q: Option<&str>, order: Order, cursor: Option<ListCursor>, limit: usize) -> (Vec<Link>, Option<ListCursor>) {
        let stores = self.stores();
        let mut at = cursor.unwrap_or_default();
        let mut out = Vec::new();
        while (at.part as usize) < stores.len() {
            let store = &stores[at.part as usize];
            let (links, next) = match (q, order) {
                (None, Order::Oldest) => store.page(at.at, limit - out.len()),
                _ => store.search(q, order, at.at, limit - out.len()),
            };
            out.extend(links);
            at = match next {
                Some(c) => ListCursor { part: at.part, at: Some(c) },
                None => ListCursor { part: at.part + 1, at: None },
            };
            if out.len() == limit {
                break;
            }
        }
        let more = (at.part as usize) < stores.len();
        (out, more.then_some(at))
    }

    /// Whether this node's store answers for `code` (always, on a single
    /// node); if not, a redirect asks a holder.
    #[inline]
    pub fn held_here(&self, code: &str) -> bool {
        match self {
            Links::Local { .. } => true,
            Links::Clustered(c) => c.authoritative(code),
        }
    }

    /// Re-fetches, in the background, a cached code held elsewhere.
    pub fn refresh(&self, code: &str) {
        if let Links::Clustered(c) = self {
            c.refresh(code);
        }
    }

    /// A code held elsewhere, fetched once however many ask at the same
    /// time, with the cache generation to insert it under. A single node
    /// holds everything, so there is nothing elsewhere.
    pub async fn fetch_shared(&self, code: &str) -> SharedFetch {
        match self {
            Links::Local { .. } => (Ok(None), 0),
            Links::Clustered(c) => c.fetch_shared(code).await,
        }
    }

    /// Whether click limits are decided elsewhere (a cluster: by the
    /// code's partition, through `claim_click`) rather than by this store.
    #[inline]
    pub fn shares_limits(&self) -> bool {
        matches!(self, Links::Clustered(_))
    }

    /// One click on a link with a click limit, counted by its partition:
    /// true while within the limit. A single node counts in its store.
    pub async fn claim_click(&self, code: &str) -> Result<bool, WriteError> {
        match self {
            Links::Local { store, .. } => {
                Ok(store.stored(code).and_then(|s| s.link).is_some_and(|l| store.try_click_limited(code, l.max_clicks)))
            }
            Links::Clustered(c) => c.claim_click(code).await,
        }
    }

    /// This node's id while it is still pulling its share of the links.
    pub fn joining(&self) -> Option<&str> {
        match self {
            Links::Clustered(c) if c.joining() => Some(c.me()),
            _ => None,
        }
    }

    /// The cluster, for node-to-node requests, membership and the
    /// server's start and stop; `None` on a single node.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Links::Local { .. } => None,
            Links::Clustered(c) => Some(c),
        }
    }
}
