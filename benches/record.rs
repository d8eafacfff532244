//! The log record codec: encode into a batch buffer, decode (with checksum).
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shortd::journal::record::{decode, encode, Body, Put, Record};

fn bench(c: &mut Criterion) {
    let url = b"https://www.example.com/articles/2026/11/a-fairly-typical-path?utm_source=newsletter";
    let rec = Record {
        lsn: 42,
        time_ms: 1_764_000_000_000,
        origin: 0,
        body: Body::Put(Put { key: b"aZ3kP9q", url, id: 9, created_ms: 1, expires_ms: 0, max_clicks: 0, redirect: 302, flags: 0 }),
    };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode put", |b| {
        b.iter(|| {
            if buf.len() > (1 << 20) - 256 {
                buf.clear();
            }
            black_box(encode(black_box(&rec), &mut buf))
        })
    });
    let mut one = Vec::new();
    encode(&rec, &mut one);
    g.bench_function("decode put (checksum verified)", |b| b.iter(|| black_box(decode(black_box(&one), 0).unwrap())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
