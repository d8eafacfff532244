//! The hot path: `GET /{code}` and `HEAD /{code}`, top to bottom.
//!
//! cache hit -> answer; cache miss -> one coalesced read of the index and
//! the mapped log -> cache -> answer; unknown -> 404. Every branch bumps its
//! own counter in this worker's stats block. A cache hit takes one shard
//! read lock, clones two reference counts and allocates nothing of its own.
//! Two kinds of miss wait, off the synchronous path: in a cluster, a code
//! held by other nodes (one fetch from a holder, shared by every request
//! for that code); and a code whose index block or record is not in the
//! page cache, which is read on a blocking thread, because a page fault
//! that waits for the disk would stall every connection of this worker,
//! the hottest link's included.
//!
//! Then who clicked: a bot gets its redirect but is never counted against
//! `max_clicks` (links with a limit ask the bot list here; every other
//! click is classified later, in the aggregator), and with analytics on the
//! visit (agent, referrer host, client address) goes into this worker's
//! buffer, which allocates nothing once warm.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::problem::{Body, GONE_BODY, NOT_FOUND_BODY, PROBLEM_JSON, UNAVAILABLE_BODY};
use super::{App, Worker};
use crate::analytics::capture::{Visit, BOT, COUNTED, NO_IP};
use crate::cache::{Entry, Hit};
use crate::metrics::{bump, Outcome};
use crate::store::Lookup;

/// Longest a miss waits for another request's load of the same code.
const COALESCE_WAIT: Duration = Duration::from_millis(100);
const ZERO: HeaderValue = HeaderValue::from_static("0");

/// What a redirect request comes to, before it becomes an HTTP response.
pub enum Answer {
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    NotFound,
    Gone,
    /// Held by other nodes and not cached here: fetch it.
    Elsewhere,
    /// No node that holds the code answered.
    Unavailable,
    /// A click on a link with a click limit in a cluster: its partition
    /// decides whether it is within the limit (`Links::claim_click`).
    Claim {
        status: StatusCode,
        location: HeaderValue,
    },
    /// Held here, but reading it would wait for the disk: load it on a
    /// blocking thread.
    Cold,
}

pub enum Served {
    Now(Response<Body>),
    Later(Pin<Box<dyn Future<Output = Response<Body>>>>),
}

pub fn serve(app: &Arc<App>, worker: &Rc<Worker>, code: &str, visit: &Visit<'_>) -> Served {
    // Reading the clock costs more than a cache lookup here, so one request
    // in LATENCY_SAMPLE is timed; the histogram weights it accordingly.
    let timed = worker.stats.sample_latency().then(Instant::now);
    let head = visit.head;
    let answer = decide(app, worker, code, visit);
    if matches!(answer, Answer::Elsewhere | Answer::Claim { .. } | Answer::Cold) {
        let (app, worker, code) = (app.clone(), worker.clone(), compact_str::CompactString::from(code));
        let (headers, peer) = (visit.headers.clone(), visit.peer);
        return Served::Later(Box::pin(async move {
            let visit = Visit { head, headers: &headers, peer };
            let answer = match answer {
                Answer::Claim { .. } => answer,
                Answer::Cold => load_cold(&app, &worker, &code, &visit).await,
                _ => fetch_elsewhere(&app, &worker, &code, &visit).await,
            };
            let answer = match answer {
                Answer::Claim { status, location } => claim(&app, &code, status, location).await,
                other => other,
            };
            let resp = respond(&app, answer, head);
            worker.stats.redirect(Outcome::for_status(resp.status().as_u16()), timed.map(|t| t.elapsed()));
            resp
        }));
    }
    let resp = respond(app, answer, head);
    worker.stats.redirect(Outcome::for_status(resp.status().as_u16()), timed.map(|t| t.elapsed()));
    Served::Now(resp)
}

/// Cache, store, expiry, click limit, click count: everything but HTTP.
/// On a cache hit this allocates nothing (tests/alloc.rs holds it to that).
pub fn decide(app: &App, worker: &Worker, code: &str, visit: &Visit<'_>) -> Answer {
    let now = worker.now_ms();
    let stats = &worker.stats;

    let entry = match app.cache.get(code, now) {
        Hit::Fresh(e) => {
            bump(&stats.cache_hits);
            e
        }
        Hit::StaleRefresh(e) => {
            bump(&stats.cache_hits);
            if app.links.held_here(code) {
                drop(load(app, code, now));
            } else {
                app.links.refresh(code);
            }
            e
        }
        Hit::Miss => {
            bump(&stats.cache_misses);
            // In a cluster, a node that does not hold the code asks a
            // holder even if it has a copy (a former holder's may be old).
            if !app.links.held_here(code) {
                return Answer::Elsewhere;
            }
            if worker.check_residency() {
                let resident = app.links.store_of(code).lookup_resident(code);
                worker.residency_checked(resident);
                if !resident {
                    return Answer::Cold;
                }
            }
            match load(app, code, now) {
                Some(e) => e,
                None => return absent(app, code),
            }
        }
    };
    answer_for(app, worker, code, visit, &entry)
}

/// Expiry, click limit, bots, click count and capture for a cached entry.
fn answer_for(app: &App, worker: &Worker, code: &str, visit: &Visit<'_>, entry: &Entry) -> Answer {
    let now = worker.now_ms();
    if entry.gone || entry.is_expired(now) {
        return Answer::Gone;
    }
    let limited = entry.max_clicks > 0;
    let redirect = Answer::Redirect { status: entry.status, location: entry.location.clone() };
    if visit.head {
        if limited && app.links.store_of(code).clicks(code) >= entry.max_clicks {
            return Answer::Gone;
        }
        return redirect;
    }
    let mut flags = 0;
    if limited && app.analytics.is_bot(visit.user_agent()) {
        if app.links.store_of(code).clicks(code) >= entry.max_clicks {
            return Answer::Gone;
        }
        flags = BOT;
    } else if limited {
        if app.links.shares_limits() {
            return Answer::Claim { status: entry.status, location: entry.location.clone() };
        }
        if !app.links.store_of(code).try_click_limited(code, entry.max_clicks) {
            return Answer::Gone;
        }
        flags = COUNTED;
    }
    if app.analytics.enabled {
        let ip = if app.analytics.geo.enabled() { app.access.client_ip(visit.peer, visit.headers) } else { NO_IP };
        worker.clicks.borrow_mut().visit(code, visit, ip, now, flags);
    } else if flags == 0 {
        worker.clicks.borrow_mut().count(code);
    } else if flags == BOT {
        crate::metrics::bots(1);
    }
    bump(&worker.stats.clicks);
    redirect
}

/// The HTTP response for an answer. hyper's header map allocates its
/// storage on the first insert; that is the one allocation a hit pays.
/// hyper writes `Content-Length: 0` itself from the empty body, except
/// for HEAD, where it cannot tell the body's length, so it is set here.
pub fn respond(app: &App, answer: Answer, head: bool) -> Response<Body> {
    match answer {
        Answer::Redirect { status, location } => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(header::LOCATION, location);
            h.insert(header::CACHE_CONTROL, app.cache_control.clone());
            if head {
                h.insert(header::CONTENT_LENGTH, ZERO);
            }
            resp
        }
        // A claim is always settled before it gets here (`serve`).
        Answer::NotFound | Answer::Elsewhere | Answer::Claim { .. } => problem(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
        Answer::Gone => problem(StatusCode::GONE, GONE_BODY),
        // Likewise a cold load; were one not, it was not read.
        Answer::Unavailable | Answer::Cold => {
            let mut resp = problem(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_BODY);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// The redirect for a code held by other nodes: fetched once (however many
/// requests wait for it), then cached here like any other.
/// The partition's answer to a click on a limited link (a cluster only).
async fn claim(app: &App, code: &str, status: StatusCode, location: HeaderValue) -> Answer {
    match app.links.claim_click(code).await {
        Ok(true) => Answer::Redirect { status, location },
        Ok(false) => Answer::Gone,
        Err(_) => Answer::Unavailable,
    }
}

async fn fetch_elsewhere(app: &App, worker: &Worker, code: &str, visit: &Visit<'_>) -> Answer {
    let (fetched, generation) = app.links.fetch_shared(code).await;
    match fetched {
        Ok(Some(stored)) => {
            let entry = app.cache.insert(code, Entry::from_lookup(stored.into_lookup()), generation, worker.now_ms());
            answer_for(app, worker, code, visit, &entry)
        }
        Ok(None) => Answer::NotFound,
        Err(()) => Answer::Unavailable,
    }
}

/// `load` on one of the runtime's blocking threads (at most
/// `server::COLD_LOADS` per worker): the code's pages are not in memory.
async fn load_cold(app: &Arc<App>, worker: &Worker, code: &str, visit: &Visit<'_>) -> Answer {
    crate::metrics::cold_load();
    let (shared, key, now) = (app.clone(), compact_str::CompactString::from(code), worker.now_ms());
    let loaded = tokio::task::spawn_blocking(move || load(&shared, &key, now)).await.ok().flatten();
    match loaded {
        Some(e) => answer_for(app, worker, code, visit, &e),
        None => absent(app, code),
    }
}

/// A code the store did not find: absent, or not known while a damaged
/// index is rebuilt.
fn absent(app: &App, code: &str) -> Answer {
    if app.links.store_of(code).index_rebuilding() {
        Answer::Unavailable
    } else {
        Answer::NotFound
    }
}

/// Reads a code from the store into the cache, one load per code at a time.
/// Inside the single flight, the cache is checked again first: the leader
/// of an earlier flight may have filled it.
fn load(app: &App, code: &str, now: i64) -> Option<Arc<Entry>> {
    let generation = app.cache.generation();
    let (loaded, role) = app.cache.coalescer.load(code, COALESCE_WAIT, || {
        if let Some(e) = app.cache.peek(code).filter(|e| now < e.fresh_until_ms()) {
            return Some(e);
        }
        let found = app.links.store_of(code).lookup(code);
        if let Lookup::Missing | Lookup::Unavailable = found {
            return None;
        }
        Some(app.cache.insert(code, Entry::from_lookup(found), generation, now))
    });
    if role != crate::cache::Role::Leader {
        crate::metrics::coalesced_wait();
    }
    loaded
}

/// With `--redirect-rate` set, a 429 for a client over its rate.
pub fn rate_limited(app: &App, peer: std::net::SocketAddr, headers: &http::HeaderMap) -> Option<Response<Body>> {
    let limit = app.access.redirect_rate.as_ref()?;
    let wait = limit.check(app.access.client_ip(peer, headers)).err()?;
    Some(super::problem::Problem::too_many_requests(wait).into_response())
}

fn problem(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, PROBLEM_JSON);
    resp
}
