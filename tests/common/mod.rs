//! Runs the real `shortd` binary for integration tests and talks to it the
//! way a user does: over HTTP on loopback, with a client that does not
//! follow redirects.
//!
//! `shortd serve --listen 127.0.0.1:0` cannot tell us the port it got, so a
//! free loopback port is picked here (bind, read, drop) and handed to the
//! child; readiness is `GET /healthz` answering 200. The child is killed
//! when the `Server` is dropped, so a failing test leaves nothing behind.
//!
//! Besides the server: the offline CLI commands (`cli`), creates and
//! redirects from any thread (`create`, `redirect`, `assert_all_redirect`),
//! in `disk` byte-level access to a data directory, and in `cluster` nodes
//! of a cluster on 127.0.0.x, and in `prereq` what a test does when
//! something it needs is missing (fail under CI, say SKIPPED elsewhere).

#![allow(dead_code)]

pub mod cluster;
pub mod disk;
pub mod mmdb;
pub mod prereq;
pub mod tools;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a start may take before `/healthz` must answer 200 (a start on
/// a large or damaged data directory replays and checks its whole log).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the test gives up on it (the
/// final snapshot of a large store is written before the exit).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two polls of something that changes asynchronously.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long a SIGHUP reload (three small files) may take to be counted.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The counter a finished SIGHUP reload adds one to.
const RELOADS: &str = "shortd_config_reloads_total";
/// Attempts at starting on a fresh port when the child dies at start-up
/// (another process may have taken the port between pick and bind).
const START_ATTEMPTS: usize = 3;

/// Ports this test process already handed to a child. The server binds
/// with `SO_REUSEPORT`, so two children given the same port would both
/// start and share connections; never give a port out twice.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port no other child of this test process was given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding a probe listener on loopback").port();
        let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// The client every test uses: no redirects followed, bounded time.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(10)).build()
}

/// A response of any status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Asserts an RFC 9457 problem with this status and returns its body.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        let ct = self.header("content-type").unwrap_or("");
        assert!(ct.starts_with("application/problem+json"), "Content-Type is {ct:?}, not application/problem+json: {self:?}");
        let p = self.json();
        let obj = p.as_object().unwrap_or_else(|| panic!("problem is not a JSON object: {self:?}"));
        for key in ["type", "title", "detail"] {
            let v = obj.get(key).and_then(Value::as_str);
            assert!(v.is_some_and(|s| !s.is_empty()), "problem lacks a non-empty string {key:?}: {self:?}");
        }
        assert_eq!(obj.get("status").and_then(Value::as_u64), Some(u64::from(status)), "problem status differs from HTTP status: {self:?}");
        if obj.contains_key("field") || obj.contains_key("reason") {
            for key in ["field", "reason"] {
                let v = obj.get(key).and_then(Value::as_str);
                assert!(v.is_some_and(|s| !s.is_empty()), "field problem lacks a non-empty string {key:?}: {self:?}");
            }
        }
        p
    }

    /// Asserts a 400 problem naming `field` and returns its body.
    pub fn field_problem(&self, status: u16, field: &str) -> Value {
        let p = self.problem(status);
        assert_eq!(p["field"].as_str(), Some(field), "problem names the wrong field: {self:?}");
        assert!(p["reason"].as_str().is_some_and(|r| !r.is_empty()), "problem has no reason: {self:?}");
        p
    }
}

/// What to send as a request body.
pub enum Body<'a> {
    None,
    /// Sent with `Content-Length`.
    Bytes(&'a [u8]),
    /// Sent with `Transfer-Encoding: chunked` (no declared length).
    Chunked(&'a [u8]),
}

/// Sends a request and returns the response whatever its status; panics on
/// transport errors (connection refused, timeouts), which no test expects.
pub fn fetch(req: ureq::Request, body: Body<'_>) -> Resp {
    let desc = format!("{} {}", req.method(), req.url());
    try_fetch(req, body).unwrap_or_else(|e| panic!("{desc}: {e}"))
}

/// Like `fetch`, but a transport error (no answer, or a broken one, as when
/// the server is killed under the request) is returned, not a panic.
pub fn try_fetch(req: ureq::Request, body: Body<'_>) -> Result<Resp, String> {
    let result = match body {
        Body::None => req.call(),
        Body::Bytes(b) => req.send_bytes(b),
        Body::Chunked(b) => req.send(std::io::Cursor::new(b.to_vec())),
    };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("transport error: {e}")),
    };
    let status = resp.status();
    let mut headers = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            headers.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    let body = resp.into_string().map_err(|e| format!("reading the body: {e}"))?;
    Ok(Resp { status, headers, body })
}

/// Why a create got no 201.
#[derive(Debug)]
pub enum CreateFailure {
    /// A 4xx or 5xx answer: status and body.
    Status(u16, String),
    /// No answer: the connection failed or broke.
    Transport(String),
}

/// `POST {base}/api/v1/links {"url": url}`; on 201 the code and the stored
/// url. Takes an agent and a base rather than a `Server`, for threads that
/// go on while the server is killed.
pub fn create(agent: &ureq::Agent, base: &str, url: &str) -> Result<(String, String), CreateFailure> {
    let body = serde_json::to_vec(&serde_json::json!({ "url": url })).expect("serializing a request body");
    let req = agent.post(&format!("{base}/api/v1/links")).set("Content-Type", "application/json");
    let r = try_fetch(req, Body::Bytes(&body)).map_err(CreateFailure::Transport)?;
    if r.status >= 400 {
        return Err(CreateFailure::Status(r.status, r.body));
    }
    assert_eq!(r.status, 201, "create answered {}: {r:?}", r.status);
    let v = r.json();
    let code = v["code"].as_str().unwrap_or_else(|| panic!("no code in the 201 body: {r:?}")).to_string();
    let url = v["url"].as_str().unwrap_or_else(|| panic!("no url in the 201 body: {r:?}")).to_string();
    Ok((code, url))
}

/// `GET {base}/{code}` without following: the status and `Location`.
pub fn redirect(agent: &ureq::Agent, base: &str, code: &str) -> (u16, Option<String>) {
    let r = fetch(agent.get(&format!("{base}/{code}")), Body::None);
    (r.status, r.header("location").map(str::to_string))
}

/// Checks, from `threads` threads, that every `(code, url)` redirects with
/// 302 to its url; the failure names up to 20 of those that do not.
pub fn assert_all_redirect(base: &str, links: &[(String, String)], threads: usize) {
    let chunk = links.len().div_ceil(threads.max(1)).max(1);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = links
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let a = agent();
                    let mut bad = Vec::new();
                    for (code, url) in part {
                        let (status, loc) = redirect(&a, base, code);
                        if status != 302 || loc.as_deref() != Some(url.as_str()) {
                            bad.push(format!("{code}: {status} {loc:?}, want 302 {url}"));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("checker thread")).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} acknowledged links do not redirect, e.g.:\n{}",
        failures.len(),
        links.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Runs `shortd ARGS` (an offline command: export, import, check, ...) to
/// completion.
pub fn cli(args: &[&str]) -> Output {
    shortd().args(args).stdin(Stdio::null()).output().expect("running shortd")
}

/// A command for the binary under test that takes its settings from its
/// flags alone, never from the caller's environment.
fn shortd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shortd"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHORTD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Calls `f` until it gives `Some`, for at most `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A running `shortd serve` child process on a loopback port.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    /// The data directory.
    data: PathBuf,
    /// `shortd.log` beside the data directory: the output of every run on it.
    log_path: PathBuf,
    /// Where this run's output starts in the log.
    log_from: u64,
    /// The temporary directory holding `data/` and `shortd.log`, when the
    /// server made them (`start`), not the test (`start_at`).
    root: Option<TempDir>,
    args: Vec<String>,
    agent: ureq::Agent,
}

/// Why a start attempt failed.
enum StartFailure {
    /// The child exited before it was healthy (e.g. the port was taken).
    Exited,
    /// The child runs but `/healthz` never answered 200.
    Unhealthy,
}

impl Server {
    /// Starts on a fresh data directory with `--workers 2` and `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        let root = tempfile::Builder::new().prefix("shortd-test-").tempdir().expect("creating a temporary directory");
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).expect("creating the data directory");
        Server::start_in(Some(root), data, extra.iter().map(|s| s.to_string()).collect())
    }

    /// Starts on the data directory `dir` (which the test owns and may have
    /// filled or damaged), with `--workers 2` and `extra` flags; the output
    /// goes to `shortd.log` beside `dir`.
    pub fn start_at(dir: &Path, extra: &[&str]) -> Server {
        Server::start_in(None, dir.to_path_buf(), extra.iter().map(|s| s.to_string()).collect())
    }

    fn start_in(root: Option<TempDir>, data: PathBuf, args: Vec<String>) -> Server {
        let agent = agent();
        let log_path = data.parent().unwrap_or(&data).join("shortd.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let log_from = std::fs::metadata(&log_path).map_or(0, |m| m.len());
            let mut child = spawn(&data, &log_path, port, &args);
            match wait_healthy(&agent, &base, &mut child) {
                Ok(()) => return Server { child: Some(child), port, base, data, log_path, log_from, root, args, agent },
                Err(StartFailure::Exited) => continue,
                Err(StartFailure::Unhealthy) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("shortd did not answer GET /healthz with 200 within {START_TIMEOUT:?}; log:\n{}", read_log(&log_path, 0));
                }
            }
        }
        panic!("shortd exited at start-up {START_ATTEMPTS} times; log:\n{}", read_log(&log_path, 0));
    }

    /// Starts again on the same data directory with the same flags (on a
    /// new port). The running child, if any, must have been stopped.
    pub fn restart(mut self) -> Server {
        if let Some(child) = self.child.as_mut() {
            assert!(child.try_wait().ok().flatten().is_some(), "restart() needs the old process stopped first");
        }
        let root = self.root.take();
        let data = std::mem::take(&mut self.data);
        let args = std::mem::take(&mut self.args);
        drop(self);
        Server::start_in(root, data, args)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// Everything the server (and earlier runs on this directory) printed.
    pub fn log(&self) -> String {
        read_log(&self.log_path, 0)
    }

    /// What this run printed, without the output of earlier runs.
    pub fn run_log(&self) -> String {
        read_log(&self.log_path, self.log_from)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit. Returns
    /// its exit status and how long the exit took.
    pub fn stop_gracefully(&mut self) -> (ExitStatus, Duration) {
        let pid = self.pid();
        let started = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let child = self.child.as_mut().expect("server is running");
        let status = poll_until(STOP_TIMEOUT, || child.try_wait().expect("waiting for shortd"));
        match status {
            Some(s) => (s, started.elapsed()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shortd did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}", self.log());
            }
        }
    }

    /// Waits (bounded) for a process already signalled to exit; returns its
    /// status and how long that took from now.
    pub fn wait_for_exit(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("server is running");
        match poll_until(STOP_TIMEOUT, || child.try_wait().expect("waiting for shortd")) {
            Some(s) => (s, started.elapsed()),
            None => panic!("shortd did not exit within {STOP_TIMEOUT:?}; log:\n{}", self.log()),
        }
    }

    /// SIGTERM, and the exit status once the process is gone (bounded).
    pub fn term(mut self) -> ExitStatus {
        self.stop_gracefully().0
    }

    /// SIGHUP: reload the key file and the blocklist.
    pub fn hangup(&self) {
        let sent = Command::new("kill").arg("-HUP").arg(self.pid().to_string()).status().expect("running kill -HUP");
        assert!(sent.success(), "kill -HUP {} failed", self.pid());
    }

    /// SIGHUP, and back once the server has finished the reload it asked
    /// for (`shortd_config_reloads_total` went up), so that what the test
    /// checks next is the reloaded state, not a guess about timing.
    pub fn reload(&self) {
        let before = self.metric(RELOADS).unwrap_or(0.0);
        self.hangup();
        self.wait_for_reloads(before + 1.0);
    }

    /// Waits (bounded) until `shortd_config_reloads_total` is at least
    /// `n`; the failure shows the log (a SIGHUP that ended the process
    /// leaves no `/metrics` to read).
    pub fn wait_for_reloads(&self, n: f64) {
        let done = poll_until(RELOAD_TIMEOUT, || {
            let r = try_fetch(self.agent.get(&self.url("/metrics")), Body::None).ok()?;
            (metric_in(&r.body, RELOADS)? >= n).then_some(())
        });
        assert!(done.is_some(), "shortd did not count {n} SIGHUP reloads within {RELOAD_TIMEOUT:?} ({RELOADS}); log:\n{}", self.run_log());
    }

    /// The value of an unlabelled series in `/metrics`, if it is there.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_in(&self.get("/metrics").body, name)
    }

    /// SIGKILL, as in a crash; waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` (no drain, no final snapshot), and the server is gone.
    pub fn kill9(mut self) {
        self.kill();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent.request(method, &self.url(path))
    }

    /// Any request with extra headers and an optional body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) -> Resp {
        let mut req = self.request(method, path);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        fetch(req, body)
    }

    /// Like `send`, on a connection of its own that is not reused. For
    /// requests the server refuses before reading their body (401, 405,
    /// 415, ...): it then closes the connection without `Connection:
    /// close`, so a pooled connection could fail the next request (see the
    /// ignored test `a_refusal_before_the_body_is_read_keeps_or_closes_the_connection_cleanly`).
    pub fn send_alone(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) -> Resp {
        let mut req = agent().request(method, &self.url(path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        fetch(req, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], Body::None)
    }

    pub fn head(&self, path: &str) -> Resp {
        self.send("HEAD", path, &[], Body::None)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, &[], Body::None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send_json("POST", path, &[], body)
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.send_json("PATCH", path, &[], body)
    }

    pub fn send_json(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serializing a request body");
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.send(method, path, &all, Body::Bytes(&bytes))
    }

    /// The status of a create, sent with `Authorization: Bearer KEY` or
    /// without any key.
    pub fn create_status(&self, key: Option<&str>) -> u16 {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.send_json("POST", "/api/v1/links", &headers, &serde_json::json!({"url": "https://example.com/key-check"})).status
    }

    /// Creates a link, asserting 201, and returns it.
    pub fn create(&self, body: Value) -> Value {
        let r = self.post_json("/api/v1/links", &body);
        assert_eq!(r.status, 201, "creating {body}: {r:?}");
        r.json()
    }

    /// `GET /api/v1/links/{code}`, asserting 200.
    pub fn link(&self, code: &str) -> Value {
        let r = self.get(&format!("/api/v1/links/{code}"));
        assert_eq!(r.status, 200, "GET link {code}: {r:?}");
        r.json()
    }

    /// Waits (up to 3 s; clicks are batched) until the link shows `want`
    /// clicks and returns what it shows last.
    pub fn wait_for_clicks(&self, code: &str, want: u64) -> u64 {
        let mut last = 0;
        poll_until(Duration::from_secs(3), || {
            last = self.link(code)["clicks"].as_u64().expect("clicks is a number");
            (last == want).then_some(())
        });
        last
    }

    /// Every link, paging through the list with `limit` per page; also
    /// returns the size of each page.
    pub fn list_pages(&self, limit: usize) -> (Vec<Value>, Vec<usize>) {
        let mut links = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let path = match &cursor {
                None => format!("/api/v1/links?limit={limit}"),
                Some(c) => format!("/api/v1/links?limit={limit}&cursor={c}"),
            };
            let r = self.get(&path);
            assert_eq!(r.status, 200, "{path}: {r:?}");
            let page = r.json();
            let items = page["links"].as_array().unwrap_or_else(|| panic!("{path}: no links array: {r:?}"));
            sizes.push(items.len());
            links.extend(items.iter().cloned());
            match &page["next_cursor"] {
                Value::Null => return (links, sizes),
                Value::String(c) => cursor = Some(c.clone()),
                other => panic!("{path}: next_cursor is {other}"),
            }
        }
        panic!("the list did not end after 10000 pages");
    }

    pub fn list_all(&self) -> Vec<Value> {
        self.list_pages(1000).0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data: &Path, log_path: &Path, port: u16, args: &[String]) -> Child {
    let mut log = OpenOptions::new().create(true).append(true).open(log_path).expect("opening the server log");
    let _ = writeln!(log, "=== shortd serve on 127.0.0.1:{port} {args:?}");
    let mut cmd = shortd();
    cmd.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--data-dir").arg(data);
    if !args.iter().any(|a| a == "--workers") {
        cmd.arg("--workers").arg("2");
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .spawn()
        .expect("spawning shortd")
}

fn wait_healthy(agent: &ureq::Agent, base: &str, child: &mut Child) -> Result<(), StartFailure> {
    let url = format!("{base}/healthz");
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return Err(StartFailure::Exited);
        }
        if let Ok(r) = agent.get(&url).timeout(Duration::from_secs(1)).call() {
            if r.status() == 200 {
                return Ok(());
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
    Err(StartFailure::Unhealthy)
}

/// The value of the unlabelled series `name` in a Prometheus text page.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The log from byte `from` on.
fn read_log(path: &Path, from: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut s);
        }
    }
    s
}
