//! The link handlers: create, batch create, get, patch, delete and list
//! (`/api/v1/links...`).
//!
//! Each handler parses and validates its whole input before it touches the
//! store, so a refusal changes nothing; every refusal is a `Problem` that
//! names the field and the reason.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::body::{parse_object, read_body};
use super::json::{json, json_bytes, link_json, view_in, LinkView};
use super::problem::{Body, Problem};
use super::App;
use crate::links::ListCursor;
use crate::store::{Link, Lookup, NewLink, Order, Patch, WriteError};
use crate::{clock, input, metrics};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const MAX_BATCH: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");
/// Longest search (`q=`) accepted: the longest URL fits, and more is no search.
const MAX_QUERY_BYTES: usize = 8192;

pub fn view<'a>(app: &App, link: &'a Link) -> LinkView<'a> {
    view_in(&app.public_base, link)
}

/// The rules a target URL must meet on this server.
fn rules(app: &App) -> input::Rules<'_> {
    input::Rules { max_url_bytes: app.cfg.links.max_url_bytes, own_host: app.own_host.as_deref(), blocklist: &app.access }
}

fn refused(e: input::Invalid) -> Problem {
    Problem::invalid(e.field, e.reason)
}

/// Checks a create request body; pure, so the bulk paths share it.
pub fn parse_create(app: &App, obj: &Map<String, Value>, now: i64) -> Result<NewLink, Problem> {
    input::new_link(obj, &rules(app), now, input::Source::Api).map_err(refused)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let bad = || Problem::invalid("Idempotency-Key", format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"));
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

pub(super) async fn create(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let idem = idempotency_key(req.headers())?;
    let body = read_body(app, req, true).await?;
    let fast = if idem.is_none() { input::plain_create(&body, &rules(app)) } else { None };
    let new = match fast {
        Some(new) => new,
        None => full_create(app, &body, idem)?,
    };
    let created = app.links.create(new).await?;
    if !created.replayed {
        metrics::link_created();
    }
    let mut resp = json_bytes(StatusCode::CREATED, link_json(&app.public_base, &created.link));
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/links/{}", created.link.code)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if created.replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A create body in any shape `new_link` takes, with its idempotency key.
fn full_create(app: &App, body: &[u8], idem: Option<String>) -> Result<NewLink, Problem> {
    let obj = parse_object(body)?;
    let mut new = parse_create(app, &obj, clock::now_ms())?;
    if let Some(key) = idem {
        // Canonical form: sorted keys (serde_json's map), no whitespace, and
        // explicit nulls dropped, since they mean the same as absence.
        let meaningful: Map<String, Value> = obj.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let canonical = serde_json::to_vec(&meaningful).unwrap_or_default();
        new.idempotency = Some((key, xxhash_rust::xxh3::xxh3_64(&canonical)));
    }
    Ok(new)
}

pub(super) async fn get(app: &App, code: &str) -> Result<Response<Body>, Problem> {
    match app.links.get(code).await? {
        Lookup::Live(link) => Ok(json_bytes(StatusCode::OK, link_json(&app.public_base, &link))),
        Lookup::Deleted => Err(Problem::gone(code)),
        Lookup::Missing => Err(Problem::not_found(&format!("link {code}"))),
        Lookup::Unavailable => {
            Err(crate::store::WriteError::Unavailable("the index is being rebuilt after damage; retry shortly".into()).into())
        }
    }
}

pub(super) async fn patch(app: &App, code: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let body = read_body(app, req, true).await?;
    let p = parse_patch(app, &body)?;
    let link = app.links.update(code, p, body).await?;
    Ok(json_bytes(StatusCode::OK, link_json(&app.public_base, &link)))
}

/// A PATCH body as a change; refuses what the API refuses.
pub fn parse_patch(app: &App, body: &[u8]) -> Result<Patch, Problem> {
    let obj = parse_object(body)?;
    input::patch(&obj, &rules(app), clock::now_ms()).map_err(refused)
}

pub(super) async fn list(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    let clustered = app.links.cluster().is_some();
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE;
    let mut order = Order::Oldest;
    let mut q = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "cursor" if !v.is_empty() => {
                cursor = Some(
                    ListCursor::decode(&v, clustered).ok_or_else(|| Problem::invalid("cursor", "is not a cursor from an earlier page"))?,
                )
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| Problem::invalid("limit", format!("must be an integer from 1 to {MAX_PAGE}")))?
            }
            "order" => {
                order = match v.as_ref() {
                    "oldest" => Order::Oldest,
                    "newest" => Order::Newest,
                    _ => return Err(Problem::invalid("order", "must be oldest or newest")),
                }
            }
            "q" if !v.is_empty() => {
                if v.len() > MAX_QUERY_BYTES {
                    return Err(Problem::invalid("q", format!("must be at most {MAX_QUERY_BYTES} bytes")));
                }
                q = Some(v.into_owned());
            }
            _ => {}
        }
    }
    let (links, next) = if q.is_none() && order == Order::Oldest && !clustered {
        app.links.list(None, order, cursor, limit)
    } else {
        // A search, a newest-first page or a cluster's page may read the
        // whole log: off the worker thread, which keeps serving redirects
        // meanwhile.
        let links = app.links.clone();
        tokio::task::spawn_blocking(move || links.list(q.as_deref(), order, cursor, limit))
            .await
            .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", format!("the search failed: {e}")))?
    };
    let views: Vec<_> = links.iter().map(|l| view(app, l)).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"links": views, "next_cursor": next.map(|c| c.encode(clustered))})))
}

pub(super) async fn batch(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let client = app.access.client_ip(peer, req.headers());
    let body = read_body(app, req, false).await?;
    let text = std::str::from_utf8(&body).map_err(|_| Problem::invalid("body", "must be UTF-8 JSON lines"))?;
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
    if lines.len() > MAX_BATCH {
        return Err(Problem::invalid("body", format!("holds more than {MAX_BATCH} links; split it")));
    }
    if let (Some(limit), Some(n)) = (&app.access.create_rate, std::num::NonZeroU32::new(lines.len() as u32)) {
        match limit.check_n(client, n) {
            Ok(()) => {}
            Err(Duration::MAX) => return Err(Problem::invalid("body", "holds more links than --create-burst allows at once; split it")),
            Err(wait) => return Err(Problem::too_many_requests(wait)),
        }
    }
    let now = clock::now_ms();
    let mut pending = Vec::with_capacity(lines.len());
    for &(line_no, line) in &lines {
        let parsed = parse_object(line.as_bytes()).and_then(|obj| parse_create(app, &obj, now));
        pending.push((
            line_no,
            match parsed {
                Ok(new) => app.links.create_queued(new).await.map_err(Problem::from),
                Err(p) => Err(p),
            },
        ));
    }
    let mut results = Vec::with_capacity(pending.len());
    let mut created = 0;
    for (line_no, p) in pending {
        let outcome = match p {
            Ok(rx) => rx.await.unwrap_or_else(|_| Err(WriteError::Unavailable("the writer has stopped".into()))).map_err(Problem::from),
            Err(p) => Err(p),
        };
        results.push(match outcome {
            Ok(c) => {
                created += 1;
                metrics::link_created();
                serde_json::json!({"status": 201, "link": view(app, &c.link)})
            }
            Err(mut p) => {
                p.detail = format!("line {line_no}: {}", p.detail);
                serde_json::json!({"status": p.status, "problem": p})
            }
        });
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"created": created, "results": results})))
}
