//! What the store's handle sends the writer (`Command`) and how the
//! answers go back: one `Reply` per command, handed out together per
//! thread (`Delivery`) once the batch they belong to is committed.

use compact_str::CompactString;
use tokio::sync::oneshot;

use crate::analytics::rollup::Packed;
use crate::store::types::{ApplyMode, Change, Created, ImportBatch, Link, NewLink, Patch, WriteError};

pub enum Command {
    Create {
        new: NewLink,
        reply: oneshot::Sender<Result<Created, WriteError>>,
    },
    Update {
        code: CompactString,
        patch: Patch,
        reply: oneshot::Sender<Result<Link, WriteError>>,
    },
    Delete {
        code: CompactString,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Apply {
        change: Change,
        mode: ApplyMode,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
    /// A bulk load's links, answered together (`shortd import`).
    /// `expected`: about how many links the whole load brings.
    Import {
        batch: ImportBatch,
        expected: u64,
        reply: oneshot::Sender<Vec<Result<(), WriteError>>>,
    },
    Clicks(Vec<(CompactString, u64)>),
    Rollups(Vec<(CompactString, u32, Packed)>),
    Sync {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Make `into` a copy of the store as of now (`Store::checkpoint`).
    Checkpoint {
        into: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

pub(super) enum Reply {
    Created(oneshot::Sender<Result<Created, WriteError>>, Result<Created, WriteError>),
    Updated(oneshot::Sender<Result<Link, WriteError>>, Result<Link, WriteError>),
    Deleted(oneshot::Sender<Result<(), WriteError>>, Result<(), WriteError>),
    Applied(oneshot::Sender<Result<bool, WriteError>>, Result<bool, WriteError>),
    Imported(oneshot::Sender<Vec<Result<(), WriteError>>>, Vec<Result<(), WriteError>>),
}

impl Reply {
    pub(super) fn send(self, failure: Option<&WriteError>) {
        match (self, failure) {
            (Reply::Created(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Updated(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Deleted(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Applied(tx, r), f) => drop(tx.send(f.map_or(r, |e| Err(e.clone())))),
            (Reply::Imported(tx, r), None) => drop(tx.send(r)),
            (Reply::Imported(tx, r), Some(e)) => drop(tx.send(r.iter().map(|_| Err(e.clone())).collect())),
        }
    }
}

/// Where the writer sends the answers for one thread's commands.
pub type Pump = tokio::sync::mpsc::UnboundedSender<Delivery>;

/// Answers of one batch for one thread, handed out there (`http::server::pump_replies`).
pub struct Delivery {
    pub(super) replies: Vec<Reply>,
    pub(super) failure: Option<WriteError>,
}

impl Delivery {
    pub fn deliver(self) {
        for reply in self.replies {
            reply.send(self.failure.as_ref());
        }
    }
}
