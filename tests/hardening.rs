//! Abuse and bad clients against the real server: API key files reloaded
//! on SIGHUP, slow clients, connection limits, create rate limits, trusted
//! proxies, the target blocklist, and a read-only data directory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{poll_until, Body, Server};
use serde_json::json;

#[test]
fn api_key_file_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# operators\nfirst-key-0001\n").unwrap();
    let s = Server::start(&["--api-key-file", keys.to_str().unwrap()]);
    assert_eq!(s.create_status(Some("first-key-0001")), 201);
    assert_eq!(s.create_status(Some("second-key-002")), 401);
    std::fs::write(&keys, "second-key-002\n").unwrap();
    s.reload();
    assert_eq!(s.create_status(Some("second-key-002")), 201, "the new key was not accepted after the SIGHUP reload");
    assert_eq!(s.create_status(Some("first-key-0001")), 401, "a removed key still works");
    // A broken file on reload keeps the keys in force: checked once the
    // reload of the broken file is done, not merely sent.
    std::fs::write(&keys, "short\n").unwrap();
    s.reload();
    assert_eq!(s.create_status(Some("second-key-002")), 201, "a reload of a broken key file dropped the keys in force");
    assert_eq!(s.create_status(Some("first-key-0001")), 401);
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn a_hangup_as_soon_as_the_server_answers_reloads_and_does_not_stop_it() {
    // SIGHUP's default action ends a process: the handler must be in place
    // before /healthz first answers, which is when Server::start returns.
    // The reload being counted shows the handler ran; a process the signal
    // ended fails `wait_for_reloads`, which shows its log.
    for _ in 0..5 {
        let s = Server::start(&[]);
        s.hangup();
        s.wait_for_reloads(1.0);
        assert_eq!(s.get("/healthz").status, 200, "the server died of a SIGHUP sent right after start");
    }
}

#[test]
fn slow_clients_do_not_delay_others_and_are_dropped_after_the_header_timeout() {
    let s = Server::start(&["--header-timeout", "2s"]);
    let code = s.create(json!({"url": "https://example.com/slow"}))["code"].as_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", s.port);
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    // Served while all 300 wait on their headers.
    let r = s.get(&format!("/{code}"));
    assert_eq!(r.status, 302);
    let mut open = 0;
    for c in &mut slow {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    assert_eq!(open, 300, "slow clients were dropped before their timeout");
    // All dropped once the timeout has passed (the watchdog checks a few times per timeout).
    let closed = poll_until(Duration::from_secs(6), || {
        let mut closed = 0;
        for c in slow.iter_mut() {
            let mut b = [0u8; 64];
            match c.read(&mut b) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
                _ => {}
            }
        }
        (closed == 300).then_some(())
    });
    assert!(closed.is_some(), "slow clients were not dropped after the header timeout");
    assert_eq!(s.get(&format!("/{code}")).status, 302);
}

#[test]
fn connections_beyond_the_limit_wait_until_one_closes() {
    // One worker: the limit is split across workers, and which worker's
    // queue a connection lands in is the kernel's choice.
    let s = Server::start(&["--max-connections", "3", "--workers", "1"]);
    let addr = format!("127.0.0.1:{}", s.port);
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // The test client may hold an idle pooled connection of its own, so
    // open connections until one is not served.
    let mut held = Vec::new();
    let waiting = loop {
        assert!(held.len() < 4, "more than --max-connections connections were served at once");
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(req).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut b = [0u8; 256];
        match c.read(&mut b) {
            Ok(n) if n > 0 => held.push(c),
            _ => break c,
        }
    };
    assert!(held.len() >= 2, "only {} connections were served", held.len());
    let mut waiting = waiting;
    drop(held.pop());
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 256];
    let n = waiting.read(&mut b).expect("the waiting connection was not served after another closed");
    assert!(std::str::from_utf8(&b[..n]).unwrap().starts_with("HTTP/1.1 200"));
}

#[test]
fn creates_are_rate_limited_per_client_and_redirects_are_not() {
    let s = Server::start(&["--create-rate", "10"]);
    let code = s.create(json!({"url": "https://example.com/rl"}))["code"].as_str().unwrap().to_string();
    let mut limited = 0;
    for i in 0..60 {
        let r = s.post_json("/api/v1/links", &json!({"url": format!("https://example.com/{i}")}));
        match r.status {
            201 => {}
            429 => {
                limited += 1;
                let wait: u64 = r.header("retry-after").expect("429 without Retry-After").parse().unwrap();
                assert!((1..=60).contains(&wait));
                r.problem(429);
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert!(limited >= 20, "only {limited} of 60 rapid creates were refused");
    for _ in 0..200 {
        assert_eq!(s.get(&format!("/{code}")).status, 302);
    }
}

#[test]
fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let fwd = |s: &Server, ip: &str| {
        s.send_json("POST", "/api/v1/links", &[("X-Forwarded-For", ip)], &json!({"url": "https://example.com/p"})).status
    };
    let trusted = Server::start(&["--create-rate", "1", "--trusted-proxy", "127.0.0.0/8"]);
    assert_eq!(fwd(&trusted, "203.0.113.1"), 201);
    assert_eq!(fwd(&trusted, "203.0.113.2"), 201, "a second client behind the proxy shared the first one's limit");
    assert_eq!(fwd(&trusted, "203.0.113.1"), 429);
    let direct = Server::start(&["--create-rate", "1"]);
    assert_eq!(fwd(&direct, "203.0.113.1"), 201);
    assert_eq!(fwd(&direct, "203.0.113.2"), 429, "X-Forwarded-For was believed from an untrusted peer");
}

#[test]
fn blocked_domains_and_the_shortener_itself_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, "evil.example\nbücher.example\n").unwrap();
    let s = Server::start(&["--blocklist", list.to_str().unwrap(), "--public-url", "http://sho.rt"]);
    for url in [
        "https://evil.example/login",
        "https://login.EVIL.example./x",
        "https://xn--bcher-kva.example/",
        "https://shop.bücher.example/",
        "http://sho.rt/abc",
        "https://SHO.RT/loop",
    ] {
        let r = s.post_json("/api/v1/links", &json!({"url": url}));
        r.field_problem(400, "url");
    }
    let ok = s.create(json!({"url": "https://good.example/"}));
    assert!(ok["short_url"].as_str().unwrap().starts_with("http://sho.rt/"));
    std::fs::write(&list, "evil.example\ngood.example\n").unwrap();
    s.reload();
    let r = s.post_json("/api/v1/links", &json!({"url": "https://good.example/2"}));
    assert_eq!(r.status, 400, "the reloaded blocklist was not applied: {r:?}");
    // Existing links keep redirecting; disabling one answers 410 at once.
    let code = ok["code"].as_str().unwrap();
    assert_eq!(s.get(&format!("/{code}")).status, 302);
    assert_eq!(s.patch_json(&format!("/api/v1/links/{code}"), &json!({"disabled": true})).status, 200);
    assert_eq!(s.get(&format!("/{code}")).status, 410);
}

#[test]
fn a_read_only_data_directory_serves_redirects_and_refuses_writes() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"]).arg(mnt.path()).status();
    if !matches!(mounted, Ok(s) if s.success()) {
        return common::prereq::skip_or_fail("a tmpfs mount (needs root)", "run as root: mount -t tmpfs");
    }
    let data = mnt.path().join("data");
    let bin = env!("CARGO_BIN_EXE_shortd");
    /// Kills the server however the test ends, so no child outlives it.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    struct Mounted(std::path::PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _mounted = Mounted(mnt.path().to_path_buf());
    // Fill it through a normal server, then remount read-only.
    let run = |extra: &[&str]| {
        let port = common::free_port();
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap(), "--log-level", "warn"])
            .args(["--segment-bytes", "1048576"])
            .args(extra)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let up = poll_until(Duration::from_secs(10), || common::agent().get(&format!("{base}/healthz")).call().ok().map(|_| ()));
        assert!(up.is_some(), "server on {} did not start", data.display());
        (Running(child), base)
    };
    let (mut child, base) = run(&[]);
    let created = common::fetch(
        common::agent().post(&format!("{base}/api/v1/links")).set("Content-Type", "application/json"),
        Body::Bytes(br#"{"url":"https://example.com/ro","alias":"ro-link"}"#),
    );
    assert_eq!(created.status, 201);
    Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status().unwrap();
    child.0.wait().unwrap();
    let remounted = Command::new("mount").args(["-o", "remount,ro"]).arg(mnt.path()).status().unwrap();
    assert!(remounted.success());

    let (_child, base) = run(&[]);
    let r = common::fetch(common::agent().get(&format!("{base}/ro-link")), Body::None);
    assert_eq!(r.status, 302);
    let w = common::fetch(
        common::agent().post(&format!("{base}/api/v1/links")).set("Content-Type", "application/json"),
        Body::Bytes(br#"{"url":"https://example.com/new"}"#),
    );
    let p = w.problem(503);
    assert!(p["detail"].as_str().unwrap().contains("read-only"), "{p}");
    let ready = common::fetch(common::agent().get(&format!("{base}/readyz")), Body::None);
    assert!(ready.json()["writes"].as_str().unwrap().starts_with("refused"));
}
