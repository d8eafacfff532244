//! Who may call the API: a client with a configured API key, or, when no
//! key is configured, a loopback client.

use std::net::SocketAddr;

use http::{header, HeaderMap, StatusCode};

use super::problem::Problem;
use super::App;

/// With keys configured, a valid `Authorization: Bearer KEY`; without, a
/// loopback client.
pub(super) fn authorize(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Problem> {
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
