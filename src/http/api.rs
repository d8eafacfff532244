//! The JSON admin API, health, readiness and metrics.
//!
//! Each handler parses and validates its whole input before it touches the
//! store, so a refusal changes nothing; every refusal is a `Problem` that
//! names the field and the reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value};

use super::problem::{Body, Problem};
use super::router::{route, Route};
use super::App;
use crate::config::Switch;
use crate::links::ListCursor;
use crate::store::{Link, Lookup, NewLink, Order, Patch, WriteError};
use crate::{clock, input, metrics};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const MAX_BATCH: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");
/// Longest search (`q=`) accepted: the longest URL fits, and more is no search.
const MAX_QUERY_BYTES: usize = 8192;

/// Marks, through the request's extensions, that its body was read.
#[derive(Clone)]
struct BodyRead(Arc<std::sync::atomic::AtomicBool>);

pub async fn handle(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    // A refcount, not a copy: the route borrows the path while `req` moves on.
    let uri = req.uri().clone();
    let route = route(uri.path());
    let name = route.name();
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let read = BodyRead(Arc::default());
    if has_body {
        req.extensions_mut().insert(read.clone());
    }
    let mut resp = dispatch(&app, peer, route, req).await.unwrap_or_else(Problem::into_response);
    if has_body && !read.0.load(std::sync::atomic::Ordering::Relaxed) {
        // Refused before its body was read: hyper will close the connection
        // rather than read the rest, so say so.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    metrics::api_request(name, resp.status().as_u16());
    resp
}

async fn dispatch(app: &App, peer: SocketAddr, route: Route<'_>, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    if route == Route::NotFound {
        return Err(Problem::not_found(&format!("the path {}", req.uri().path())));
    }
    if !route.allows(req.method()) {
        return Err(Problem::method_not_allowed(route.allow()));
    }
    match route {
        Route::Health => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        Route::Ready => Ok(ready(app)),
        Route::Metrics => {
            let links = app.links.stores().iter().map(|s| s.stats().links).sum();
            let text = app.metrics.render(links, app.cache.len(), app.cache.bytes());
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            Ok(resp)
        }
        Route::Root => match (&app.cfg.root_redirect, app.cfg.ui) {
            (Some(to), _) => Ok(crate::ui::redirect(to.as_str())),
            (None, Switch::On) => Ok(crate::ui::redirect("/ui/")),
            (None, Switch::Off) => Err(Problem::not_found("the path /")),
        },
        Route::Ui(rest) if app.cfg.ui == Switch::On => {
            let auth = if app.access.loopback_open() { crate::ui::Auth::Loopback } else { crate::ui::Auth::ApiKey };
            Ok(crate::ui::serve(rest, req.headers(), auth))
        }
        Route::Ui(_) => Err(Problem::not_found(&format!("the path {} (the web UI is off: --ui off)", req.uri().path()))),
        Route::Redirect(_) | Route::NotFound => Err(Problem::not_found("this path")),
        Route::Internal(rest) => {
            let rest = rest.to_owned();
            Box::pin(super::internal::handle(app, &rest, req)).await
        }
        _ => {
            authorize(app, peer, req.headers())?;
            if route == Route::Links && req.method() == Method::POST {
                if let Some(limit) = &app.access.create_rate {
                    limit.check(app.access.client_ip(peer, req.headers())).map_err(Problem::too_many_requests)?;
                }
            }
            // Every branch but the create is boxed: the future of this
            // function is as large as its largest branch, and hyper's
            // service moves it into a box of its own on every request.
            match (route, req.method().clone()) {
                (Route::Links, Method::POST) => create(app, req).await,
                (Route::Links, _) => Box::pin(list(app, &req)).await,
                (Route::LinksBatch, _) => Box::pin(batch(app, peer, req)).await,
                (Route::Link(code), Method::GET | Method::HEAD) => Box::pin(get(app, code)).await,
                (Route::Link(code), Method::PATCH) => {
                    let code = code.to_owned();
                    Box::pin(patch(app, &code, req)).await
                }
                (Route::Link(code), _) => {
                    let code = code.to_owned();
                    Box::pin(app.links.delete(&code)).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                (Route::HotStats, _) => Ok(hot(app, &req)?),
                (Route::Stats, _) => super::stats::all(app, req.uri().query()),
                (Route::LinkStats(code), _) => {
                    let code = code.to_owned();
                    Box::pin(super::stats::link(app, &code, req.uri().query())).await
                }
                (Route::LinkQr(code), _) => {
                    let code = code.to_owned();
                    Box::pin(super::stats::qr(app, &code, &req)).await
                }
                (Route::Cluster, _) => Ok(super::internal::cluster_view(app)),
                (Route::ClusterMember(id), _) => {
                    let id = id.to_owned();
                    Box::pin(super::internal::remove_member(app, &id)).await
                }
                _ => Err(Problem::not_found("this path")),
            }
        }
    }
}

fn ready(app: &App) -> Response<Body> {
    let writes = match app.every_store().iter().find_map(|s| s.poisoned()) {
        None => "accepted".to_string(),
        Some(reason) => format!("refused: {reason}"),
    };
    if app.is_shutting_down() {
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", "Shutting down", "the server is draining connections");
        p.retry_after = Some(1);
        return p.into_response();
    }
    if let Some(node) = app.links.joining() {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "joining",
            "Joining",
            format!("node {node} is still pulling its share of the links"),
        );
        p.retry_after = Some(1);
        return p.into_response();
    }
    // Damage stays ready: every intact link is still served, and taking
    // the node out would not mend the file. It is for the operator to see.
    let damage: serde_json::Map<String, serde_json::Value> =
        app.every_store().iter().flat_map(|s| s.damage()).map(|(file, what)| (file.display().to_string(), what.into())).collect();
    json(StatusCode::OK, &serde_json::json!({"status": "ready", "writes": writes, "damage": damage}))
}

/// With keys configured, a valid `Authorization: Bearer KEY`; without, a
/// loopback client.
fn authorize(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Problem> {
    if app.access.loopback_open() {
        if peer.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "no API key is configured, so the API answers loopback clients only",
        ));
    }
    let given = headers.get(header::AUTHORIZATION).map(|v| {
        let v = v.as_bytes();
        match v.iter().position(|&b| b == b' ') {
            Some(i) if v[..i].eq_ignore_ascii_case(b"bearer") => v[i + 1..].trim_ascii(),
            _ => &[][..],
        }
    });
    let ok = given.is_some_and(|g| app.access.key_matches(g));
    if ok {
        return Ok(());
    }
    let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "send a valid API key as Authorization: Bearer KEY")
        .with_field("Authorization", if given.is_some() { "is not a valid Bearer key" } else { "is required" });
    p.www_authenticate = true;
    Err(p)
}

#[derive(Serialize)]
pub struct LinkView<'a> {
    code: &'a str,
    short_url: String,
    url: &'a str,
    created_at: String,
    expires_at: Option<String>,
    max_clicks: Option<u64>,
    redirect: u16,
    clicks: u64,
    disabled: bool,
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn view<'a>(app: &App, link: &'a Link) -> LinkView<'a> {
    view_in(&app.public_base, link)
}

fn view_in<'a>(public_base: &str, link: &'a Link) -> LinkView<'a> {
    LinkView {
        code: &link.code,
        short_url: format!("{public_base}{}", link.code),
        url: &link.url,
        created_at: rfc3339(link.created_ms),
        expires_at: (link.expires_ms != 0).then(|| rfc3339(link.expires_ms)),
        max_clicks: (link.max_clicks != 0).then_some(link.max_clicks),
        redirect: link.redirect,
        clicks: link.clicks,
        disabled: link.disabled,
    }
}

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    resp
}

/// One link as JSON: the bytes `json(.., &view(..))` would give, written
/// straight into one buffer of the right size (a create, get or patch
/// answers with this; a test holds the two to the same bytes).
fn link_json(public_base: &str, link: &Link) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + public_base.len() + 2 * link.code.len() + link.url.len());
    out.extend_from_slice(b"{\"code\":");
    json_str(&mut out, &[&link.code]);
    out.extend_from_slice(b",\"short_url\":");
    json_str(&mut out, &[public_base, &link.code]);
    out.extend_from_slice(b",\"url\":");
    json_str(&mut out, &[&link.url]);
    out.extend_from_slice(b",\"created_at\":");
    json_str(&mut out, &[&rfc3339(link.created_ms)]);
    out.extend_from_slice(b",\"expires_at\":");
    match link.expires_ms {
        0 => out.extend_from_slice(b"null"),
        ms => json_str(&mut out, &[&rfc3339(ms)]),
    }
    out.extend_from_slice(b",\"max_clicks\":");
    match link.max_clicks {
        0 => out.extend_from_slice(b"null"),
        n => json_int(&mut out, n),
    }
    out.extend_from_slice(b",\"redirect\":");
    json_int(&mut out, link.redirect.into());
    out.extend_from_slice(b",\"clicks\":");
    json_int(&mut out, link.clicks);
    out.extend_from_slice(if link.disabled { b",\"disabled\":true}" } else { b",\"disabled\":false}" });
    out
}

fn json_int(out: &mut Vec<u8>, n: u64) {
    let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
}

/// The parts as one JSON string, escaped as serde_json escapes.
fn json_str(out: &mut Vec<u8>, parts: &[&str]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for part in parts {
        let bytes = part.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]],
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

pub(super) fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Reads a JSON body within the size limit.
pub(super) fn read_body(app: &App, req: Request<Incoming>, json_only: bool) -> impl Future<Output = Result<Bytes, Problem>> {
    read_body_up_to(req, json_only, app.cfg.max_body_bytes)
}

/// `read_body` with its own size limit (node-to-node requests). Not an
/// `async fn`: the headers are checked before the future is made, so it
/// holds the body alone, not the whole request (a create's future is
/// moved through every level of the handler that awaits it).
pub(super) fn read_body_up_to(req: Request<Incoming>, json_only: bool, limit: usize) -> impl Future<Output = Result<Bytes, Problem>> {
    let checked = check_body_headers(req.headers(), json_only, limit);
    let read = req.extensions().get::<BodyRead>().cloned();
    let body = req.into_body();
    async move {
        checked?;
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                if let Some(r) = read {
                    r.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(collected.to_bytes())
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Problem::too_large("body", limit)),
            Err(e) => Err(Problem::invalid("body", format!("could not be read: {e}"))),
        }
    }
}

fn check_body_headers(headers: &HeaderMap, json_only: bool, limit: usize) -> Result<(), Problem> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        let is = |name: &str| ct.eq_ignore_ascii_case(name);
        let is_json = is("application/json") || ct.len() >= 5 && ct.as_bytes()[ct.len() - 5..].eq_ignore_ascii_case(b"+json");
        let is_lines = is("application/x-ndjson") || is("application/jsonl") || is("application/json-lines");
        if !(is_json || (!json_only && is_lines)) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send application/json",
            )
            .with_field("Content-Type", "must be application/json"));
        }
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Problem::too_large("body", limit));
    }
    Ok(())
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::invalid("body", "must be a JSON object")),
        Err(e) => Err(Problem::invalid("body", format!("is not valid JSON: {e}"))),
    }
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

async fn create(app: &App, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
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

async fn get(app: &App, code: &str) -> Result<Response<Body>, Problem> {
    match app.links.get(code).await? {
        Lookup::Live(link) => Ok(json_bytes(StatusCode::OK, link_json(&app.public_base, &link))),
        Lookup::Deleted => Err(Problem::gone(code)),
        Lookup::Missing => Err(Problem::not_found(&format!("link {code}"))),
        Lookup::Unavailable => {
            Err(crate::store::WriteError::Unavailable("the index is being rebuilt after damage; retry shortly".into()).into())
        }
    }
}

async fn patch(app: &App, code: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
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

async fn list(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
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

async fn batch(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
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

fn hot(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    let mut limit = 10;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if k == "limit" {
            limit = v
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| Problem::invalid("limit", "must be an integer from 1 to 100"))?;
        }
    }
    let window = app.hot.window();
    let top: Vec<_> = app
        .hot
        .top(limit)
        .into_iter()
        .map(|(code, count)| serde_json::json!({"code": code.as_str(), "requests": count, "per_second": count as f64 / window.as_secs_f64()}))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"window_seconds": window.as_secs(), "codes": top})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(code: &str, url: &str, expires_ms: i64, max_clicks: u64, disabled: bool) -> Link {
        Link {
            code: code.into(),
            url: url.into(),
            id: 7,
            created_ms: 1_764_601_774_123,
            expires_ms,
            max_clicks,
            redirect: 301,
            clicks: 42,
            disabled,
        }
    }

    #[test]
    fn link_json_is_what_serde_json_writes() {
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        let links = [
            link("abc123", "https://example.com/a?b=c#d", 0, 0, false),
            link("my-alias", "https://example.com/\"quoted\"\\back", 1_800_000_000_000, 5, true),
            link("x", &every_byte, 1_800_000_000_500, 1 << 53, false),
            link("x", "https://bücher.example/ä", 0, 1, true),
        ];
        for base in ["http://127.0.0.1:8080/", "https://sho.rt/\"odd\"/"] {
            for l in &links {
                let want = serde_json::to_vec(&view_in(base, l)).unwrap();
                assert_eq!(String::from_utf8(link_json(base, l)).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }
}
