//! A cached redirect makes no heap allocation between the parsed request
//! and the response decision, counted by a global allocator that tallies
//! this thread's allocations while switched on. The request carries what a
//! browser behind a trusted proxy sends, with a country database loaded, so
//! the analytics capture (agent, referrer host, forwarded address) is in.

#[path = "common/mmdb.rs"]
mod mmdb;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shortd::analytics::capture::Visit;
use shortd::clicks::Aggregator;
use shortd::config::{Config, Durability};
use shortd::http::redirect::{decide, respond, Answer};
use shortd::http::{App, Worker};
use shortd::store::NewLink;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is passed straight to the system allocator; counting
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

#[test]
fn a_cached_redirect_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, mmdb::country_db(&[("203.0.113.0/24", "JP")])).unwrap();
    let cfg = Config {
        data_dir: dir.path().join("data"),
        durability: Durability::Never,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        geoip_db: Some(db),
        ..Config::default()
    };
    let app = App::open(cfg).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
    );
    headers.insert(http::header::REFERER, http::HeaderValue::from_static("https://news.example.com/story/1"));
    headers.insert("x-forwarded-for", http::HeaderValue::from_static("203.0.113.7"));
    let get = Visit { head: false, headers: &headers, peer: "127.0.0.1:40000".parse().unwrap() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let new = NewLink::to("https://example.com/landing");
    let code = rt.block_on(app.store.create(new)).unwrap().link.code;
    let mut aggregator = Aggregator::start(app.store.clone(), app.hot.clone(), None, app.analytics.clone());
    let worker = Worker::new(&app, aggregator.sink());

    // The first request loads the store into the cache and puts the code in
    // this worker's click buffer; those may allocate.
    assert!(matches!(decide(&app, &worker, &code, &get), Answer::Redirect { .. }));

    let (answers, allocations) = counted(|| (0..10_000).map(|_| decide(&app, &worker, &code, &get)).collect::<Vec<_>>().len());
    // Collecting the answers allocates the Vec itself (and its growth); the
    // decisions must add nothing on top.
    let (_, vec_only) = counted(|| (0..10_000).map(|_| Answer::NotFound).collect::<Vec<_>>().len());
    assert_eq!(answers, 10_000);
    assert_eq!(allocations, vec_only, "cache hits allocated {} times", allocations - vec_only);

    let (_, per_hit) = counted(|| {
        let a = decide(&app, &worker, &code, &get);
        drop(a);
    });
    assert_eq!(per_hit, 0);

    let (resp, response_allocations) = counted(|| respond(&app, decide(&app, &worker, &code, &get), false));
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://example.com/landing");
    println!("building hyper's response for a hit allocates {response_allocations} time(s) (its header map)");
    assert!(response_allocations <= 3, "{response_allocations}");

    drop(worker);
    aggregator.stop();
    app.store.close();
}
