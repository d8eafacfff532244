//! Request bodies: read within a size limit, after the headers are
//! checked, and marked as read so that a refusal before the body closes
//! the connection; plus the empty response.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::problem::{Body, Problem};
use super::App;

/// Marks, through the request's extensions, that its body was read.
#[derive(Clone)]
pub(super) struct BodyRead(pub(super) Arc<std::sync::atomic::AtomicBool>);

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

pub(super) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Problem::invalid("body", "must be a JSON object")),
        Err(e) => Err(Problem::invalid("body", format!("is not valid JSON: {e}"))),
    }
}
