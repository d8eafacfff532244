//! The web UI against the real `shortd` binary: first what its HTTP answers
//! carry (the embedded files, compression, ETags, security headers, `/`
//! and `--ui off`, the reserved alias, the list's search and order), then
//! the page itself in headless Chromium, driven by selenium through
//! `tests/browser/ui_scenario.py` (sign-in, create, search, detail with QR
//! code and chart, edit, disable, delete, dashboard, keyboard, 375 px,
//! axe-core, no console error, no request off 127.0.0.1).
//!
//! The browser test installs what is missing, once, under the target
//! folder: Chromium and chromedriver with apt-get, selenium from PyPI into
//! a venv, axe-core from npm; where that cannot be done it fails under
//! `CI=true` and says SKIPPED elsewhere. `SHORTD_SCREENSHOTS=docs/img`
//! makes it save the README's screenshots.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::tools::{apt_binaries, npm_package, python_venv, run, text};
use common::{Body, Server};
use serde_json::{json, Value};

const KEY: &str = "ui-test-key-0123";
/// The whole browser scenario, a bound on a hung browser (it takes about
/// 20 s on the project's machine).
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);
const AXE_VERSION: &str = "4.10.3";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

fn auth() -> String {
    format!("Bearer {KEY}")
}

/// A GET with these headers, the body as bytes (it may be gzip).
fn get_raw(s: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = common::agent().get(&s.url(path));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    let heads = resp.headers_names().into_iter().map(|n| (n.to_ascii_lowercase(), resp.header(&n).unwrap_or("").to_string())).collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).expect("reading a body");
    (status, heads, body)
}

fn header<'a>(heads: &'a [(String, String)], name: &str) -> Option<&'a str> {
    heads.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("a gzip body");
    out
}

fn assert_secure(heads: &[(String, String)], what: &str) {
    let csp = header(heads, "content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(header(heads, "x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(header(heads, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(header(heads, "referrer-policy"), Some("no-referrer"), "{what}");
}

#[test]
fn the_ui_is_served_from_the_binary_compressed_cached_and_locked_down() {
    let s = Server::start(&["--api-key", KEY]);
    let root = s.get("/");
    assert_eq!((root.status, root.header("location")), (302, Some("/ui/")), "{root:?}");
    let bare = s.get("/ui");
    assert_eq!((bare.status, bare.header("location")), (302, Some("/ui/")), "{bare:?}");

    let (status, plain, html) = get_raw(&s, "/ui/", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&plain, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&plain, "content-encoding"), None, "gzip sent to a client that did not ask for it");
    assert_eq!(header(&plain, "cache-control"), Some("no-cache"));
    assert_secure(&plain, "/ui/");
    let html = String::from_utf8(html).expect("UTF-8 HTML");
    assert!(html.contains(r#"<html lang="en">"#) && html.contains("<title>shortd</title>"), "{html}");
    // Nothing from another host, and no inline script for the CSP to allow.
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let value = &html[at + attr.len()..];
            assert!(value.starts_with("/ui/") || value.starts_with('#'), "{attr}{}", &value[..value.len().min(60)]);
        }
    }
    assert!(!html.contains("<script>") && !html.contains(" onclick="), "inline script in the page");

    let (status, gz, body) = get_raw(&s, "/ui/app.js", &[("Accept-Encoding", "br, gzip;q=0.8")]);
    assert_eq!(status, 200);
    assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
    assert_eq!(header(&gz, "vary"), Some("Accept-Encoding"));
    assert_eq!(header(&gz, "content-type"), Some("text/javascript; charset=utf-8"));
    let (_, raw_heads, raw) = get_raw(&s, "/ui/app.js", &[("Accept-Encoding", "gzip;q=0")]);
    assert_eq!(header(&raw_heads, "content-encoding"), None);
    assert!(body.len() < raw.len() / 2, "gzip {} bytes against {} raw", body.len(), raw.len());
    assert_eq!(gunzip(&body), raw, "the gzip form is another file");
    assert_secure(&gz, "/ui/app.js");

    let etag = header(&gz, "etag").expect("an ETag").to_string();
    assert_eq!(header(&raw_heads, "etag"), Some(etag.as_str()), "one ETag whatever the encoding");
    let (status, heads, body) = get_raw(&s, "/ui/app.js", &[("If-None-Match", &etag), ("Accept-Encoding", "gzip")]);
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&heads, "etag"), Some(etag.as_str()));
    let (status, _, _) = get_raw(&s, "/ui/app.js", &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(status, 200);

    for (path, mime) in [("/ui/app.css", "text/css; charset=utf-8"), ("/ui/favicon.svg", "image/svg+xml")] {
        let (status, heads, _) = get_raw(&s, path, &[]);
        assert_eq!((status, header(&heads, "content-type")), (200, Some(mime)), "{path}");
    }
    let (status, heads, _) = get_raw(&s, "/ui/nothing-here.js", &[]);
    assert_eq!(status, 404);
    assert_secure(&heads, "a missing UI file");
    let cfg = s.get("/ui/config.json");
    assert_eq!((cfg.status, cfg.json()), (200, json!({"auth": "api-key"})));
    // The files are public; the API behind them is not.
    s.get("/api/v1/links").problem(401);

    let open = Server::start(&[]);
    assert_eq!(open.get("/ui/config.json").json(), json!({"auth": "loopback"}));
}

#[test]
fn ui_off_and_root_redirect() {
    let off = Server::start(&["--ui", "off"]);
    off.get("/").problem(404);
    off.get("/ui/").problem(404);
    off.get("/ui/app.js").problem(404);

    let elsewhere = Server::start(&["--root-redirect", "https://www.example.com/about"]);
    let r = elsewhere.get("/");
    assert_eq!((r.status, r.header("location")), (302, Some("https://www.example.com/about")));
    assert_eq!(elsewhere.get("/ui/").status, 200, "the UI is still on");

    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_shortd"));
    serve.args(["serve", "--listen", "127.0.0.1:0", "--root-redirect", "ftp://example.com/", "--data-dir"]).arg(dir.path());
    let bad = run(&mut serve, Duration::from_secs(20));
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("--root-redirect"), "{}", text(&bad.stderr));
}

#[test]
fn ui_is_a_reserved_alias() {
    let s = Server::start(&[]);
    for alias in ["ui", "UI"] {
        s.post_json("/api/v1/links", &json!({"url": "https://example.com/", "alias": alias})).field_problem(400, "alias");
    }
    // Codes that only start with "ui" are links like any other.
    s.create(json!({"url": "https://example.com/uix", "alias": "uix"}));
    let r = s.get("/uix");
    assert_eq!((r.status, r.header("location")), (302, Some("https://example.com/uix")));
}

fn page(s: &Server, query: &str) -> Value {
    let r = s.send("GET", &format!("/api/v1/links?{query}"), &[("Authorization", &auth())], Body::None);
    assert_eq!(r.status, 200, "{query}: {r:?}");
    r.json()
}

fn codes(page: &Value) -> Vec<String> {
    page["links"].as_array().expect("links").iter().map(|l| l["code"].as_str().expect("a code").to_string()).collect()
}

#[test]
fn search_matches_code_prefixes_and_url_parts_newest_first_in_pages() {
    let s = Server::start(&["--api-key", KEY]);
    let make = |url: &str, alias: Option<&str>| {
        let mut body = json!({"url": url});
        if let Some(a) = alias {
            body["alias"] = json!(a);
        }
        let r = s.send_json("POST", "/api/v1/links", &[("Authorization", &auth())], &body);
        assert_eq!(r.status, 201, "{r:?}");
        r.json()["code"].as_str().expect("a code").to_string()
    };
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(make(&format!("https://shop.example/item/{i}?ref=news"), None));
    }
    let promo = make("https://blog.example/2026/launch", Some("promo-launch"));
    let promo2 = make("https://blog.example/2026/pricing", Some("promo-pricing"));
    let other = make("https://docs.example/PROMO", Some("manual"));

    let all = page(&s, "order=newest");
    let mut newest_first: Vec<String> = made.iter().chain([&promo, &promo2, &other]).cloned().collect();
    newest_first.reverse();
    assert_eq!(codes(&all), newest_first);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(codes(&page(&s, "")), newest_first.iter().rev().cloned().collect::<Vec<_>>(), "the default order stays the log's");

    // A code prefix, case-sensitive like codes; not a code's middle.
    assert_eq!(codes(&page(&s, "q=promo-&order=newest")), [promo2.clone(), promo.clone()]);
    assert!(codes(&page(&s, "q=launch")).contains(&promo), "URL part");
    assert_eq!(codes(&page(&s, "q=-launch")), Vec::<String>::new(), "the middle of a code is no match");
    // A URL substring, case-sensitive.
    assert_eq!(codes(&page(&s, "q=PROMO")), [other]);
    assert_eq!(codes(&page(&s, "q=blog.example%2F2026")), [promo.clone(), promo2.clone()]);

    // Paging a search with its cursor, both orders: every match once.
    for order in ["oldest", "newest"] {
        let mut seen = Vec::new();
        let mut query = format!("q=ref%3Dnews&limit=3&order={order}");
        loop {
            let p = page(&s, &query);
            seen.extend(codes(&p));
            match p["next_cursor"].as_str() {
                Some(c) => query = format!("q=ref%3Dnews&limit=3&order={order}&cursor={c}"),
                None => break,
            }
            assert!(seen.len() <= made.len(), "{order}: paging does not end: {seen:?}");
        }
        let mut want = made.clone();
        if order == "newest" {
            want.reverse();
        }
        assert_eq!(seen, want, "{order}");
    }

    // A changed link is found by its new URL only; a deleted one not at all.
    let r = s.send_json(
        "PATCH",
        &format!("/api/v1/links/{}", made[0]),
        &[("Authorization", &auth())],
        &json!({"url": "https://moved.example/"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(codes(&page(&s, "q=moved.example")), [made[0].clone()]);
    assert!(!codes(&page(&s, "q=ref%3Dnews")).contains(&made[0]));
    let r = s.send("DELETE", &format!("/api/v1/links/{}", made[1]), &[("Authorization", &auth())], Body::None);
    assert_eq!(r.status, 204);
    assert!(!codes(&page(&s, "q=ref%3Dnews")).contains(&made[1]));

    let r = s.send("GET", "/api/v1/links?order=sideways", &[("Authorization", &auth())], Body::None);
    r.field_problem(400, "order");
    let long = "a".repeat(8193);
    let r = s.send("GET", &format!("/api/v1/links?q={long}"), &[("Authorization", &auth())], Body::None);
    r.field_problem(400, "q");
}

/// Chromium and chromedriver, selenium and axe-core, installed if missing;
/// `None` (after `skip_or_fail`) when they cannot be had on this machine.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    apt_binaries(&["chromium", "chromedriver"], &["chromium", "chromium-driver"])?;
    let venv = python_venv("ui-venv", &["selenium>=4.20,<5"], "bin/python")
        .filter(|v| run(Command::new(v.join("bin/python")).args(["-c", "import selenium"]), Duration::from_secs(30)).status.success())
        .or_else(|| {
            // A venv left without selenium by an interrupted install.
            let _ = std::fs::remove_dir_all(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-venv"));
            python_venv("ui-venv", &["selenium>=4.20,<5"], "bin/python")
        })?;
    let axe = npm_package("ui-npm", "axe-core", AXE_VERSION, "axe.min.js")?;
    Some((venv.join("bin/python"), axe.join("axe.min.js")))
}

#[test]
fn the_ui_works_in_a_real_browser() {
    // Without them, browser_tools has failed the test (CI) or said SKIPPED.
    let Some((python, axe)) = browser_tools() else { return };
    let s = Server::start(&["--api-key", KEY]);
    let mut codes = Vec::new();
    for url in ["https://example.com/docs/alpha-7f3a", "https://example.com/blog/beta-91c2", "https://example.com/shop/gamma-5d0e"] {
        let r = s.send_json("POST", "/api/v1/links", &[("Authorization", &auth())], &json!({"url": url}));
        assert_eq!(r.status, 201, "{r:?}");
        codes.push(r.json()["code"].as_str().expect("a code").to_string());
    }
    // Clicks from two browsers, so the detail has a series and breakdowns
    // to show; the scenario starts once the stats API counts them.
    for (agent, referer) in
        [(FIREFOX, "https://news.example.com/item?id=1"), (FIREFOX, "https://news.example.com/"), (CHROME, "https://mail.example.org/")]
    {
        let r = s.send("GET", &format!("/{}", codes[0]), &[("User-Agent", agent), ("Referer", referer)], Body::None);
        assert_eq!(r.status, 302, "{r:?}");
    }
    let counted = common::poll_until(Duration::from_secs(10), || {
        let r = s.send("GET", &format!("/api/v1/links/{}/stats", codes[0]), &[("Authorization", &auth())], Body::None);
        (r.status == 200 && r.json()["clicks"] == 3).then_some(())
    });
    assert!(counted.is_some(), "the stats API never counted the 3 clicks");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui_scenario.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).env("SHORTD_URL", &s.base).env("SHORTD_KEY", KEY).env("SHORTD_CODES", codes.join(",")).env("AXE_JS", &axe);
    if let Some(dir) = std::env::var_os("SHORTD_SCREENSHOTS") {
        cmd.env("SCREENSHOTS", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir));
    }
    let out = run(&mut cmd, SCENARIO_LIMIT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "the browser scenario failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}", out.status, s.log());
    assert!(stdout.contains("ui scenario passed"), "{stdout}");
}
