//! The store: an in-memory index over the append-only journal.
//!
//! Reads (`lookup`, `page`, click counts) run on the caller's thread against
//! shared maps and memory-mapped segments. Every change goes to the single
//! writer thread (`writer`), which checks it against the current
//! state, appends it, syncs per the durability setting, applies it to the
//! index and only then answers; that one thread is why an alias is claimed
//! atomically and why the index always matches the log's order.
//!
//! The files: `types` (links, versions, requests, errors, options), `read`
//! (the shared state and every read), `handle` (`Store`: open, send, wait),
//! `writer` (the single writer and the link rules), `index` (code ->
//! location), `recovery` (start-up), `search`, `scrub` (verification at
//! rest) and `checkpoint` (a copy of the directory).

mod checkpoint;
mod handle;
pub mod index;
mod read;
mod recovery;
mod scrub;
mod search;
mod types;
mod writer;

pub use checkpoint::copy_checkpoint;
pub use handle::{answer_on_this_thread, Store};
pub use read::Shared;
pub use recovery::KEY_FILE;
pub use search::Order;
pub use types::{
    ApplyMode, Change, Created, Cursor, Idem, ImportBatch, ImportEntry, Imported, Link, Loc, Lookup, NewLink, OpenError, Patch,
    StoreOptions, StoreStats, Stored, Version, WriteError, ALIAS_ID, DEFAULT_QUEUE, IDEMPOTENCY_WINDOW_MS, REDIRECT_STATUSES,
};
pub use writer::{Delivery, Pump};
