//! Power-loss test: what a start finds after the power goes.
//!
//! 1. `shortd serve` runs a workload (creates with ~1 KB URLs, aliases,
//!    PATCHes, DELETEs from several client threads; small segments, frequent
//!    snapshots and compaction) under an LD_PRELOAD shim (`power_loss/shim.c`)
//!    that records every write, sync, rename and unlink the store makes in
//!    its data directory, with the data written. The clients append marks
//!    to the same trace file before each request and after each answer, so
//!    the trace orders the server's file operations and the clients'
//!    acknowledgements on one line. The run ends with `kill -9`.
//! 2. The trace is replayed (`power_loss/model.rs`) into crash states: at a
//!    crash point `k`, what was synced before `k` is there; what was not is
//!    kept or lost page by page, in any combination, and unsynced directory
//!    changes survive as a prefix. Each state is written to a directory.
//! 3. `shortd serve` (no shim) starts on each state, and the test checks:
//!    - the start succeeds without `--repair`, in every mode: what a power
//!      loss can do to the log lies where no completed sync reached, and a
//!      start cuts that off by itself (a refusal that names the damage is
//!      a failure, then checked further with `--repair`);
//!    - under `always`, every change acknowledged before `k` is there (a
//!      create redirects to its URL or that of a later PATCH sent before `k`,
//!      a delete answers 410);
//!    - under every mode, every code that redirects points at a URL that was
//!      sent for that very code, by a request sent before `k` (URLs carry the
//!      request's id), and the list API agrees;
//!    - after a few more creates and a `kill -9`, a second start shows the
//!      same links plus the new ones (a location that points at bytes a later
//!      record reuses shows up here).
//!
//! Knobs: `PL_POINTS` crash points per mode (default 120, every one of
//! them checked however slow the machine), `PL_SEED`, `PL_MODES`
//! (comma-separated, default `always,interval,never`), `PL_KEEP_ALL=1`
//! keeps every state directory. Failing states are kept under
//! `target/tmp/power-loss/` with the crash point in the name.

mod common;
#[path = "power_loss/diagnose.rs"]
mod diagnose;
#[path = "power_loss/model.rs"]
mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{History, Op, Strategy};
use serde_json::{json, Value};

const SEGMENT_BYTES: &str = "65536";
const SNAPSHOT_RECORDS: &str = "40";
const COMPACT_RATIO: &str = "0.5";
/// Enough concurrent clients that group commits span several pages, so a
/// power loss can keep a later page of a batch and lose an earlier one.
const CLIENTS: usize = 12;
const OPS_PER_CLIENT: usize = 45;
/// Creates made on each crash state before the second start.
const AFTER_CREATES: u64 = 8;
/// URLs run from `URL_MIN` to `URL_MIN + URL_SPREAD` bytes, by request id.
const URL_MIN: usize = 200;
const URL_SPREAD: usize = 2300;
/// How long the traced run may wait for compaction to delete a segment.
const COMPACTION_WAIT: Duration = Duration::from_secs(20);
/// How long the trace must stay still before the traced server is killed.
const QUIET: Duration = Duration::from_millis(300);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Compiles the shim into `dir`; `cc` is there wherever Rust links.
fn build_shim(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/power_loss/shim.c");
    let out = dir.join("shim.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r =
        Command::new(&cc).args(["-shared", "-fPIC", "-O2", "-Wall", "-o"]).arg(&out).arg(&src).arg("-ldl").output().expect("running cc");
    assert!(r.status.success(), "compiling {}: {}", src.display(), String::from_utf8_lossy(&r.stderr));
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Always,
    Interval,
    Never,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::Interval => "interval",
            Mode::Never => "never",
        }
    }
}

fn spawn(data: &Path, port: u16, mode: Mode, extra: &[&str], shim: Option<(&Path, &Path)>, log: &Path) -> Child {
    let log = OpenOptions::new().create(true).append(true).open(log).expect("opening a log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shortd"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("SHORTD_") || k.starts_with("PL_") || k == "LD_PRELOAD" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    if let Some((so, trace)) = shim {
        cmd.env("LD_PRELOAD", so).env("PL_DIR", data).env("PL_TRACE", trace);
    }
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .args(["--durability", mode.name(), "--segment-bytes", SEGMENT_BYTES, "--snapshot-records", SNAPSHOT_RECORDS])
        .args(["--compact-ratio", COMPACT_RATIO, "--workers", "2"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning a log handle"))
        .stderr(log)
        .spawn()
        .expect("spawning shortd")
}

/// Waits until `/healthz` answers 200 (Ok) or the child exits (Err: its status).
fn wait_start(child: &mut Child, base: &str) -> Result<(), std::process::ExitStatus> {
    let agent = common::agent();
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().expect("waiting for shortd") {
            return Err(st);
        }
        if let Ok(r) = agent.get(&format!("{base}/healthz")).timeout(Duration::from_secs(1)).call() {
            if r.status() == 200 {
                return Ok(());
            }
        }
        assert!(Instant::now() < deadline, "shortd neither became healthy nor exited within {:?}", common::START_TIMEOUT);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Patch,
    Delete,
}

/// One request of the workload, with what came of it.
#[derive(Clone, Debug)]
struct Req {
    id: u64,
    kind: Kind,
    /// The code it is for: the alias, the code patched or deleted, or the
    /// code a generated create was given (None if it was never answered).
    code: Option<String>,
    /// The URL it sent (creates and PATCHes), as the server stores it.
    url: Option<String>,
}

fn url_for(tag: &str, id: u64) -> String {
    let head = format!("https://pl.example/{tag}/{id}/");
    let size = URL_MIN + (id as usize).wrapping_mul(7919) % URL_SPREAD;
    let pad = "p".repeat(size - head.len().min(size));
    format!("{head}{pad}")
}

/// The request id a URL of this run carries.
fn id_of(tag: &str, url: &str) -> Option<u64> {
    let rest = url.strip_prefix("https://pl.example/")?;
    let (t, rest) = rest.split_once('/')?;
    let (id, _) = rest.split_once('/')?;
    (t == tag).then(|| id.parse().ok())?
}

/// Whether some segment numbered below the newest is gone (compacted).
fn segment_removed(data: &Path) -> bool {
    let Ok(entries) = fs::read_dir(data) else { return false };
    let numbers: Vec<u32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()).collect();
    let (Some(lo), Some(hi)) = (numbers.iter().min(), numbers.iter().max()) else { return false };
    numbers.len() < (hi - lo + 1) as usize || *lo > 1
}

struct Marks {
    file: File,
}

impl Marks {
    fn put(&self, kind: u32, req: u64) {
        (&self.file).write_all(&model::mark(kind, req)).expect("appending a mark to the trace");
    }
}

/// Sends one request between its marks; returns status and JSON body.
fn call(marks: &Marks, id: u64, req: ureq::Request, body: Option<Value>) -> (u16, Value) {
    marks.put(model::T_SEND, id);
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (status, text) = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("request {id}: transport error: {e}"),
    };
    marks.put(model::T_ACK, id);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A traced run: the history and the requests, by id.
struct Run {
    mode: Mode,
    tag: String,
    history: History,
    reqs: BTreeMap<u64, Req>,
    /// Position of each request's SEND and ACK mark in the trace.
    sent: HashMap<u64, usize>,
    acked: HashMap<u64, usize>,
    seconds: f64,
}

fn traced_run(mode: Mode, shim: &Path, root: &Path, seed: u64) -> Run {
    let started = Instant::now();
    let data = root.join(format!("traced-{}", mode.name()));
    fs::create_dir_all(&data).expect("creating the traced data directory");
    let trace = root.join(format!("trace-{}.bin", mode.name()));
    let log = root.join(format!("traced-{}.log", mode.name()));
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&data, port, mode, &[], Some((shim, &trace)), &log);
    if let Err(st) = wait_start(&mut child, &base) {
        panic!("traced shortd exited at start ({st}): {}", fs::read_to_string(&log).unwrap_or_default());
    }
    let tag = format!("{}{:x}", mode.name(), seed);
    let marks = Arc::new(Marks { file: OpenOptions::new().append(true).open(&trace).expect("opening the trace for marks") });
    let reqs = Arc::new(Mutex::new(BTreeMap::new()));
    let next_id = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (marks, reqs, next_id, base, tag) = (marks.clone(), reqs.clone(), next_id.clone(), base.clone(), tag.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                let mut rng = fastrand::Rng::with_seed(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut owned: Vec<String> = Vec::new();
                for _ in 0..OPS_PER_CLIENT {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let roll = rng.u32(0..100);
                    let req = if owned.len() < 4 || roll < 50 {
                        let url = url_for(&tag, id);
                        let alias = (roll % 8 == 0).then(|| format!("pl{t}x{id}"));
                        let mut body = json!({ "url": url });
                        if let Some(a) = &alias {
                            body["alias"] = json!(a);
                        }
                        let (status, v) = call(&marks, id, agent.post(&format!("{base}/api/v1/links")), Some(body));
                        assert_eq!(status, 201, "create {id}: {v}");
                        let code = v["code"].as_str().expect("a code").to_string();
                        if let Some(a) = &alias {
                            assert_eq!(&code, a);
                        }
                        let stored = v["url"].as_str().expect("a url").to_string();
                        owned.push(code.clone());
                        Req { id, kind: Kind::Create, code: Some(code), url: Some(stored) }
                    } else if roll < 90 {
                        let code = owned[rng.usize(..owned.len())].clone();
                        let url = url_for(&tag, id);
                        let (status, v) =
                            call(&marks, id, agent.request("PATCH", &format!("{base}/api/v1/links/{code}")), Some(json!({ "url": url })));
                        assert_eq!(status, 200, "patch {id} of {code}: {v}");
                        let stored = v["url"].as_str().expect("a url").to_string();
                        Req { id, kind: Kind::Patch, code: Some(code), url: Some(stored) }
                    } else {
                        let code = owned.swap_remove(rng.usize(..owned.len()));
                        let (status, v) = call(&marks, id, agent.delete(&format!("{base}/api/v1/links/{code}")), None);
                        assert_eq!(status, 204, "delete {id} of {code}: {v}");
                        Req { id, kind: Kind::Delete, code: Some(code), url: None }
                    };
                    reqs.lock().unwrap().insert(id, req);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    // Crash once compaction has deleted a segment (the snapshot it needs
    // comes first), so the trace covers rolls, snapshots and compaction.
    // and the server has gone quiet: a kill in the middle of a file
    // operation can beat the shim's record of it.
    let waited = common::poll_until(COMPACTION_WAIT, || segment_removed(&data).then_some(()));
    let mut last = (0, Instant::now());
    let quiet = common::poll_until(COMPACTION_WAIT, || {
        let len = fs::metadata(&trace).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        }
        (last.1.elapsed() >= QUIET).then_some(())
    });
    kill(&mut child);
    assert!(quiet.is_some(), "{}: the server's file operations did not stop within {COMPACTION_WAIT:?}", mode.name());
    assert!(waited.is_some(), "{}: compaction deleted no segment within {COMPACTION_WAIT:?} of the workload's end", mode.name());
    let bytes = fs::read(&trace).expect("reading the trace");
    let ops = model::parse(&bytes);
    let history = History::new(ops);
    // The model must reproduce what the kernel holds after kill -9.
    let real = model::read_dir(&data).expect("reading the traced data directory");
    let mut rng = fastrand::Rng::with_seed(0);
    let modelled = history.state(history.ops.len(), Strategy::AllKept, &mut rng);
    let names = |s: &model::State| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&modelled), names(&real), "{}: the model's files differ from the data directory after kill -9", mode.name());
    for (name, bytes) in &real {
        let m = &modelled[name];
        if m != bytes {
            let at = m.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(m.len().min(bytes.len()));
            panic!("{}: the model's {name} differs from the real one at byte {at} (sizes {} and {})", mode.name(), m.len(), bytes.len());
        }
    }
    let mut sent = HashMap::new();
    let mut acked = HashMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        match op {
            Op::Send { req } => {
                sent.insert(*req, i);
            }
            Op::Ack { req } => {
                acked.insert(*req, i);
            }
            _ => {}
        }
    }
    let reqs = Arc::try_unwrap(reqs).expect("clients are done").into_inner().unwrap();
    Run { mode, tag, history, reqs, sent, acked, seconds: started.elapsed().as_secs_f64() }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    Gone,
    Url(String),
}

impl Seen {
    fn show(&self) -> String {
        match self {
            Seen::Absent => "404".into(),
            Seen::Gone => "410".into(),
            Seen::Url(u) => format!("302 to {}", short_url(u)),
        }
    }
}

fn short_url(u: &str) -> String {
    u.trim_end_matches('p').to_string()
}

struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

/// Starts shortd on `data`; Err carries the output of a start that exited.
fn start(data: &Path, mode: Mode, extra: &[&str], log: &Path) -> Result<Server, (std::process::ExitStatus, String)> {
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let before = fs::metadata(log).map_or(0, |m| m.len());
    let mut child = spawn(data, port, mode, extra, None, log);
    match wait_start(&mut child, &base) {
        Ok(()) => Ok(Server { child, base, agent: common::agent() }),
        Err(st) => {
            let mut s = String::new();
            let mut f = File::open(log).expect("opening the log");
            let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(before));
            let _ = f.read_to_string(&mut s);
            Err((st, s))
        }
    }
}

impl Server {
    fn seen(&self, code: &str) -> Result<Seen, String> {
        let r = self.agent.get(&format!("{}/{code}", self.base)).call();
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("GET /{code}: {e}")),
        };
        match r.status() {
            302 => Ok(Seen::Url(r.header("location").unwrap_or("").to_string())),
            404 => Ok(Seen::Absent),
            410 => Ok(Seen::Gone),
            s => Err(format!("GET /{code} answered {s}: {}", r.into_string().unwrap_or_default())),
        }
    }

    fn list(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let path = match &cursor {
                None => "/api/v1/links?limit=1000".to_string(),
                Some(c) => format!("/api/v1/links?limit=1000&cursor={c}"),
            };
            let r = common::fetch(self.agent.get(&format!("{}{path}", self.base)), common::Body::None);
            if r.status != 200 {
                return Err(format!("GET {path} answered {}: {}", r.status, r.body));
            }
            let page = r.json();
            for l in page["links"].as_array().ok_or("no links array")? {
                out.push((l["code"].as_str().unwrap_or("").to_string(), l["url"].as_str().unwrap_or("").to_string()));
            }
            match &page["next_cursor"] {
                Value::String(c) => cursor = Some(c.clone()),
                _ => return Ok(out),
            }
        }
        Err("the list did not end".into())
    }

    fn create(&self, url: &str) -> Result<String, String> {
        let r = common::fetch(
            self.agent.post(&format!("{}/api/v1/links", self.base)).set("Content-Type", "application/json"),
            common::Body::Bytes(json!({ "url": url }).to_string().as_bytes()),
        );
        if r.status != 201 {
            return Err(format!("create after the crash answered {}: {}", r.status, r.body));
        }
        Ok(r.json()["code"].as_str().unwrap_or("").to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// What the test found on one state.
#[derive(Default)]
struct Verdict {
    /// The first start refused (naming the damage); `--repair` was used.
    refused: Option<String>,
    /// Even `--repair` refused (naming the damage).
    repair_refused: Option<String>,
    problems: Vec<String>,
    /// Codes whose acknowledged changes are missing (a failure only under `always`).
    lost: usize,
}

/// Does a start's output name the damage (a file of the data directory or
/// the damage itself), and not a panic?
fn names_damage(out: &str) -> bool {
    let lower = out.to_lowercase();
    !lower.contains("panicked")
        && out.lines().any(|l| l.starts_with("shortd: "))
        && (lower.contains(".log")
            || lower.contains(".snap")
            || lower.contains("code.key")
            || lower.contains("damaged")
            || lower.contains("--repair"))
}

/// The outcomes each known code may show at crash point `k`.
struct Expect<'a> {
    run: &'a Run,
    k: usize,
}

impl Expect<'_> {
    fn sent(&self, id: u64) -> bool {
        self.run.sent.get(&id).is_some_and(|&p| p < self.k)
    }

    fn acked(&self, id: u64) -> bool {
        self.run.acked.get(&id).is_some_and(|&p| p < self.k)
    }

    /// (code -> its requests in order), over the run.
    fn by_code(&self) -> BTreeMap<&str, Vec<&Req>> {
        let mut m: BTreeMap<&str, Vec<&Req>> = BTreeMap::new();
        for r in self.run.reqs.values() {
            if let Some(c) = &r.code {
                m.entry(c.as_str()).or_default().push(r);
            }
        }
        m
    }

    /// What `code` may show: under `always`, from the last acknowledged
    /// change to the last one sent; otherwise absent or any change sent.
    fn allowed(&self, reqs: &[&Req], strict: bool) -> Vec<Seen> {
        let outcome = |r: &Req| match r.kind {
            Kind::Create | Kind::Patch => Seen::Url(r.url.clone().expect("a url")),
            Kind::Delete => Seen::Gone,
        };
        let last_sent = reqs.iter().rposition(|r| self.sent(r.id));
        let last_acked = reqs.iter().rposition(|r| self.acked(r.id));
        let Some(s) = last_sent else { return vec![Seen::Absent] };
        let from = match (strict, last_acked) {
            (true, Some(a)) => a,
            _ => 0,
        };
        let mut v: Vec<Seen> = reqs[from..=s].iter().map(|r| outcome(r)).collect();
        if !strict || last_acked.is_none() {
            v.push(Seen::Absent);
        }
        v
    }
}

/// Checks one server on one crash state; returns what each known code shows.
/// `lost` counts codes that would break the `always` promise (acknowledged
/// changes missing), whatever the mode: under `interval` and `never` that
/// shows the harness can see a loss.
fn inspect(
    run: &Run,
    k: usize,
    srv: &Server,
    extra: &HashMap<String, String>,
    problems: &mut Vec<String>,
    lost: &mut usize,
) -> HashMap<String, Seen> {
    let exp = Expect { run, k };
    let by_code = exp.by_code();
    let mut seen = HashMap::new();
    for (code, reqs) in &by_code {
        let s = match srv.seen(code) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if let Some(url) = extra.get(*code) {
            if s != Seen::Url(url.clone()) {
                problems.push(format!("{code}: created after the crash with {}, shows {}", short_url(url), s.show()));
            }
            seen.insert(code.to_string(), s);
            continue;
        }
        let allowed = exp.allowed(reqs, run.mode == Mode::Always);
        if !exp.allowed(reqs, true).contains(&s) {
            *lost += 1;
        }
        if !allowed.contains(&s) {
            let what = if let Seen::Url(u) = &s { owner(run, u, code, &exp, extra) } else { String::new() };
            let hist: Vec<String> = reqs
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {} ({}{})",
                        r.kind,
                        r.id,
                        if exp.sent(r.id) { "sent" } else { "not sent" },
                        if exp.acked(r.id) { ", acknowledged" } else { "" }
                    )
                })
                .collect();
            problems.push(format!(
                "{code} shows {}{what}; allowed: {}; history: {}",
                s.show(),
                allowed.iter().map(Seen::show).collect::<Vec<_>>().join(" | "),
                hist.join(", ")
            ));
        }
        seen.insert(code.to_string(), s);
    }
    for (code, url) in extra {
        if by_code.contains_key(code.as_str()) {
            continue;
        }
        match srv.seen(code) {
            Ok(s) if s == Seen::Url(url.clone()) => {}
            Ok(s) => problems.push(format!("{code}: created after the crash with {}, shows {}", short_url(url), s.show())),
            Err(e) => problems.push(e),
        }
    }
    match srv.list() {
        Err(e) => problems.push(e),
        Ok(list) => {
            for (code, url) in list {
                if extra.get(&code) == Some(&url) {
                    continue;
                }
                let w = owner(run, &url, &code, &exp, extra);
                if !w.is_empty() {
                    problems.push(format!("list: {code} has {}{w}", short_url(&url)));
                } else if !by_code.contains_key(code.as_str()) {
                    // A create that was never answered: its code is unknown,
                    // but it must not be anyone else's.
                    if let Some(Seen::Url(u)) = srv.seen(&code).ok().as_ref() {
                        if *u != url {
                            problems.push(format!("list: {code} has {} but redirects to {}", short_url(&url), short_url(u)));
                        }
                    }
                } else if seen.get(&code) != Some(&Seen::Url(url.clone())) {
                    problems.push(format!(
                        "list: {code} has {} but redirects as {}",
                        short_url(&url),
                        seen.get(&code).map_or("?".into(), Seen::show)
                    ));
                }
            }
        }
    }
    seen
}

/// Empty if `url` may stand under `code` at `k`; else why not.
fn owner(run: &Run, url: &str, code: &str, exp: &Expect<'_>, extra: &HashMap<String, String>) -> String {
    if extra.get(code).is_some_and(|u| u == url) {
        return String::new();
    }
    let Some(id) = id_of(&run.tag, url) else { return format!(" (a URL no request of this run sent: {})", short_url(url)) };
    let Some(r) = run.reqs.get(&id) else {
        return match extra.iter().find(|(_, u)| *u == url) {
            Some((c, _)) => format!(" (the URL of the post-crash create that got {c})"),
            None => format!(" (request {id} is unknown)"),
        };
    };
    if !exp.sent(id) {
        return format!(" (request {id}, sent only after the crash point)");
    }
    match &r.code {
        Some(c) if c == code => String::new(),
        Some(c) => format!(" (the URL request {id} sent for code {c}: another code's URL)"),
        None => {
            if run.reqs.values().any(|o| o.code.as_deref() == Some(code)) {
                format!(" (the URL of unanswered request {id}, under a code another request got)")
            } else {
                String::new()
            }
        }
    }
}

struct Ctx<'a> {
    run: &'a Run,
    root: &'a Path,
    keep_all: bool,
}

fn check_state(ctx: &Ctx<'_>, k: usize, n: usize, state: &model::State) -> Verdict {
    let run = ctx.run;
    let mut v = Verdict::default();
    let dir = ctx.root.join(format!("state-{}-{n:04}-k{k}", run.mode.name()));
    let data = dir.join("data");
    model::materialize(state, &data).expect("writing a crash state");
    let log = dir.join("shortd.log");
    let mut extra_args: Vec<&str> = Vec::new();
    let srv = match start(&data, run.mode, &[], &log) {
        Ok(s) => Some(s),
        Err((st, out)) => {
            if st.success() || !names_damage(&out) {
                v.problems.push(format!("the start exited ({st}) without naming the damage: {}", out.trim()));
                None
            } else {
                let line = out.lines().find(|l| l.starts_with("shortd: ")).unwrap_or("").to_string();
                v.problems.push(format!("a plain start refused: {line}"));
                v.refused = Some(line);
                extra_args.push("--repair");
                match start(&data, run.mode, &["--repair"], &log) {
                    Ok(s) => Some(s),
                    Err((st, out)) => {
                        if st.success() || !names_damage(&out) {
                            v.problems.push(format!("the start with --repair exited ({st}) without naming the damage: {}", out.trim()));
                        } else {
                            let line = out.lines().find(|l| l.starts_with("shortd: ")).unwrap_or("").to_string();
                            if run.mode == Mode::Always {
                                v.problems.push(format!("under always, even --repair refuses to start: {line}"));
                            }
                            v.repair_refused = Some(line);
                        }
                        None
                    }
                }
            }
        }
    };
    if let Some(srv) = srv {
        let mut extra = HashMap::new();
        let first = inspect(run, k, &srv, &extra, &mut v.problems, &mut v.lost);
        // More writes, kill -9, and a second start.
        for i in 0..AFTER_CREATES {
            let url = url_for(&run.tag, 10_000_000 + (n as u64) * 100 + i);
            match srv.create(&url) {
                Ok(code) => {
                    match first.get(&code) {
                        Some(Seen::Absent) | None => {}
                        Some(s) => v.problems.push(format!("a create after the crash was given {code}, which showed {}", s.show())),
                    }
                    extra.insert(code, url);
                }
                Err(e) => v.problems.push(e),
            }
        }
        drop(srv);
        match start(&data, run.mode, &extra_args, &log) {
            Ok(srv2) => {
                let second = inspect(run, k, &srv2, &extra, &mut v.problems, &mut 0);
                for (code, s) in &first {
                    if extra.contains_key(code) {
                        continue;
                    }
                    if second.get(code) != Some(s) {
                        v.problems.push(format!(
                            "{code} showed {} after the crash but {} after more creates and kill -9",
                            s.show(),
                            second.get(code).map_or("?".into(), Seen::show)
                        ));
                    }
                }
            }
            Err((st, out)) => v.problems.push(format!("the second start (after kill -9) exited ({st}): {}", out.trim())),
        }
    }
    if v.problems.is_empty() && !ctx.keep_all {
        let _ = fs::remove_dir_all(&dir);
    } else {
        // Keep the state as the crash left it, beside the one the starts changed.
        let _ = model::materialize(state, &dir.join("as-crashed"));
    }
    v
}

/// Crash points for one run: evenly spread over the trace, plus the
/// neighbourhood of every rename and unlink (rolls, snapshots, compaction).
fn pick_points(h: &History, n: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    let all = h.crash_points();
    let mut set = BTreeSet::new();
    let special: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&k| k > 0 && matches!(h.ops[k - 1], Op::Rename { .. } | Op::Unlink { .. } | Op::SyncEnd { .. }) && h.pending(k) != (0, 0))
        .collect();
    // A third on the interesting points, the rest spread evenly.
    let n_special = (n / 3).min(special.len());
    for i in 0..n_special {
        set.insert(special[i * special.len() / n_special]);
    }
    set.insert(*all.last().expect("a point"));
    let mut tries = 0;
    while set.len() < n.min(all.len()) && tries < 100 * n {
        let i = set.len();
        let span = all.len() as f64 / n as f64;
        let at = ((i as f64 + rng.f64()) * span) as usize;
        set.insert(all[at.min(all.len() - 1)]);
        tries += 1;
    }
    set.into_iter().collect()
}

/// A refusal's message with the state's path and the numbers blanked.
fn normalize(msg: &str, root: &Path) -> String {
    let msg = msg.replace(&root.display().to_string(), "ROOT");
    let mut out = String::new();
    let mut last_digit = false;
    for c in msg.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out
}

struct ModeReport {
    mode: Mode,
    ops: usize,
    points: usize,
    states: usize,
    duplicates: usize,
    refused: usize,
    repair_refused: usize,
    failures: Vec<String>,
    /// Why starts refused (paths and numbers blanked), with counts.
    reasons: BTreeMap<String, usize>,
    traced_seconds: f64,
    seconds: f64,
    counts: String,
    /// Crash points checked before the time budget ran out.
    checked_points: usize,
    /// States where an acknowledged change was missing (a failure only under `always`).
    lost_states: usize,
    /// Failures explained by snapshot locations past the durable log.
    known: usize,
}

fn run_mode(mode: Mode, shim: &Path, root: &Path, seed: u64, points: usize, keep_all: bool) -> ModeReport {
    let started = Instant::now();
    let run = traced_run(mode, shim, root, seed);
    let h = &run.history;
    let count = |f: &dyn Fn(&Op) -> bool| h.ops.iter().filter(|o| f(o)).count();
    let counts = format!(
        "{} writes, {} fdatasync, {} fsync, {} renames, {} unlinks, {} segments, {} snapshots",
        count(&|o| matches!(o, Op::Write { .. })),
        count(&|o| matches!(o, Op::SyncBegin { data_only: true, .. })),
        count(&|o| matches!(o, Op::SyncBegin { data_only: false, .. })),
        count(&|o| matches!(o, Op::Rename { .. })),
        count(&|o| matches!(o, Op::Unlink { .. })),
        count(&|o| matches!(o, Op::Rename { to, .. } if to.ends_with(".log"))),
        count(&|o| matches!(o, Op::Rename { to, .. } if to.ends_with(".snap"))),
    );
    let compacted = count(&|o| matches!(o, Op::Unlink { path } if path.ends_with(".log")));
    assert!(compacted > 0, "{}: the workload compacted no segment ({counts})", mode.name());
    let mut rng = fastrand::Rng::with_seed(seed ^ mode as u64);
    let ks = pick_points(h, points, &mut rng);
    let ctx = Ctx { run: &run, root, keep_all };
    let mut seen_states = std::collections::HashSet::new();
    let mut report = ModeReport {
        mode,
        ops: h.ops.iter().filter(|o| o.is_server()).count(),
        points: ks.len(),
        states: 0,
        duplicates: 0,
        refused: 0,
        repair_refused: 0,
        failures: Vec::new(),
        reasons: BTreeMap::new(),
        traced_seconds: run.seconds,
        seconds: 0.0,
        counts: format!("{counts}, {compacted} compacted segments deleted"),
        checked_points: 0,
        lost_states: 0,
        known: 0,
    };
    for (i, &k) in ks.iter().enumerate() {
        report.checked_points += 1;
        // Two states per point: one of the extremes in turn, and a random mix.
        let strategies = [Strategy::ALL[i % 2], Strategy::ALL[2 + i % 3]];
        for strategy in strategies {
            let state = h.state(k, strategy, &mut rng);
            if !seen_states.insert(model::fingerprint(&state)) {
                report.duplicates += 1;
                continue;
            }
            let n = report.states;
            report.states += 1;
            let v = check_state(&ctx, k, n, &state);
            if v.refused.is_some() {
                report.refused += 1;
            }
            if v.repair_refused.is_some() {
                report.repair_refused += 1;
            }
            if v.lost > 0 {
                report.lost_states += 1;
            }
            for r in v.refused.iter().chain(v.repair_refused.iter()) {
                *report.reasons.entry(normalize(r, root)).or_default() += 1;
            }
            if !v.problems.is_empty() {
                let (why, dangling) = diagnose::explain(h, k, &state);
                let (pf, pd) = h.pending(k);
                // The bug the other checks keep finding (see docs/storage.md,
                // "Power-loss testing"): marked so that a new kind stands out.
                let label = match dangling {
                    (0, 0) => "[NEW] ",
                    (_, 0) => {
                        report.known += 1;
                        "[KNOWN BUG: fuzzy snapshot points past the replay position at records lost to the power loss] "
                    }
                    (0, _) => {
                        report.known += 1;
                        "[BUG: snapshot covers log records that were never synced (never: sealed segments are not synced; compaction stops at the hole)] "
                    }
                    _ => {
                        report.known += 1;
                        "[BOTH BUGS: fuzzy snapshot, and snapshot covering unsynced sealed segments] "
                    }
                };
                report.failures.push(format!(
                    "{label}{} crash point {k} ({}; {pf} file and {pd} directory ops unsynced), {strategy:?}, state {}: {}{}{}",
                    mode.name(),
                    h.describe(k),
                    root.join(format!("state-{}-{n:04}-k{k}", mode.name())).display(),
                    v.refused.as_deref().map_or(String::new(), |r| format!("[refused first: {r}] ")),
                    v.problems.join("; "),
                    if why.is_empty() { String::new() } else { format!("\n    diagnosis: {}", why.join("; ")) }
                ));
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

#[test]
fn power_loss_crash_states() {
    let seed = std::env::var("PL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0001);
    let points = env_usize("PL_POINTS", 120);
    let keep_all = std::env::var("PL_KEEP_ALL").is_ok_and(|v| v == "1");
    let modes: Vec<Mode> = std::env::var("PL_MODES")
        .unwrap_or_else(|_| "always,interval,never".into())
        .split(',')
        .map(|m| match m.trim() {
            "always" => Mode::Always,
            "interval" => Mode::Interval,
            "never" => Mode::Never,
            other => panic!("PL_MODES: unknown mode {other}"),
        })
        .collect();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("power-loss").join(format!("{seed:x}"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("creating the power-loss directory");
    let shim = build_shim(&root);
    let started = Instant::now();
    let mut reports = Vec::new();
    for &mode in &modes {
        let r = run_mode(mode, &shim, &root, seed, points, keep_all);
        eprintln!(
            "power-loss {}: traced run {:.1}s, {} server ops ({}); {} of {} crash points checked, {} states ({} duplicates skipped), {} refused a plain start (each a failure), {} refused even with --repair, {} with acknowledged changes missing, {} failing ({} of them the known bug); {:.1}s",
            r.mode.name(),
            r.traced_seconds,
            r.ops,
            r.counts,
            r.checked_points,
            r.points,
            r.states,
            r.duplicates,
            r.refused,
            r.repair_refused,
            r.lost_states,
            r.failures.len(),
            r.known,
            r.seconds
        );
        for (why, n) in &r.reasons {
            eprintln!("power-loss {}: {n} x refused: {why}", r.mode.name());
        }
        reports.push(r);
    }
    let failures: Vec<&String> = reports.iter().flat_map(|r| r.failures.iter()).collect();
    eprintln!("power-loss: seed {seed:#x}, {:.1}s in all, {} failing states", started.elapsed().as_secs_f64(), failures.len());
    let mut all = String::new();
    for f in &failures {
        eprintln!("FAIL {f}");
        all.push_str(&format!("FAIL {f}\n"));
    }
    let _ = fs::write(root.join("failures.txt"), all);
    // The harness must be able to see a loss: under interval, some states
    // lack changes that were acknowledged before the crash point.
    for r in &reports {
        if r.mode == Mode::Interval && r.checked_points >= 30 {
            assert!(r.lost_states > 0, "under interval no state lacked an acknowledged change: the harness cannot see losses");
        }
    }
    let known: usize = reports.iter().map(|r| r.known).sum();
    assert!(failures.is_empty(), "{} crash states fail ({known} of them the known bug); see the FAIL lines above", failures.len());
}
