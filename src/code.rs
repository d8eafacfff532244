//! Short codes: base62 text of a keyed pseudo-random permutation of an id.
//!
//! A generated code is `base62(permute(id))` where `permute` is a six-round
//! Feistel network over 42 bits with cycle-walking onto `[0, 62^7)`. Because
//! the permutation is a bijection, distinct ids can never collide, and because
//! it is keyed (the key lives in the data directory) neighbouring ids give
//! unrelated codes that cannot be enumerated.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Number of characters in a generated code.
pub const CODE_LEN: usize = 7;
/// Size of the code space, 62^7.
pub const CODE_SPACE: u64 = 62u64.pow(CODE_LEN as u32);
const HALF_BITS: u32 = 21;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const ROUNDS: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Longest custom alias accepted.
pub const MAX_ALIAS_LEN: usize = 64;

/// Words that can never be an alias because they name server routes or are
/// likely to be mistaken for them.
pub const RESERVED: &[&str] = &[
    "api",
    "metrics",
    "healthz",
    "readyz",
    "_internal",
    "internal",
    "admin",
    "static",
    "favicon.ico",
    "robots.txt",
    "health",
    "ready",
    "status",
    "docs",
    // The web UI lives at /ui/; see docs/ui.md.
    "ui",
];

/// The secret that keys the permutation; generated once per data directory.
#[derive(Clone, Copy)]
pub struct CodeKey {
    rounds: [u64; ROUNDS],
}

impl CodeKey {
    pub fn from_bytes(bytes: [u8; 8 * ROUNDS]) -> Self {
        let mut rounds = [0u64; ROUNDS];
        for (i, r) in rounds.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            *r = u64::from_le_bytes(b);
        }
        CodeKey { rounds }
    }

    pub const BYTES: usize = 8 * ROUNDS;

    fn feistel(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF_BITS, x & HALF_MASK);
        for k in self.rounds {
            let f = xxh3_64_with_seed(&r.to_le_bytes(), k) & HALF_MASK;
            (l, r) = (r, l ^ f);
        }
        (l << HALF_BITS) | r
    }

    fn feistel_inverse(&self, y: u64) -> u64 {
        let (mut l, mut r) = (y >> HALF_BITS, y & HALF_MASK);
        for k in self.rounds.iter().rev() {
            let f = xxh3_64_with_seed(&l.to_le_bytes(), *k) & HALF_MASK;
            (l, r) = (r ^ f, l);
        }
        (l << HALF_BITS) | r
    }

    /// Maps an id in `[0, CODE_SPACE)` to another value in that range.
    /// Cycle-walking keeps the result inside the range: the Feistel network
    /// permutes [0, 2^42), so repeated application from a point inside the
    /// range must come back into it.
    pub fn permute(&self, id: u64) -> u64 {
        debug_assert!(id < CODE_SPACE);
        let mut x = self.feistel(id);
        while x >= CODE_SPACE {
            x = self.feistel(x);
        }
        x
    }

    pub fn unpermute(&self, y: u64) -> u64 {
        let mut x = self.feistel_inverse(y);
        while x >= CODE_SPACE {
            x = self.feistel_inverse(x);
        }
        x
    }

    /// The code for an id, or `None` once the id space is exhausted.
    pub fn encode(&self, id: u64) -> Option<[u8; CODE_LEN]> {
        (id < CODE_SPACE).then(|| base62(self.permute(id)))
    }

    /// The id behind a generated code, if the text is a well-formed code.
    pub fn decode(&self, code: &[u8]) -> Option<u64> {
        let n = unbase62(code)?;
        Some(self.unpermute(n))
    }
}

/// Fixed-width base62 of a value below `CODE_SPACE`.
pub fn base62(mut n: u64) -> [u8; CODE_LEN] {
    let mut out = [b'0'; CODE_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Inverse of [`base62`]; `None` unless the text is exactly seven base62 characters.
pub fn unbase62(code: &[u8]) -> Option<u64> {
    if code.len() != CODE_LEN {
        return None;
    }
    code.iter().try_fold(0u64, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        Some(acc * 62 + u64::from(digit))
    })
}

/// Why an alias was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AliasError {
    Empty,
    TooLong,
    BadCharacter,
    Reserved,
}

impl AliasError {
    pub fn reason(&self) -> &'static str {
        match self {
            AliasError::Empty => "must not be empty",
            AliasError::TooLong => "must be at most 64 characters",
            AliasError::BadCharacter => "may only contain A-Z, a-z, 0-9, '_' and '-'",
            AliasError::Reserved => "is a reserved word",
        }
    }
}

/// Checks a custom alias: 1-64 characters of `[A-Za-z0-9_-]`, not reserved.
pub fn validate_alias(alias: &str) -> Result<(), AliasError> {
    if alias.is_empty() {
        return Err(AliasError::Empty);
    }
    if alias.len() > MAX_ALIAS_LEN {
        return Err(AliasError::TooLong);
    }
    if !alias.bytes().all(is_code_byte) {
        return Err(AliasError::BadCharacter);
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(alias)) {
        return Err(AliasError::Reserved);
    }
    Ok(())
}

/// Bytes that may appear in any code or alias; the router uses this to
/// refuse paths that can never name a link without touching the store.
#[inline]
pub fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> CodeKey {
        let mut b = [0u8; CodeKey::BYTES];
        for (i, x) in b.iter_mut().enumerate() {
            *x = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        CodeKey::from_bytes(b)
    }

    proptest! {
        #[test]
        fn codes_decode_back_to_their_id(id in 0..CODE_SPACE, seed: u8) {
            let k = key(seed);
            let code = k.encode(id).unwrap();
            prop_assert!(code.iter().all(|c| c.is_ascii_alphanumeric()));
            prop_assert_eq!(k.decode(&code), Some(id));
        }

        #[test]
        fn every_code_is_the_image_of_one_id(n in 0..CODE_SPACE, seed: u8) {
            let k = key(seed);
            let code = base62(n);
            let id = k.decode(&code).unwrap();
            prop_assert!(id < CODE_SPACE);
            prop_assert_eq!(k.encode(id).unwrap(), code);
        }

        #[test]
        fn base62_round_trips(n in 0..CODE_SPACE) {
            prop_assert_eq!(unbase62(&base62(n)), Some(n));
        }
    }

    #[test]
    fn consecutive_ids_give_distinct_unrelated_codes() {
        let k = key(7);
        let codes: std::collections::HashSet<_> = (0..100_000).map(|i| k.encode(i).unwrap()).collect();
        assert_eq!(codes.len(), 100_000);
        let a = k.encode(1000).unwrap();
        let b = k.encode(1001).unwrap();
        let shared_prefix = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
        assert!(shared_prefix < 3, "{:?} vs {:?}", a, b);
    }

    #[test]
    fn exhausted_id_space_gives_no_code() {
        assert!(key(1).encode(CODE_SPACE).is_none());
    }

    #[test]
    fn aliases_are_checked() {
        assert_eq!(validate_alias("my-link_2"), Ok(()));
        assert_eq!(validate_alias(""), Err(AliasError::Empty));
        assert_eq!(validate_alias(&"a".repeat(65)), Err(AliasError::TooLong));
        assert_eq!(validate_alias("a b"), Err(AliasError::BadCharacter));
        assert_eq!(validate_alias("API"), Err(AliasError::Reserved));
        assert_eq!(validate_alias("metrics"), Err(AliasError::Reserved));
    }
}
