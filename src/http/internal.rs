//! Node-to-node requests (`/internal/v1/...`, each carrying the cluster
//! key) and the cluster's admin API (`/api/v1/cluster`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api::{empty, json, parse_patch, read_body_up_to};
use super::problem::{Body, Problem};
use super::App;
use crate::cluster::peer::KEY_HEADER;
use crate::cluster::wire::{ClickPush, SyncRequest, WireRecord};
use crate::cluster::{parse_mode, Cluster};
use crate::store::WriteError;

/// Largest node-to-node request body (a batch of click counts, a record):
/// peers are trusted once they show the cluster key, and the public
/// `--max-body-bytes` may be small.
const INTERNAL_BODY_LIMIT: usize = 64 << 20;

pub async fn handle(app: &App, rest: &str, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let Some(cluster) = app.links.cluster() else { return Err(Problem::not_found("this path")) };
    let given = req.headers().get(KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !super::access::constant_time_eq(given, cluster.cfg.cluster_key.as_bytes()) {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            format!("node-to-node requests need the cluster key in {KEY_HEADER}"),
        ));
    }
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (op, code) = rest.split_once('/').unwrap_or((rest, ""));
    match (req.method().clone(), op) {
        (Method::GET, "records") => match app.store.stored(code) {
            Some(s) => Ok(json(StatusCode::OK, &WireRecord::from(&s))),
            None => Err(Problem::not_found(&format!("link {code}"))),
        },
        (Method::PUT, "records") => {
            let mode = param("mode").as_deref().and_then(parse_mode).ok_or_else(|| Problem::invalid("mode", "must be create or newer"))?;
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let stored = serde_json::from_slice::<WireRecord>(&body)
                .ok()
                .and_then(WireRecord::into_stored)
                .filter(|s| s.code == code)
                .ok_or_else(|| Problem::invalid("body", "is not a record of this code"))?;
            // A peer is held to the public API's rules: a record it sends
            // must be one that API could have made here.
            if let Some(link) = &stored.link {
                match crate::target::validate(&link.url, app.cfg.links.max_url_bytes, app.own_host.as_deref()) {
                    Ok(form) if form == link.url => {}
                    Ok(_) => return Err(Problem::invalid("url", "is not in the stored (ASCII) form")),
                    Err(e) => return Err(Problem::invalid("url", e.to_string())),
                }
            }
            if param("coordinate").is_some() {
                cluster.coordinate_on_rt(stored, mode).await?;
                return Ok(json(StatusCode::OK, &serde_json::json!({"applied": true})));
            }
            let applied = app.store.apply(stored, mode).await?;
            app.cache.invalidate(code);
            if let Some(holder) = param("hint") {
                cluster.add_hint(&holder, code);
            }
            Ok(json(StatusCode::OK, &serde_json::json!({"applied": applied})))
        }
        (Method::PATCH, "links") => {
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let patch = parse_patch(app, &body)?;
            cluster.update_here_on_rt(code, patch).await?;
            record_of(app, code)
        }
        (Method::DELETE, "links") => {
            cluster.delete_here_on_rt(code).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::POST, "clicks") => {
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let push: ClickPush = serde_json::from_slice(&body).map_err(|e| Problem::invalid("body", e.to_string()))?;
            for (code, n) in push.clicks {
                app.store.add_clicks(&code, n);
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::POST, "sync") => {
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let sync: SyncRequest = serde_json::from_slice(&body).map_err(|e| Problem::invalid("body", e.to_string()))?;
            // A scan of up to SYNC_SCAN records: off the worker, which
            // keeps serving redirects meanwhile.
            let cluster = cluster.clone();
            let page = tokio::task::spawn_blocking(move || cluster.sync_page(&sync))
                .await
                .map_err(|e| Problem::from(WriteError::Unavailable(format!("sync page failed: {e}"))))?;
            Ok(json(StatusCode::OK, &page))
        }
        (Method::POST, "invalidate") => {
            app.cache.invalidate(code);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(Problem::not_found("this internal path")),
    }
}

fn record_of(app: &App, code: &str) -> Result<Response<Body>, Problem> {
    match app.store.stored(code) {
        Some(s) => Ok(json(StatusCode::OK, &WireRecord::from(&s))),
        None => Err(WriteError::NotFound.into()),
    }
}

/// `GET /api/v1/cluster`.
pub fn cluster_view(app: &App) -> Response<Body> {
    let Some(c) = app.links.cluster() else {
        return json(StatusCode::OK, &serde_json::json!({"node_id": null, "members": [], "rebalancing": false}));
    };
    json(StatusCode::OK, &view_of(c))
}

fn view_of(c: &Cluster) -> serde_json::Value {
    let view = c.view();
    let members: Vec<_> =
        view.members.iter().map(|m| serde_json::json!({"id": m.id, "addr": m.addr.to_string(), "state": m.state.name()})).collect();
    serde_json::json!({"node_id": c.me(), "members": members, "rebalancing": c.rebalancing()})
}

/// `DELETE /api/v1/cluster/members/{id}`: the member leaves the ring and
/// its share moves to the others.
pub async fn remove_member(app: &App, id: &str) -> Result<Response<Body>, Problem> {
    let Some(c) = app.links.cluster() else { return Err(Problem::not_found("clustering is off on this node; member")) };
    match c.remove_member(id).await {
        Ok(()) => Ok(empty(StatusCode::NO_CONTENT)),
        Err(reason) if reason.starts_with("no member") => Err(Problem::not_found(&format!("member {id}"))),
        Err(reason) => Err(Problem::new(StatusCode::CONFLICT, "member-is-self", "Conflict", reason)),
    }
}
