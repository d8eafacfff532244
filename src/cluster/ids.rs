//! Ids for generated codes in a cluster.
//!
//! A node's ids are `slot << 32 | counter`, where the slot comes from its
//! node id, so two nodes draw from different ranges. With `--cluster-key`
//! every node permutes ids with the same key derived from it, so codes made
//! on different nodes never collide either; a slot shared by two node ids
//! (or nodes without a cluster key) only costs a retry, because the owner
//! claims each code atomically. The counter is reserved in blocks in the
//! file `cluster-ids`, so it never goes backwards across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::code::{CodeKey, CODE_SPACE};

const BLOCK: u64 = 4096;
const SLOTS: u64 = CODE_SPACE >> 32;

pub struct Ids {
    path: PathBuf,
    slot: u64,
    /// (next counter, end of the reserved block)
    state: Mutex<(u64, u64)>,
}

impl Ids {
    pub fn open(dir: &Path, node_id: &str) -> std::io::Result<Ids> {
        let path = dir.join("cluster-ids");
        let next = match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().parse().map_err(|_| std::io::Error::other(format!("{} is not a number", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Ids { path, slot: xxh3_64(node_id.as_bytes()) % SLOTS, state: Mutex::new((next, next)) })
    }

    /// The next unused id, or `None` when this node's range is used up.
    pub fn next(&self) -> std::io::Result<Option<u64>> {
        let mut s = self.state.lock();
        if s.0 >= 1 << 32 {
            return Ok(None);
        }
        if s.0 == s.1 {
            let end = s.1 + BLOCK;
            let tmp = self.path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{end}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            s.1 = end;
        }
        let id = self.slot << 32 | s.0;
        s.0 += 1;
        Ok(Some(id))
    }
}

/// The permutation key every node of a cluster shares.
pub fn shared_key(cluster_key: &str) -> CodeKey {
    let mut bytes = [0u8; 48];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&xxh3_64_with_seed(cluster_key.as_bytes(), 0x5eed + i as u64).to_le_bytes());
    }
    CodeKey::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ids::open(dir.path(), "a").unwrap();
        let first: Vec<u64> = (0..10).map(|_| a.next().unwrap().unwrap()).collect();
        drop(a);
        let again = Ids::open(dir.path(), "a").unwrap();
        let later = again.next().unwrap().unwrap();
        assert!(first.iter().all(|&id| id < later && id < CODE_SPACE));
        assert_ne!(Ids::open(dir.path(), "b").unwrap().slot, again.slot);
    }
}
