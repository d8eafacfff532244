//! What the cluster's Raft logs carry and what applying an entry answers:
//! the partition groups' commands, the metadata group's, and the outcomes.
//!
//! Apart from the state machines (`raft.rs`, `metadata.rs`) so both can
//! name these types without importing each other; the log storage, the
//! transport and the proposer in `mod.rs` need the types, not the machines.

use serde::{Deserialize, Serialize};

use super::wire::WireRecord;
use crate::store::{Patch, WriteError};

pub type NodeId = u64;

/// What a group's log carries. Each names one key of its group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Claim a code that nobody holds (an alias, or a code from a lease).
    Create {
        link: WireRecord,
    },
    Update {
        code: String,
        patch: WirePatch,
        at_ms: i64,
    },
    Delete {
        code: String,
        at_ms: i64,
    },
    /// Bind an Idempotency-Key to the link its first request would make.
    Claim {
        key: String,
        body_hash: u64,
        at_ms: i64,
        link: WireRecord,
    },
    /// Clicks served by some node since it last reported.
    Clicks {
        counts: Vec<(String, u64)>,
    },
    /// One click on a link with a click limit, granted or not.
    ClickLimited {
        code: String,
    },
    Meta(MetaCommand),
}

/// What applying a command decided.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Created { link: WireRecord, replayed: bool },
    Link { link: WireRecord },
    Claim { body_hash: u64, link: WireRecord },
    Click { granted: bool },
    Lease { first: u64 },
    Refused { reason: Refusal },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Taken,
    NotFound,
    Gone,
}

impl From<Refusal> for WriteError {
    fn from(r: Refusal) -> WriteError {
        match r {
            Refusal::Taken => WriteError::Taken,
            Refusal::NotFound => WriteError::NotFound,
            Refusal::Gone => WriteError::Gone,
        }
    }
}

/// A PATCH as the log carries it (`store::Patch`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WirePatch {
    pub url: Option<String>,
    pub expires_ms: Option<i64>,
    pub max_clicks: Option<u64>,
    pub redirect: Option<u16>,
    pub disabled: Option<bool>,
}

impl From<Patch> for WirePatch {
    fn from(p: Patch) -> WirePatch {
        WirePatch { url: p.url, expires_ms: p.expires_ms, max_clicks: p.max_clicks, redirect: p.redirect, disabled: p.disabled }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A node joins, or comes back with a new address or a new disk (a
    /// new Raft id under the same name replaces the old one).
    Join {
        name: String,
        raft_id: NodeId,
        addr: String,
    },
    Remove {
        name: String,
    },
    /// Reserves `count` ids for one node's generated codes.
    Lease {
        count: u64,
    },
}
