//! The append-only log, bytes only: the record format (`record`), segment
//! files and their memory maps (`segment`), walks over a segment past
//! damage (`scan`), the appender with group commit and durability modes
//! (`log`), opening a data directory's segments and replaying them with the
//! torn-tail rules (`open`), snapshot files (`snapshot`), verification
//! at rest (`scrub`) and the atomic write of a whole file (`file`). It knows nothing of links: what a record means, which
//! records are live and what goes into a snapshot is the store's.

pub mod file;
pub mod log;
pub mod open;
pub mod record;
pub mod scan;
pub mod scrub;
pub mod segment;
pub mod snapshot;
pub mod table;

pub use log::{Durability, Log, LogError, LogHandles, LogOptions, Poison};
pub use open::OpenError;
pub use segment::{Loc, Segments};
