//! Short-code decoding, the id permutation and alias validation.
//!
//! `unbase62` and `CodeKey::decode` see request paths; `encode`/`decode`
//! must be exact inverses over the whole id space for any key; and
//! `validate_alias` sees API input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shortd::code::{base62, is_code_byte, unbase62, validate_alias, CodeKey, CODE_LEN, CODE_SPACE, MAX_ALIAS_LEN, RESERVED};

fn fixed_key() -> CodeKey {
    let mut b = [0u8; CodeKey::BYTES];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    CodeKey::from_bytes(b)
}

fn round_trip(key: &CodeKey, id: u64) {
    match key.encode(id) {
        Some(code) => {
            assert!(id < CODE_SPACE);
            assert!(code.iter().all(u8::is_ascii_alphanumeric), "{code:?}");
            assert_eq!(key.decode(&code), Some(id), "id {id} code {code:?}");
        }
        None => assert!(id >= CODE_SPACE, "id {id} got no code"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = fixed_key();

    if let Some(n) = unbase62(data) {
        assert!(n < CODE_SPACE);
        assert_eq!(&base62(n)[..], data);
        let id = key.decode(data).expect("a base62 code decodes");
        assert!(id < CODE_SPACE);
        assert_eq!(&key.encode(id).expect("id in range")[..], data);
    } else {
        assert!(key.decode(data).is_none());
        assert!(data.len() != CODE_LEN || !data.iter().all(u8::is_ascii_alphanumeric));
    }

    if data.len() == 8 {
        let id = u64::from_le_bytes(data.try_into().unwrap());
        round_trip(&key, id);
        round_trip(&key, id % CODE_SPACE);
    }
    if data.len() >= CodeKey::BYTES + 8 {
        let other = CodeKey::from_bytes(data[..CodeKey::BYTES].try_into().unwrap());
        let id = u64::from_le_bytes(data[CodeKey::BYTES..CodeKey::BYTES + 8].try_into().unwrap());
        round_trip(&other, id % CODE_SPACE);
        round_trip(&other, id);
    }

    if let Ok(alias) = std::str::from_utf8(data) {
        if validate_alias(alias).is_ok() {
            assert!((1..=MAX_ALIAS_LEN).contains(&alias.len()));
            assert!(alias.bytes().all(is_code_byte));
            assert!(!RESERVED.iter().any(|r| r.eq_ignore_ascii_case(alias)));
        }
    }
});
