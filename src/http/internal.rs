//! Node-to-node requests (`/internal/v1/...`, each carrying the cluster
//! key) and the cluster's admin API (`/api/v1/cluster`).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{empty, read_body_up_to};
use super::json::json;
use super::problem::{Body, Problem};
use super::App;
use crate::cluster::peer::KEY_HEADER;
use crate::cluster::wire::WireRecord;

/// Largest node-to-node request body (a batch of Raft entries, a chunk of
/// a snapshot's files): peers are trusted once they show the cluster key,
/// and the public `--max-body-bytes` may be small.
const INTERNAL_BODY_LIMIT: usize = 256 << 20;

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
    let group = || param("group").and_then(|g| g.parse::<u32>().ok()).ok_or_else(|| Problem::invalid("group", "must be a group number"));
    let (op, arg) = rest.split_once('/').unwrap_or((rest, ""));
    match (req.method().clone(), op) {
        (Method::GET, "ping") => Ok(empty(StatusCode::NO_CONTENT)),
        (Method::POST, "raft") if arg == "chunk" => {
            let g = group()?;
            let (id, name) = (param("id").unwrap_or_default(), param("name").unwrap_or_default());
            let offset = param("offset").and_then(|o| o.parse().ok()).ok_or_else(|| Problem::invalid("offset", "must be a byte offset"))?;
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            cluster.snapshot_chunk(g, id, name, offset, body).await.map_err(|e| Problem::invalid("body", e))?;
            Ok(raw_json(StatusCode::OK, b"null".to_vec()))
        }
        (Method::POST, "raft") => {
            let g = group()?;
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let answer = cluster.raft_message(arg, g, &body).await.map_err(|e| Problem::invalid("body", e))?;
            Ok(raw_json(StatusCode::OK, answer))
        }
        (Method::POST, "propose") => {
            let g = group()?;
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            let (status, answer) = cluster.propose_here(g, &body).await;
            Ok(raw_json(status, answer))
        }
        (Method::POST, "join") => {
            let body = read_body_up_to(req, true, INTERNAL_BODY_LIMIT).await?;
            cluster.join(&body).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, "records") => {
            let found = if param("linearizable").is_some() {
                match cluster.read_here(cluster.partition(arg), arg).await {
                    Ok(found) => found,
                    Err(leader) => return Ok(json(StatusCode::MISDIRECTED_REQUEST, &serde_json::json!({ "leader": leader }))),
                }
            } else if cluster.fresh_replica(cluster.partition(arg)) {
                cluster.store_of(arg).stored(arg)
            } else {
                return Ok(json(StatusCode::MISDIRECTED_REQUEST, &serde_json::json!({ "leader": null })));
            };
            match found {
                Some(s) => Ok(json(StatusCode::OK, &WireRecord::from(&s))),
                None => Err(Problem::not_found(&format!("link {arg}"))),
            }
        }
        (Method::POST, "invalidate") => {
            app.cache.invalidate(arg);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(Problem::not_found("this internal path")),
    }
}

fn raw_json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// `GET /api/v1/cluster`.
pub fn cluster_view(app: &App) -> Response<Body> {
    let Some(c) = app.links.cluster() else {
        return json(StatusCode::OK, &serde_json::json!({"node_id": null, "members": [], "rebalancing": false}));
    };
    json(StatusCode::OK, &c.view())
}

/// `DELETE /api/v1/cluster/members/{id}`: the member leaves the cluster and
/// its groups' voters move to the others.
pub async fn remove_member(app: &App, id: &str) -> Result<Response<Body>, Problem> {
    let Some(c) = app.links.cluster() else { return Err(Problem::not_found("clustering is off on this node; member")) };
    match c.remove_member(id).await {
        Ok(()) => Ok(empty(StatusCode::NO_CONTENT)),
        Err(reason) if reason.starts_with("no member") => Err(Problem::not_found(&format!("member {id}"))),
        Err(reason) => Err(Problem::new(StatusCode::CONFLICT, "member-is-self", "Conflict", reason)),
    }
}
