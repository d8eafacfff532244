//! The whole redirect handler without the network: decide (cache, clicks,
//! counters) plus building hyper's response, on a hit and on a miss.
#[path = "../tests/common/mmdb.rs"]
mod mmdb;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shortd::clicks::Aggregator;
use shortd::config::{Config, Durability, Switch};
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

    // A hit three ways: analytics off; on (agent and referrer captured);
    // on with a country database behind a trusted proxy (the forwarded
    // address read too). Each case opens the same data directory anew.
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, mmdb::country_db(&[("203.0.113.0/24", "JP")])).unwrap();
    let cases = [
        ("redirect/hit, analytics off (cache + click + response)", Switch::Off, None),
        ("redirect/hit, analytics on (cache + visit + response)", Switch::On, None),
        ("redirect/hit, analytics on, GeoIP + X-Forwarded-For", Switch::On, Some(db)),
    ];
    for (name, analytics, geoip_db) in cases {
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Never,
            analytics,
            geoip_db,
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..Config::default()
        };
        let app = Arc::new(App::open(cfg).unwrap());
        let mut agg = Aggregator::start(app.store.clone(), app.hot.clone(), None, app.analytics.clone());
        let worker = Rc::new(Worker::new(&app, agg.sink()));
        now(serve(&app, &worker, &code, &get));
        c.bench_function(name, |b| b.iter(|| black_box(now(serve(&app, &worker, &code, &get)))));
        drop(worker);
        agg.stop();
        app.store.close();
    }
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
    h.insert("x-forwarded-for", http::HeaderValue::from_static("203.0.113.7"));
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
