//! The hasher and map types every layer shares.
//!
//! A leaf: the store's index, the cache, the click buffers and the
//! analytics all key maps by short codes, and each of them picks its
//! hasher here rather than from one another, so none has to import a
//! layer above or beside it for a type alias.

use compact_str::CompactString;
use dashmap::DashMap;

/// Hash state for every in-memory map keyed by codes: foldhash's quality
/// variant, seeded per process, fast on short keys and not predictable by a
/// client choosing codes.
pub type Hasher = foldhash::quality::RandomState;
/// A concurrent map keyed by codes.
pub type Map<V> = DashMap<CompactString, V, Hasher>;
