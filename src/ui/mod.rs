//! The web UI: plain HTML, CSS and JavaScript from `src/ui/assets/`,
//! gzipped at build time (`build.rs`) and embedded in the binary, so the
//! server needs no files and the browser loads nothing from another host.
//!
//! Every answer carries the same security headers (a CSP that allows only
//! this origin's scripts and styles, no framing, no sniffing, no
//! referrer), an ETag and `Cache-Control: no-cache`: asset names carry no
//! hash, so the browser revalidates each load and gets a 304 when nothing
//! changed. The only dynamic file is `config.json`, which tells the page
//! whether to ask for an API key. See docs/ui.md.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// One embedded file.
pub struct Asset {
    /// Below `/ui`, with its leading slash.
    pub path: &'static str,
    pub mime: &'static str,
    pub etag: &'static str,
    pub raw: &'static [u8],
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// `img-src blob:` lets the page show QR codes it fetched with its key
/// (an `<img src>` cannot send an `Authorization` header, and a key in a
/// URL would leak into logs).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; \
                       font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const CACHE_CONTROL: &str = "no-cache";

/// How the page signs in, for `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// API keys are configured: the page asks for one.
    ApiKey,
    /// No key configured: the API answers loopback clients without one.
    Loopback,
}

/// The answer to `GET /ui{rest}`.
pub fn serve(rest: &str, request: &HeaderMap, auth: Auth) -> Response<Full<Bytes>> {
    let mut resp = match rest {
        "" => redirect("/ui/"),
        "/config.json" => {
            let body = match auth {
                Auth::ApiKey => &br#"{"auth":"api-key"}"#[..],
                Auth::Loopback => &br#"{"auth":"loopback"}"#[..],
            };
            let mut r = Response::new(Full::new(Bytes::from_static(body)));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            let path = if rest == "/" { "/index.html" } else { rest };
            match ASSETS.iter().find(|a| a.path == path) {
                Some(asset) => file(asset, request),
                None => {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"no such file in the web UI\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                    r
                }
            }
        }
    };
    secure(resp.headers_mut());
    resp
}

/// A 302 to `location`, for `/ui` and `GET /`.
pub fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn file(asset: &'static Asset, request: &HeaderMap) -> Response<Full<Bytes>> {
    let etag = HeaderValue::from_static(asset.etag);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|v| v.to_str().is_ok_and(|list| list.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == asset.etag)));
    let gzip = accepts_gzip(request) && asset.gzip.len() < asset.raw.len();
    let mut r = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Full::new(Bytes::from_static(if gzip { asset.gzip } else { asset.raw })))
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    r
}

/// True when `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    request.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// The headers every UI answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip, deflate, br")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "br;q=1.0, GZIP;q=0.5")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_asset_is_embedded_with_its_gzip_form() {
        assert!(ASSETS.iter().any(|a| a.path == "/index.html"));
        for a in ASSETS {
            assert!(!a.raw.is_empty() && a.gzip.starts_with(&[0x1f, 0x8b]), "{}", a.path);
        }
    }
}
