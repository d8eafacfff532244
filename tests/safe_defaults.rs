//! Doors that must stay shut by default, tried as an operator would: a key
//! file emptied on a running server, a second server on a port already in
//! use, cluster mode without a key, logs written to a file.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{poll_until, Server};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_shortd");

/// Runs `shortd serve ARGS` on a fresh data directory and waits (bounded)
/// for it to exit; returns its exit success and what it printed.
fn serve_expecting_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll_until(Duration::from_secs(10), || child.try_wait().unwrap());
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("shortd serve {args:?} kept running; it should have refused to start");
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_key_file_emptied_or_left_with_only_a_comment_keeps_the_api_closed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "operator-key-0001\n").unwrap();
    let s = Server::start(&["--api-key-file", keys.to_str().unwrap()]);
    assert_eq!(s.create_status(Some("operator-key-0001")), 201);
    assert_eq!(s.create_status(None), 401);

    for (i, emptied) in ["", "# every key rotated out\n"].into_iter().enumerate() {
        std::fs::write(&keys, emptied).unwrap();
        s.hangup();
        let closed = poll_until(Duration::from_secs(5), || (s.create_status(Some("operator-key-0001")) == 401).then_some(()));
        assert!(closed.is_some(), "step {i}: the old key still works after the file was emptied");
        assert_eq!(s.create_status(None), 401, "step {i}: a request without a key was let in (loopback-open fallback)");
        assert_eq!(s.get("/api/v1/links").status, 401, "step {i}: listing links without a key");
    }
    assert!(s.log().contains("holds no key"), "the empty reload is not logged as an error:\n{}", s.log());

    std::fs::write(&keys, "operator-key-0002\n").unwrap();
    s.hangup();
    let open = poll_until(Duration::from_secs(5), || (s.create_status(Some("operator-key-0002")) == 201).then_some(()));
    assert!(open.is_some(), "a new key was not taken after the file was filled again");
}

#[test]
fn a_server_started_with_an_empty_key_file_is_closed_not_loopback_open() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# no keys yet\n").unwrap();
    let s = Server::start(&["--api-key-file", keys.to_str().unwrap()]);
    assert_eq!(s.create_status(None), 401);
}

#[test]
fn a_second_server_on_a_held_port_exits_and_the_first_keeps_serving() {
    let first = Server::start(&[]);
    let code = first.create(json!({"url": "https://example.com/first"}))["code"].as_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", first.port);
    let (ok, stderr) = serve_expecting_exit(&["--listen", &addr, "--workers", "2"]);
    assert!(!ok, "the second server exited with success");
    assert!(stderr.contains(&addr), "the refusal does not name the address: {stderr}");
    for _ in 0..20 {
        let r = first.get(&format!("/{code}"));
        assert_eq!((r.status, r.header("location")), (302, Some("https://example.com/first")));
    }
}

#[test]
fn a_port_held_by_another_program_is_refused_too() {
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let (ok, stderr) = serve_expecting_exit(&["--listen", &addr]);
    assert!(!ok && stderr.contains(&addr) && stderr.contains("in use"), "{stderr}");
}

#[test]
fn cluster_mode_refuses_to_start_without_a_long_enough_cluster_key() {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (ok, stderr) = serve_expecting_exit(&["--listen", &listen, "--node-id", "n1"]);
    assert!(!ok && stderr.contains("--cluster-key"), "{stderr}");
    let (ok, stderr) = serve_expecting_exit(&["--listen", &listen, "--seed", "127.0.0.1:1"]);
    assert!(!ok && stderr.contains("--cluster-key"), "{stderr}");
    let (ok, stderr) = serve_expecting_exit(&["--listen", &listen, "--node-id", "n1", "--cluster-key", "fifteen-chars!!"]);
    assert!(!ok && stderr.contains("at least 16"), "{stderr}");
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let s = Server::start(&["--log-level", "debug"]);
    s.create(json!({"url": "https://example.com/log"}));
    let log = s.log();
    assert!(log.contains("shortd serving"), "{log}");
    assert!(!log.contains('\x1b'), "an ESC byte in a log written to a file:\n{log}");
}
