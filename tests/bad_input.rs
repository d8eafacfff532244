//! Bad requests, table-driven: each row is a request a careless or hostile
//! client might send and the refusal a user should see. Every refusal must
//! be an RFC 9457 `application/problem+json` body with `type`, `title`,
//! `status` and `detail`, naming the `field` and the `reason`; and after all
//! of them the server must hold exactly the links it held before.

mod common;

use common::{Body, Resp, Server};
use serde_json::{json, Value};

enum RowBody {
    None,
    Bytes(Vec<u8>),
    Chunked(Vec<u8>),
}

struct Row {
    what: String,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: RowBody,
    status: u16,
    field: &'static str,
}

impl Row {
    /// A JSON request (`Content-Type: application/json`) answered 400.
    fn json(what: impl Into<String>, method: &'static str, path: &str, body: impl Into<Vec<u8>>, field: &'static str) -> Row {
        Row {
            what: what.into(),
            method,
            path: path.to_string(),
            headers: vec![("Content-Type", "application/json".into())],
            body: RowBody::Bytes(body.into()),
            status: 400,
            field,
        }
    }

    /// `POST /api/v1/links` with this body, answered 400 about `field`.
    fn create(what: impl Into<String>, body: impl Into<Vec<u8>>, field: &'static str) -> Row {
        Row::json(what, "POST", "/api/v1/links", body, field)
    }

    /// A create whose only fault is its `url`.
    fn url(what: impl Into<String>, url: &str) -> Row {
        Row::create(what, json!({ "url": url }).to_string(), "url")
    }

    /// A create with a valid url and one more field.
    fn with(what: impl Into<String>, key: &str, value: Value, field: &'static str) -> Row {
        let mut obj = json!({ "url": "https://example.com/ok" });
        obj[key] = value;
        Row::create(what, obj.to_string(), field)
    }

    fn patch(what: impl Into<String>, body: impl Into<Vec<u8>>, field: &'static str) -> Row {
        Row::json(what, "PATCH", &format!("/api/v1/links/{EXISTING}"), body, field)
    }

    fn list(what: impl Into<String>, query: &str, field: &'static str) -> Row {
        Row {
            what: what.into(),
            method: "GET",
            path: format!("/api/v1/links?{query}"),
            headers: vec![],
            body: RowBody::None,
            status: 400,
            field,
        }
    }

    fn status(mut self, status: u16) -> Row {
        self.status = status;
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Row {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into()));
        self
    }

    fn chunked(mut self) -> Row {
        if let RowBody::Bytes(b) = std::mem::replace(&mut self.body, RowBody::None) {
            self.body = RowBody::Chunked(b);
        }
        self
    }
}

/// The alias of the one link that exists while the rows run.
const EXISTING: &str = "existing";
const EXISTING_URL: &str = "https://example.com/existing";
/// The default `--max-url-bytes`.
const MAX_URL: usize = 8192;
/// `--max-body-bytes` of the server that checks the body limit.
const SMALL_BODY: usize = 2048;

/// Checks one answer; returns what is wrong with it.
fn check(row: &Row, r: &Resp) -> Result<(), String> {
    if r.status != row.status {
        return Err(format!("status {} instead of {}", r.status, row.status));
    }
    let ct = r.header("content-type").unwrap_or("");
    if !ct.starts_with("application/problem+json") {
        return Err(format!("Content-Type {ct:?} instead of application/problem+json"));
    }
    let p: Value = serde_json::from_str(&r.body).map_err(|e| format!("body is not JSON: {e}"))?;
    for key in ["type", "title", "detail", "field", "reason"] {
        if p[key].as_str().unwrap_or_default().is_empty() {
            return Err(format!("problem lacks a non-empty string {key:?}"));
        }
    }
    if p["status"].as_u64() != Some(u64::from(row.status)) {
        return Err(format!("problem status {} differs from the HTTP status", p["status"]));
    }
    if p["field"] != row.field {
        return Err(format!("problem names field {} instead of {:?}", p["field"], row.field));
    }
    Ok(())
}

/// Sends every row and reports every wrong answer at once.
fn run(s: &Server, rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        let headers: Vec<(&str, &str)> = row.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = match &row.body {
            RowBody::None => Body::None,
            RowBody::Bytes(b) => Body::Bytes(b),
            RowBody::Chunked(b) => Body::Chunked(b),
        };
        // A fresh connection per row: a refusal may close the connection.
        let mut req = common::agent().request(row.method, &s.url(&row.path));
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let r = common::fetch(req, body);
        if let Err(e) = check(row, &r) {
            let mut shown = r.body.clone();
            shown.truncate(300);
            failures.push(format!("{} ({} {}): {e}; got {} {shown}", row.what, row.method, shorten(&row.path), r.status));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad requests were not refused as expected:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn shorten(s: &str) -> String {
    if s.len() > 80 {
        format!("{}...", &s[..80])
    } else {
        s.to_string()
    }
}

/// Starts a server holding one link, `EXISTING`.
fn server_with_one_link(extra: &[&str]) -> Server {
    let s = Server::start(extra);
    let link = s.create(json!({ "url": EXISTING_URL, "alias": EXISTING }));
    assert_eq!(link["code"], EXISTING);
    s
}

/// Every link and its redirect are as they were.
fn assert_unchanged(s: &Server, before: &[Value]) {
    assert_eq!(s.list_all(), before, "a refused request changed the links");
    let r = s.get(&format!("/{EXISTING}"));
    assert_eq!((r.status, r.header("location")), (302, Some(EXISTING_URL)), "{r:?}");
}

fn url_of_len(len: usize) -> String {
    let head = "https://example.com/";
    format!("{head}{}", "a".repeat(len - head.len()))
}

fn bad_rows(port: u16) -> Vec<Row> {
    vec![
        // The body as a whole.
        Row::create("non-JSON body", "this is not json", "body"),
        Row::create("empty body", "", "body"),
        Row::create("truncated JSON", r#"{"url": "https://example.com/""#, "body"),
        Row::create("invalid UTF-8", b"{\"url\": \"https://example.com/\xff\xfe\"}".to_vec(), "body"),
        Row::create("JSON array", r#"[{"url": "https://example.com/"}]"#, "body"),
        Row::create("JSON string", r#""https://example.com/""#, "body"),
        Row::create("JSON number", "42", "body"),
        Row::create("JSON null", "null", "body"),
        // url: presence and type.
        Row::create("missing url", "{}", "url"),
        Row::create("url null", r#"{"url": null}"#, "url"),
        Row::create("url a number", r#"{"url": 5}"#, "url"),
        Row::create("url an array", r#"{"url": ["https://example.com/"]}"#, "url"),
        Row::create("url an object", r#"{"url": {"href": "https://example.com/"}}"#, "url"),
        Row::url("url empty", ""),
        // url: scheme and host.
        Row::url("ftp scheme", "ftp://example.com/file"),
        Row::url("javascript scheme", "javascript:alert(document.cookie)"),
        Row::url("data scheme", "data:text/html,<script>alert(1)</script>"),
        Row::url("file scheme", "file:///etc/passwd"),
        Row::url("mailto scheme", "mailto:someone@example.com"),
        Row::url("no scheme", "example.com/path"),
        Row::url("scheme-relative", "//example.com/path"),
        Row::url("no host", "http://"),
        Row::url("no host, only port", "http://:8080/"),
        // url: characters.
        Row::url("space in host", "https://exa mple.com/"),
        Row::url("space in path", "https://example.com/a b"),
        Row::url("leading space", " https://example.com/"),
        Row::url("trailing space", "https://example.com/ "),
        Row::url("tab", "https://example.com/\tx"),
        Row::url("CR LF header injection", "https://example.com/\r\nSet-Cookie: session=stolen"),
        Row::url("bare LF", "https://example.com/\nx"),
        Row::url("bare CR", "https://example.com/\rx"),
        Row::url("NUL", "https://example.com/\u{0}"),
        Row::url("BEL", "https://example.com/\u{7}"),
        Row::url("ESC", "https://example.com/\u{1b}[31m"),
        Row::url("DEL", "https://example.com/\u{7f}"),
        Row::url("C1 control NEL", "https://example.com/\u{85}"),
        Row::url("Unicode line separator", "https://example.com/\u{2028}"),
        // url: length.
        Row::url("url one byte over 8192", &url_of_len(MAX_URL + 1)),
        Row::url("url far over 8192", &url_of_len(4 * MAX_URL)),
        // url: credentials.
        Row::url("user and password", "https://user:secret@example.com/"),
        Row::url("user only", "https://user@example.com/"),
        Row::url("password only", "https://:secret@example.com/"),
        // url: the shortener itself.
        Row::url("own host and port", &format!("http://127.0.0.1:{port}/existing")),
        Row::url("own host, https", &format!("https://127.0.0.1:{port}/x")),
        Row::url("own host, other port", "http://127.0.0.1/existing"),
        Row::url("own host, short IPv4 form", &format!("http://127.1:{port}/existing")),
        Row::url("own host, decimal IPv4 form", &format!("http://2130706433:{port}/existing")),
        // Unknown fields.
        Row::with("unknown field", "foo", json!(1), "foo"),
        Row::with("code is not a create field", "code", json!("abcdefg"), "code"),
        Row::with("field names are case-sensitive", "Alias", json!("x"), "Alias"),
        Row::with("disabled is not a create field", "disabled", json!(true), "disabled"),
        // alias.
        Row::with("alias too long", "alias", json!("a".repeat(65)), "alias"),
        Row::with("alias with a space", "alias", json!("a b"), "alias"),
        Row::with("alias with a slash", "alias", json!("a/b"), "alias"),
        Row::with("alias with a dot", "alias", json!("a.b"), "alias"),
        Row::with("alias with a percent", "alias", json!("a%20b"), "alias"),
        Row::with("alias with non-ASCII", "alias", json!("caf\u{e9}"), "alias"),
        Row::with("alias empty", "alias", json!(""), "alias"),
        Row::with("alias a number", "alias", json!(5), "alias"),
        Row::with("alias reserved api", "alias", json!("api"), "alias"),
        Row::with("alias reserved metrics", "alias", json!("metrics"), "alias"),
        Row::with("alias reserved healthz", "alias", json!("healthz"), "alias"),
        Row::with("alias reserved readyz", "alias", json!("readyz"), "alias"),
        Row::with("alias reserved _internal", "alias", json!("_internal"), "alias"),
        Row::with("alias reserved, other case", "alias", json!("Api"), "alias"),
        // ttl_seconds.
        Row::with("ttl_seconds 0", "ttl_seconds", json!(0), "ttl_seconds"),
        Row::with("ttl_seconds negative", "ttl_seconds", json!(-60), "ttl_seconds"),
        Row::with("ttl_seconds a string", "ttl_seconds", json!("60"), "ttl_seconds"),
        Row::with("ttl_seconds a fraction", "ttl_seconds", json!(1.5), "ttl_seconds"),
        Row::with("ttl_seconds a boolean", "ttl_seconds", json!(true), "ttl_seconds"),
        Row::with("ttl_seconds over 100 years", "ttl_seconds", json!(100u64 * 365 * 24 * 3600 + 1), "ttl_seconds"),
        Row::create(
            "ttl_seconds and expires_at",
            json!({ "url": "https://example.com/", "ttl_seconds": 60, "expires_at": "2099-01-01T00:00:00Z" }).to_string(),
            "expires_at",
        ),
        // expires_at.
        Row::with("expires_at in the past", "expires_at", json!("2001-01-01T00:00:00Z"), "expires_at"),
        Row::with("expires_at a word", "expires_at", json!("tomorrow"), "expires_at"),
        Row::with("expires_at a date only", "expires_at", json!("2030-01-31"), "expires_at"),
        Row::with("expires_at without offset", "expires_at", json!("2030-01-31T12:00:00"), "expires_at"),
        Row::with("expires_at a unix time", "expires_at", json!(1_900_000_000), "expires_at"),
        Row::with("expires_at over 100 years ahead", "expires_at", json!("3030-01-01T00:00:00Z"), "expires_at"),
        // max_clicks.
        Row::with("max_clicks 0", "max_clicks", json!(0), "max_clicks"),
        Row::with("max_clicks negative", "max_clicks", json!(-1), "max_clicks"),
        Row::with("max_clicks a string", "max_clicks", json!("5"), "max_clicks"),
        Row::with("max_clicks a fraction", "max_clicks", json!(2.5), "max_clicks"),
        Row::with("max_clicks over 2^53", "max_clicks", json!((1u64 << 53) + 1), "max_clicks"),
        // redirect.
        Row::with("redirect 303", "redirect", json!(303), "redirect"),
        Row::with("redirect 200", "redirect", json!(200), "redirect"),
        Row::with("redirect 300", "redirect", json!(300), "redirect"),
        Row::with("redirect 304", "redirect", json!(304), "redirect"),
        Row::with("redirect 302 + 65536 (u16 wrap)", "redirect", json!(302 + 65536), "redirect"),
        Row::with("redirect a string", "redirect", json!("301"), "redirect"),
        // Media type.
        Row::create("text/plain body", json!({ "url": "https://example.com/" }).to_string(), "Content-Type")
            .header("Content-Type", "text/plain")
            .status(415),
        Row::create("form body", "url=https%3A%2F%2Fexample.com%2F", "Content-Type")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .status(415),
        Row::create("JSON lines to the single create", json!({ "url": "https://example.com/" }).to_string(), "Content-Type")
            .header("Content-Type", "application/x-ndjson")
            .status(415),
        Row::patch("text/plain patch", json!({ "disabled": true }).to_string(), "Content-Type")
            .header("Content-Type", "text/plain")
            .status(415),
        Row::json("text/plain batch", "POST", "/api/v1/links:batch", "{\"url\":\"https://example.com/\"}\n", "Content-Type")
            .header("Content-Type", "text/plain")
            .status(415),
        // Idempotency-Key.
        Row::with("empty Idempotency-Key", "max_clicks", json!(3), "Idempotency-Key").header("Idempotency-Key", ""),
        Row::with("Idempotency-Key over 255", "max_clicks", json!(3), "Idempotency-Key").header("Idempotency-Key", "k".repeat(256)),
        Row::with("Idempotency-Key with a space", "max_clicks", json!(3), "Idempotency-Key").header("Idempotency-Key", "two words"),
        // PATCH.
        Row::patch("patch non-JSON", "nope", "body"),
        Row::patch("patch JSON array", "[]", "body"),
        Row::patch("patch alias", json!({ "alias": "renamed" }).to_string(), "alias"),
        Row::patch("patch code", json!({ "code": "renamed" }).to_string(), "code"),
        Row::patch("patch unknown field", json!({ "colour": "red" }).to_string(), "colour"),
        Row::patch("patch url null", json!({ "url": null }).to_string(), "url"),
        Row::patch("patch url javascript", json!({ "url": "javascript:alert(1)" }).to_string(), "url"),
        Row::patch("patch url CR LF", json!({ "url": "https://example.com/\r\nX: y" }).to_string(), "url"),
        Row::patch("patch url own host", json!({ "url": format!("http://127.0.0.1:{port}/x") }).to_string(), "url"),
        Row::patch("patch disabled a string", json!({ "disabled": "yes" }).to_string(), "disabled"),
        Row::patch("patch ttl_seconds 0", json!({ "ttl_seconds": 0 }).to_string(), "ttl_seconds"),
        Row::patch("patch expires_at in the past", json!({ "expires_at": "2001-01-01T00:00:00Z" }).to_string(), "expires_at"),
        Row::patch(
            "patch ttl_seconds and expires_at",
            json!({ "ttl_seconds": 5, "expires_at": "2099-01-01T00:00:00Z" }).to_string(),
            "expires_at",
        ),
        Row::patch("patch max_clicks 0", json!({ "max_clicks": 0 }).to_string(), "max_clicks"),
        Row::patch("patch redirect 303", json!({ "redirect": 303 }).to_string(), "redirect"),
        // Batch.
        Row::json("batch of 1001 lines", "POST", "/api/v1/links:batch", "{\"url\":\"https://example.com/\"}\n".repeat(1001), "body")
            .header("Content-Type", "application/x-ndjson"),
        Row::json("batch not UTF-8", "POST", "/api/v1/links:batch", b"{\"url\":\"https://example.com/\xff\"}\n".to_vec(), "body")
            .header("Content-Type", "application/x-ndjson"),
        // The list.
        Row::list("cursor garbage", "cursor=zzz", "cursor"),
        Row::list("cursor without offset", "cursor=1", "cursor"),
        Row::list("cursor with empty offset", "cursor=1.", "cursor"),
        Row::list("cursor with empty segment", "cursor=.1", "cursor"),
        Row::list("cursor not hex", "cursor=g.0", "cursor"),
        Row::list("cursor too wide", "cursor=123456789.0", "cursor"),
        Row::list("limit 0", "limit=0", "limit"),
        Row::list("limit 1001", "limit=1001", "limit"),
        Row::list("limit negative", "limit=-1", "limit"),
        Row::list("limit a word", "limit=ten", "limit"),
        Row::list("limit empty", "limit=", "limit"),
        Row::list("limit a fraction", "limit=1.5", "limit"),
    ]
}

#[test]
fn bad_requests_are_refused_with_a_problem_and_change_nothing() {
    let s = server_with_one_link(&[]);
    let before = s.list_all();
    assert_eq!(before.len(), 1);
    run(&s, &bad_rows(s.port));
    assert_unchanged(&s, &before);
}

#[test]
fn bodies_over_the_limit_are_refused_with_413() {
    let limit = SMALL_BODY.to_string();
    let s = server_with_one_link(&["--max-body-bytes", &limit]);
    let before = s.list_all();
    let big = json!({ "url": url_of_len(2 * SMALL_BODY) }).to_string();
    let just_over = json!({ "url": url_of_len(SMALL_BODY + 1 - r#"{"url":""}"#.len()) }).to_string();
    assert_eq!(just_over.len(), SMALL_BODY + 1);
    let lines = "{\"url\":\"https://example.com/many\"}\n".repeat(SMALL_BODY / 20);
    let rows = vec![
        Row::create("declared length over the limit", big.clone(), "body").status(413),
        Row::create("one byte over the limit", just_over.clone(), "body").status(413),
        Row::create("chunked body over the limit", big.clone(), "body").status(413).chunked(),
        Row::patch("patch over the limit", json!({ "url": url_of_len(2 * SMALL_BODY) }).to_string(), "body").status(413),
        Row::json("batch over the limit", "POST", "/api/v1/links:batch", lines.clone(), "body")
            .header("Content-Type", "application/x-ndjson")
            .status(413),
        Row::json("chunked batch over the limit", "POST", "/api/v1/links:batch", lines, "body")
            .header("Content-Type", "application/x-ndjson")
            .status(413)
            .chunked(),
    ];
    run(&s, &rows);
    assert_unchanged(&s, &before);

    // A body of exactly the limit is accepted.
    let at_limit = json!({ "url": url_of_len(SMALL_BODY - r#"{"url":""}"#.len()) }).to_string();
    assert_eq!(at_limit.len(), SMALL_BODY);
    let r = s.send("POST", "/api/v1/links", &[("Content-Type", "application/json")], Body::Bytes(at_limit.as_bytes()));
    assert_eq!(r.status, 201, "a body of exactly --max-body-bytes: {r:?}");
}

/// Sends raw bytes on a fresh connection and returns the status line of the
/// answer, or "" when the server closed the connection without one.
fn raw_status_line(s: &Server, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connecting");
    c.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("read timeout");
    let _ = c.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_string()
}

#[test]
#[ignore = "KNOWN LIMITATION (hyper 1.x): with pipeline_flush(true), which is worth 4x on pipelined redirects, hyper closes the connection on a malformed head without flushing its 400/431; see docs/api.md"]
fn malformed_request_heads_are_answered_with_4xx() {
    let s = server_with_one_link(&[]);
    let before = s.list_all();
    let many_headers: Vec<u8> = (0..150).flat_map(|i| format!("X-H{i}: v\r\n").into_bytes()).collect();
    // Each request is read whole by the server, so a refusal cannot be lost
    // to a reset caused by unread bytes.
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &["400"]),
        ("bad header line", b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".to_vec(), &["400"]),
        ("150 header fields", [b"GET /healthz HTTP/1.1\r\nHost: x\r\n".as_slice(), &many_headers, b"\r\n"].concat(), &["431"]),
        ("bad method token", b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["400"]),
        ("bad HTTP version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), &["400", "505"]),
    ];
    let mut failures = Vec::new();
    for (what, request, statuses) in cases {
        let line = raw_status_line(&s, &request);
        let status = line.split(' ').nth(1).unwrap_or("");
        if !line.starts_with("HTTP/1.1 ") || !statuses.contains(&status) {
            failures.push(format!("{what}: status line {line:?}, expected one of {statuses:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_unchanged(&s, &before);
}

/// Runs `shortd serve` with `args` (plus a free loopback port and a fresh
/// data directory unless given) and expects it to refuse to start: a
/// non-zero exit within 5 s. Returns what it printed to stderr.
fn refused_start(args: &[&str], data_dir: Option<&std::path::Path>) -> String {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().expect("temporary directory");
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shortd"));
    cmd.arg("serve");
    if !args.contains(&"--listen") {
        cmd.args(["--listen", &listen]);
    }
    cmd.arg("--data-dir").arg(data_dir.unwrap_or(tmp.path()));
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHORTD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawning shortd");
    let status = common::poll_until(std::time::Duration::from_secs(5), || child.try_wait().expect("waiting"));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
    }
    let status = status.unwrap_or_else(|| panic!("shortd serve {args:?} did not stop within 5 s; stderr:\n{err}"));
    assert!(!status.success(), "shortd serve {args:?} exited successfully; stderr:\n{err}");
    err
}

#[test]
fn bad_settings_stop_the_start_with_a_message_naming_the_setting() {
    let cases: &[(&[&str], &str)] = &[
        (&["--workers", "0"], "--workers"),
        (&["--workers", "5000"], "--workers"),
        (&["--api-key", "short"], "--api-key"),
        (&["--api-key", "has a space in it"], "--api-key"),
        (&["--max-body-bytes", "100"], "--max-body-bytes"),
        (&["--max-url-bytes", "8"], "--max-url-bytes"),
        (&["--listen", "not-an-address"], "--listen"),
        (&["--public-url", "ftp://sho.rt"], "--public-url"),
        (&["--public-url", "not a url"], "--public-url"),
        (&["--durability", "sometimes"], "--durability"),
        (&["--fsync-interval", "0s"], "--fsync-interval"),
        (&["--header-timeout", "soon"], "--header-timeout"),
        (&["--segment-bytes", "100"], "--segment-bytes"),
        (&["--compact-ratio", "2"], "--compact-ratio"),
        (&["--cache-control", "private\nmax-age=1"], "--cache-control"),
        (&["--config", "/nonexistent/shortd.toml"], "--config"),
    ];
    let mut failures = Vec::new();
    for (args, setting) in cases {
        let err = refused_start(args, None);
        if !err.contains(setting) {
            failures.push(format!("{args:?}: stderr does not name {setting}: {err:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = server_with_one_link(&[]);
    let err = refused_start(&[], Some(&s.data_dir()));
    assert!(err.contains("in use"), "stderr does not say the directory is in use: {err:?}");
    let before = s.list_all();
    assert_unchanged(&s, &before);
}
