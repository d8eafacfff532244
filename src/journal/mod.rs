//! The append-only log: record format (`record`), segment files and their
//! memory maps (`segment`), the single writer with group commit and
//! compaction (`writer`), snapshots (`snapshot`) and start-up (`recovery`).

pub mod record;
pub mod recovery;
pub mod scan;
pub mod scrub;
pub mod segment;
pub mod snapshot;
pub mod writer;
