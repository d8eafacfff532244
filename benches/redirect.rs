//! The whole redirect handler without the network: decide (cache, clicks,
//! counters) plus building hyper's response, on a hit and on a miss.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shortd::clicks::Aggregator;
use shortd::config::{Config, Durability};
use std::rc::Rc;
use std::sync::Arc;

use shortd::analytics::capture::Visit;
use shortd::http::redirect::{serve, Served};
use shortd::http::{App, Worker};
use shortd::store::NewLink;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { data_dir: dir.path().to_path_buf(), durability: Durability::Never, cache_entries: 0, ..Config::default() };
    let uncached = Arc::new(App::open(cfg).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let code = rt.block_on(uncached.store.create(NewLink::to("https://example.com/landing/page"))).unwrap().link.code;
    let mut agg = Aggregator::start(uncached.store.clone(), uncached.hot.clone(), None, uncached.analytics.clone());
    let worker = Rc::new(Worker::new(&uncached, agg.sink()));
    let headers = browser_headers();
    let get = Visit { head: false, headers: &headers, peer: "127.0.0.1:40000".parse().unwrap() };
    c.bench_function("redirect/miss (index + mapped log, no cache)", |b| b.iter(|| black_box(now(serve(&uncached, &worker, &code, &get)))));
    c.bench_function("redirect/unknown code", |b| b.iter(|| black_box(now(serve(&uncached, &worker, "nosuch1", &get)))));
    drop(worker);
    agg.stop();
    uncached.store.close();

    let cfg = Config { data_dir: dir.path().to_path_buf(), durability: Durability::Never, ..Config::default() };
    let app = Arc::new(App::open(cfg).unwrap());
    let mut agg = Aggregator::start(app.store.clone(), app.hot.clone(), None, app.analytics.clone());
    let worker = Rc::new(Worker::new(&app, agg.sink()));
    now(serve(&app, &worker, &code, &get));
    c.bench_function("redirect/hit (cache + click + response)", |b| b.iter(|| black_box(now(serve(&app, &worker, &code, &get)))));
    drop(worker);
    agg.stop();
    app.store.close();
}

/// What a browser sends that analytics reads.
fn browser_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
    );
    h.insert(http::header::REFERER, http::HeaderValue::from_static("https://news.example.com/story/1"));
    h
}

/// A single node always answers at once.
fn now(s: Served) -> http::Response<shortd::http::problem::Body> {
    match s {
        Served::Now(r) => r,
        Served::Later(_) => unreachable!("no cluster here"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
