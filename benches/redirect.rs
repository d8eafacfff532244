//! The whole redirect handler without the network: decide (cache, clicks,
//! counters) plus building hyper's response, on a hit and on a miss.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shortd::clicks::Aggregator;
use shortd::config::{Config, Durability};
use std::rc::Rc;
use std::sync::Arc;

use shortd::http::redirect::{serve, Served};
use shortd::http::{App, Worker};
use shortd::store::NewLink;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { data_dir: dir.path().to_path_buf(), durability: Durability::Never, cache_entries: 0, ..Config::default() };
    let uncached = Arc::new(App::open(cfg).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let code = rt.block_on(uncached.store.create(NewLink::to("https://example.com/landing/page"))).unwrap().link.code;
    let mut agg = Aggregator::start(uncached.store.clone(), uncached.hot.clone(), None);
    let worker = Rc::new(Worker::new(&uncached, agg.sink()));
    c.bench_function("redirect/miss (index + mapped log, no cache)", |b| {
        b.iter(|| black_box(now(serve(&uncached, &worker, &code, false))))
    });
    c.bench_function("redirect/unknown code", |b| b.iter(|| black_box(now(serve(&uncached, &worker, "nosuch1", false)))));
    drop(worker);
    agg.stop();
    uncached.store.close();

    let cfg = Config { data_dir: dir.path().to_path_buf(), durability: Durability::Never, ..Config::default() };
    let app = Arc::new(App::open(cfg).unwrap());
    let mut agg = Aggregator::start(app.store.clone(), app.hot.clone(), None);
    let worker = Rc::new(Worker::new(&app, agg.sink()));
    now(serve(&app, &worker, &code, false));
    c.bench_function("redirect/hit (cache + click + response)", |b| b.iter(|| black_box(now(serve(&app, &worker, &code, false)))));
    drop(worker);
    agg.stop();
    app.store.close();
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
