//! The permutation key every node of a cluster shares.
//!
//! Generated codes are ids permuted with this key, and ids are leased from
//! the metadata group (`metadata.rs`), so two nodes never make the same code.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::code::CodeKey;

/// The permutation key every node of a cluster shares.
pub fn shared_key(cluster_key: &str) -> CodeKey {
    let mut bytes = [0u8; 48];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&xxh3_64_with_seed(cluster_key.as_bytes(), 0x5eed + i as u64).to_le_bytes());
    }
    CodeKey::from_bytes(bytes)
}
