//! Maps method and path to a route without allocating.
//!
//! Everything that is not a fixed server path and looks like a code is a
//! redirect; the API lives under `/api/v1/`, the web UI under `/ui/` (so
//! `ui` is a reserved alias, see `code::RESERVED`).

use http::Method;

use crate::code::{is_code_byte, MAX_ALIAS_LEN};

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Redirect(&'a str),
    Health,
    Ready,
    Metrics,
    Links,
    LinksBatch,
    Link(&'a str),
    LinkStats(&'a str),
    LinkQr(&'a str),
    Stats,
    HotStats,
    /// `GET /`: the UI or `--root-redirect`.
    Root,
    /// The web UI: what follows `/ui` in the path (`""` for `/ui` itself).
    Ui(&'a str),
    Cluster,
    ClusterMember(&'a str),
    /// Node-to-node requests under `/internal/v1/`.
    Internal(&'a str),
    NotFound,
}

impl Route<'_> {
    /// The methods a route answers, for 405's `Allow`.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Redirect(_)
            | Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::HotStats
            | Route::Stats
            | Route::LinkStats(_)
            | Route::LinkQr(_)
            | Route::Root
            | Route::Ui(_) => "GET, HEAD",
            Route::Links => "GET, HEAD, POST",
            Route::LinksBatch => "POST",
            Route::Link(_) => "GET, HEAD, PATCH, DELETE",
            Route::Cluster => "GET, HEAD",
            Route::ClusterMember(_) => "DELETE",
            Route::NotFound | Route::Internal(_) => "",
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        match self {
            Route::Redirect(_)
            | Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::HotStats
            | Route::Stats
            | Route::LinkStats(_)
            | Route::LinkQr(_)
            | Route::Root
            | Route::Ui(_) => method == Method::GET || method == Method::HEAD,
            Route::Links => method == Method::GET || method == Method::HEAD || method == Method::POST,
            Route::LinksBatch => method == Method::POST,
            Route::Link(_) => method == Method::GET || method == Method::HEAD || method == Method::PATCH || method == Method::DELETE,
            Route::Cluster => method == Method::GET || method == Method::HEAD,
            Route::ClusterMember(_) => method == Method::DELETE,
            Route::NotFound | Route::Internal(_) => true,
        }
    }

    /// A name for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Redirect(_) => "redirect",
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Metrics => "metrics",
            Route::Links => "links",
            Route::LinksBatch => "links_batch",
            Route::Link(_) => "link",
            Route::LinkStats(_) => "link_stats",
            Route::LinkQr(_) => "link_qr",
            Route::Stats => "stats",
            Route::HotStats => "stats_hot",
            Route::Root => "root",
            Route::Ui(_) => "ui",
            Route::Cluster => "cluster",
            Route::ClusterMember(_) => "cluster_member",
            Route::Internal(_) => "internal",
            Route::NotFound => "not_found",
        }
    }
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ALIAS_LEN && s.bytes().all(is_code_byte)
}

pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix('/') else { return Route::NotFound };
    match rest {
        "healthz" => return Route::Health,
        "readyz" => return Route::Ready,
        "metrics" => return Route::Metrics,
        "" => return Route::Root,
        _ => {}
    }
    if let Some(ui) = rest.strip_prefix("ui") {
        if ui.is_empty() || ui.starts_with('/') {
            return Route::Ui(ui);
        }
    }
    if let Some(internal) = rest.strip_prefix("internal/v1/") {
        return Route::Internal(internal);
    }
    if let Some(api) = rest.strip_prefix("api/v1/") {
        return match api {
            "links" => Route::Links,
            "links:batch" => Route::LinksBatch,
            "stats" => Route::Stats,
            "stats/hot" => Route::HotStats,
            "cluster" => Route::Cluster,
            _ => match (api.strip_prefix("links/"), api.strip_prefix("cluster/members/")) {
                (Some(code), _) if is_code(code) => Route::Link(code),
                (Some(rest), _) => match rest.split_once('/') {
                    Some((code, "stats")) if is_code(code) => Route::LinkStats(code),
                    Some((code, "qr")) if is_code(code) => Route::LinkQr(code),
                    _ => Route::NotFound,
                },
                (_, Some(id)) if !id.is_empty() && !id.contains('/') => Route::ClusterMember(id),
                _ => Route::NotFound,
            },
        };
    }
    if is_code(rest) {
        Route::Redirect(rest)
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/abc1234"), Route::Redirect("abc1234"));
        assert_eq!(route("/my-alias_2"), Route::Redirect("my-alias_2"));
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/api/v1/links"), Route::Links);
        assert_eq!(route("/api/v1/links:batch"), Route::LinksBatch);
        assert_eq!(route("/api/v1/links/abc"), Route::Link("abc"));
        assert_eq!(route("/api/v1/links/a/b"), Route::NotFound);
        assert_eq!(route("/api/v1/links/abc/stats"), Route::LinkStats("abc"));
        assert_eq!(route("/api/v1/links/abc/qr"), Route::LinkQr("abc"));
        assert_eq!(route("/api/v1/links/a%20/qr"), Route::NotFound);
        assert_eq!(route("/api/v1/stats"), Route::Stats);
        assert_eq!(route("/api/v1/cluster"), Route::Cluster);
        assert_eq!(route("/api/v1/cluster/members/node-b"), Route::ClusterMember("node-b"));
        assert_eq!(route("/internal/v1/records/abc"), Route::Internal("records/abc"));
        assert_eq!(route("/internal"), Route::Redirect("internal"));
        assert_eq!(route("/api"), Route::Redirect("api"));
        assert_eq!(route("/"), Route::Root);
        assert_eq!(route("/ui"), Route::Ui(""));
        assert_eq!(route("/ui/"), Route::Ui("/"));
        assert_eq!(route("/ui/app.js"), Route::Ui("/app.js"));
        assert_eq!(route("/uix"), Route::Redirect("uix"));
        assert_eq!(route("/UI"), Route::Redirect("UI"));
        assert_eq!(route("/a%20b"), Route::NotFound);
        assert_eq!(route("/abc/"), Route::NotFound);
        assert_eq!(route(&format!("/{}", "a".repeat(65))), Route::NotFound);
    }
}
