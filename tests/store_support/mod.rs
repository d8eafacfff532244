//! Helpers shared by the storage tests (`crash`, `recovery`, `cli`): a real
//! `shortd serve` child process on a free loopback port, the offline CLI
//! commands, and byte-level access to log segments for damaging them on
//! purpose. Each test binary uses a different subset, hence the allow.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "../common/disk.rs"]
mod disk;
pub use disk::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_shortd");

/// How long a server may take to answer `/healthz` after it was spawned.
const START_DEADLINE: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago: bind port 0, read it, let go.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// An HTTP client that never follows redirects.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(HTTP_TIMEOUT).build()
}

/// A `shortd serve` child process with its own port and a log file.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts `shortd serve --data-dir DIR` plus `extra` flags and waits
    /// until `/healthz` answers 200. Panics with the server's log if it
    /// exits or does not come up in time.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut last = String::new();
        // A port picked by binding :0 can be taken by someone else before the
        // child binds it; a second try with a fresh port settles that.
        for _ in 0..3 {
            match Server::try_start(dir, extra) {
                Ok(s) => return s,
                Err(e) if e.contains("cannot listen") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}")
    }

    fn try_start(dir: &Path, extra: &[&str]) -> Result<Server, String> {
        let port = free_port();
        let log = dir.parent().unwrap_or(dir).join(format!("shortd-{port}.log"));
        let out = File::create(&log).expect("create server log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--workers")
            .arg("2")
            .arg("--log-level")
            .arg("warn")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot spawn {BIN}: {e}"))?;
        let mut s = Server { child, port, dir: dir.to_path_buf(), log };
        let a = agent();
        let started = Instant::now();
        loop {
            if let Some(status) = s.child.try_wait().expect("try_wait") {
                return Err(format!("shortd exited with {status} before it was healthy; log:\n{}", s.log_text()));
            }
            if let Ok(r) = a.get(&format!("{}/healthz", s.base())).timeout(Duration::from_millis(500)).call() {
                if r.status() == 200 {
                    return Ok(s);
                }
            }
            if started.elapsed() > START_DEADLINE {
                let _ = s.child.kill();
                let _ = s.child.wait();
                return Err(format!("shortd did not answer /healthz within {START_DEADLINE:?}; log:\n{}", s.log_text()));
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no final snapshot.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL shortd");
        self.child.wait().expect("reap shortd");
    }

    /// SIGTERM and wait for the exit, bounded.
    pub fn term(mut self) -> ExitStatus {
        let ok = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill -TERM");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("shortd did not exit within 20s of SIGTERM; log:\n{}", self.log_text());
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Why a create got no 201.
#[derive(Debug)]
pub enum CreateFailure {
    /// A 4xx or 5xx answer: status and body.
    Status(u16, String),
    /// No answer: the connection failed or broke.
    Transport(String),
}

/// `POST /api/v1/links {"url": url}`; on 201 the code and the stored url.
pub fn create(agent: &ureq::Agent, base: &str, url: &str) -> Result<(String, String), CreateFailure> {
    let resp = match agent.post(&format!("{base}/api/v1/links")).send_json(serde_json::json!({ "url": url })) {
        Ok(r) => r,
        Err(ureq::Error::Status(s, r)) => return Err(CreateFailure::Status(s, r.into_string().unwrap_or_default())),
        Err(e) => return Err(CreateFailure::Transport(e.to_string())),
    };
    assert_eq!(resp.status(), 201, "create answered {}", resp.status());
    let v: serde_json::Value = resp.into_json().expect("create body is JSON");
    let code = v["code"].as_str().expect("code in 201 body").to_string();
    let url = v["url"].as_str().expect("url in 201 body").to_string();
    Ok((code, url))
}

/// `GET /{code}` without following: the status and `Location`.
pub fn redirect(agent: &ureq::Agent, base: &str, code: &str) -> (u16, Option<String>) {
    match agent.get(&format!("{base}/{code}")).call() {
        Ok(r) => (r.status(), r.header("location").map(str::to_string)),
        Err(ureq::Error::Status(s, r)) => (s, r.header("location").map(str::to_string)),
        Err(e) => panic!("GET /{code}: {e}"),
    }
}

/// Checks, from `threads` threads, that every `(code, url)` redirects with
/// 302 to its url; returns the failures (at most 20 of them).
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

/// Runs `shortd ARGS` to completion.
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run shortd")
}
