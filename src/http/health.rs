//! `/healthz`, `/readyz` and `/metrics`: what load balancers and
//! Prometheus ask, answered without authentication.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::json::json;
use super::problem::{Body, Problem};
use super::App;

/// The process answers.
pub(super) fn alive() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// The Prometheus text of every metric.
pub(super) fn metrics(app: &App) -> Response<Body> {
    let links = app.links.stores().iter().map(|s| s.stats().links).sum();
    let text = app.metrics.render(links, app.cache.len(), app.cache.bytes());
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

pub(super) fn ready(app: &App) -> Response<Body> {
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
