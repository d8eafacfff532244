//! The redirect cache: hit, miss and insert-with-eviction cost, and the hit
//! ratio of its eviction policy (CLOCK) against exact LRU and random
//! eviction on a Zipf(1.1) workload over one million codes.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderValue, StatusCode};
use shortd::cache::{Cache, CacheConfig, Entry, Hit};

const KEYS: usize = 1_000_000;
const REQUESTS: usize = 2_000_000;

fn entry() -> Entry {
    Entry::new(HeaderValue::from_static("https://example.com/a/typical/landing/page"), StatusCode::FOUND, 0, 0, false)
}

fn cache(entries: usize) -> Cache {
    Cache::new(CacheConfig { max_entries: entries, max_bytes: usize::MAX, ttl: Duration::from_secs(3600), jitter: Duration::ZERO })
}

/// Zipf sampler by inverse CDF.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|x| *x /= sum);
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let u = rng.f64();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

fn keys() -> Vec<String> {
    // Hot keys are scattered over the key space, as codes are.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut ks: Vec<String> = (0..KEYS).map(|i| format!("k{i:07}")).collect();
    rng.shuffle(&mut ks);
    ks
}

fn trace() -> Vec<usize> {
    let z = Zipf::new(KEYS, 1.1);
    let mut rng = fastrand::Rng::with_seed(42);
    (0..REQUESTS).map(|_| z.sample(&mut rng)).collect()
}

fn clock_ratio(keys: &[String], trace: &[usize], capacity: usize) -> f64 {
    let c = cache(capacity);
    let mut hits = 0;
    for &i in trace {
        match c.get(&keys[i], 0) {
            Hit::Miss => {
                c.insert(&keys[i], entry(), c.generation(), 0);
            }
            _ => hits += 1,
        }
    }
    hits as f64 / trace.len() as f64
}

fn lru_ratio(trace: &[usize], capacity: usize) -> f64 {
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut order: BTreeMap<u64, usize> = BTreeMap::new();
    let mut hits = 0;
    for (t, &k) in trace.iter().enumerate() {
        let t = t as u64;
        if let Some(old) = last.insert(k, t) {
            order.remove(&old);
            hits += 1;
        } else if last.len() > capacity {
            let (_, victim) = order.pop_first().expect("non-empty");
            last.remove(&victim);
        }
        order.insert(t, k);
    }
    hits as f64 / trace.len() as f64
}

fn random_ratio(trace: &[usize], capacity: usize) -> f64 {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut slots: Vec<usize> = Vec::new();
    let mut pos: HashMap<usize, usize> = HashMap::new();
    let mut hits = 0;
    for &k in trace {
        if pos.contains_key(&k) {
            hits += 1;
            continue;
        }
        if slots.len() < capacity {
            pos.insert(k, slots.len());
            slots.push(k);
        } else {
            let i = rng.usize(..capacity);
            pos.remove(&slots[i]);
            slots[i] = k;
            pos.insert(k, i);
        }
    }
    hits as f64 / trace.len() as f64
}

fn hit_ratios() {
    let keys = keys();
    let trace = trace();
    println!("\nhit ratio, Zipf(1.1) over {KEYS} codes, {REQUESTS} requests");
    println!("{:>10} {:>8} {:>8} {:>8}", "capacity", "CLOCK", "LRU", "random");
    for capacity in [1_000, 10_000, 100_000] {
        println!(
            "{capacity:>10} {:>8.4} {:>8.4} {:>8.4}",
            clock_ratio(&keys, &trace, capacity),
            lru_ratio(&trace, capacity),
            random_ratio(&trace, capacity)
        );
    }
}

fn bench(c: &mut Criterion) {
    hit_ratios();
    let full = cache(100_000);
    let keys = keys();
    for k in &keys[..100_000] {
        full.insert(k, entry(), full.generation(), 0);
    }
    c.bench_function("cache/hit", |b| b.iter(|| black_box(matches!(full.get(black_box(&keys[777]), 1), Hit::Fresh(_)))));
    c.bench_function("cache/miss", |b| b.iter(|| black_box(matches!(full.get(black_box("absent1"), 1), Hit::Miss))));
    let mut i = 100_000;
    c.bench_function("cache/insert with eviction", |b| {
        b.iter(|| {
            i = if i + 1 == KEYS { 100_000 } else { i + 1 };
            full.insert(&keys[i], entry(), full.generation(), 0)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
