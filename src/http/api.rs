//! The API's front door: every path but a redirect comes here, is routed,
//! authorized and rate-limited, and goes to the file that handles it
//! (`links`, `stats`, `health`, `internal`, the web UI); the request's
//! metric is counted here, once.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, BodyRead};
use super::problem::{Body, Problem};
use super::router::{route, Route};
use super::{auth, health, links, App};
use crate::config::Switch;
use crate::metrics;

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
        Route::Health => Ok(health::alive()),
        Route::Ready => Ok(health::ready(app)),
        Route::Metrics => Ok(health::metrics(app)),
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
            auth::authorize(app, peer, req.headers())?;
            if route == Route::Links && req.method() == Method::POST {
                if let Some(limit) = &app.access.create_rate {
                    limit.check(app.access.client_ip(peer, req.headers())).map_err(Problem::too_many_requests)?;
                }
            }
            // Every branch but the create is boxed: the future of this
            // function is as large as its largest branch, and hyper's
            // service moves it into a box of its own on every request.
            match (route, req.method().clone()) {
                (Route::Links, Method::POST) => links::create(app, req).await,
                (Route::Links, _) => Box::pin(links::list(app, &req)).await,
                (Route::LinksBatch, _) => Box::pin(links::batch(app, peer, req)).await,
                (Route::Link(code), Method::GET | Method::HEAD) => Box::pin(links::get(app, code)).await,
                (Route::Link(code), Method::PATCH) => {
                    let code = code.to_owned();
                    Box::pin(links::patch(app, &code, req)).await
                }
                (Route::Link(code), _) => {
                    let code = code.to_owned();
                    Box::pin(app.links.delete(&code)).await?;
                    Ok(body::empty(StatusCode::NO_CONTENT))
                }
                (Route::HotStats, _) => super::stats::hot(app, &req),
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
