//! Short code generation: base62 and the keyed permutation.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shortd::code::{base62, unbase62, CodeKey};

fn bench(c: &mut Criterion) {
    let key = CodeKey::from_bytes([7u8; CodeKey::BYTES]);
    let mut id = 0u64;
    c.bench_function("code/encode (permute + base62)", |b| {
        b.iter(|| {
            id += 1;
            black_box(key.encode(black_box(id)))
        })
    });
    let code = key.encode(123_456).unwrap();
    c.bench_function("code/decode (unbase62 + unpermute)", |b| b.iter(|| black_box(key.decode(black_box(&code)))));
    c.bench_function("code/base62 only", |b| b.iter(|| black_box(base62(black_box(3_000_000_000_000)))));
    c.bench_function("code/unbase62 only", |b| b.iter(|| black_box(unbase62(black_box(b"Zz09aB7")))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
