//! Several real shortd processes on 127.0.0.x addresses forming a cluster:
//! crashes (`kill -9`), restarts, a paused peer (SIGSTOP), a new member,
//! removal of a dead one, and what a client sees through every node.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent, free_port, poll_until};
use serde_json::{json, Value};
use tempfile::TempDir;

const KEY: &str = "test-cluster-key";
/// Generous bound for the cluster to settle (gossip, joining pulls).
const SETTLE: Duration = Duration::from_secs(30);

struct Node {
    id: String,
    addr: String,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _root: Option<TempDir>,
}

impl Node {
    /// A node on `127.0.0.{host}`, seeded with `seed` (if any).
    fn start(id: &str, host: u8, seed: Option<&Node>, extra: &[&str]) -> Node {
        let root = tempfile::Builder::new().prefix("shortd-cluster-").tempdir().unwrap();
        let addr = format!("127.0.0.{host}:{}", free_port());
        let mut args: Vec<String> =
            ["--node-id", id, "--cluster-key", KEY, "--workers", "1", "--durability", "always"].iter().map(|s| s.to_string()).collect();
        if let Some(s) = seed {
            args.extend(["--seed".to_string(), s.addr.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut n = Node { id: id.into(), addr, dir: root.path().join("data"), args, child: None, _root: Some(root) };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_file_name("shortd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shortd"))
            .arg("serve")
            .args(["--listen", &self.addr, "--data-dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting shortd");
        self.child = Some(child);
        let ok = poll_until(Duration::from_secs(10), || (self.status("GET", "/healthz") == 200).then_some(()));
        assert!(ok.is_some(), "node {} did not start; log:\n{}", self.id, self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_file_name("shortd.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
        let req = agent().request(method, &self.url(path));
        let resp = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match resp {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                let status = r.status();
                let location = r.header("location").map(String::from);
                let body = r.into_json().unwrap_or(Value::Null);
                (status, body, location)
            }
            Err(e) => (0, json!(e.to_string()), None),
        }
    }

    fn status(&self, method: &str, path: &str) -> u16 {
        self.call(method, path, None).0
    }

    fn create(&self, url: &str) -> String {
        let (status, body, _) = self.call("POST", "/api/v1/links", Some(&json!({ "url": url })));
        assert_eq!(status, 201, "create through {}: {body}", self.id);
        body["code"].as_str().unwrap().to_string()
    }

    fn cluster(&self) -> Value {
        self.call("GET", "/api/v1/cluster", None).1
    }

    fn redirects(&self, code: &str, url: &str) -> bool {
        let (status, _, location) = self.call("GET", &format!("/{code}"), None);
        status == 302 && location.as_deref() == Some(url)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until every node sees every one of `ids` as up and none rebalancing.
fn wait_settled(nodes: &[&Node], ids: &[&str]) {
    let settled = poll_until(SETTLE, || {
        nodes
            .iter()
            .all(|n| {
                let v = n.cluster();
                let up = |id: &str| v["members"].as_array().is_some_and(|m| m.iter().any(|m| m["id"] == id && m["state"] == "up"));
                ids.iter().all(|id| up(id)) && v["rebalancing"] == false
            })
            .then_some(())
    });
    assert!(settled.is_some(), "cluster did not settle: {:?}", nodes.iter().map(|n| n.cluster()).collect::<Vec<_>>());
}

fn assert_all_redirect(links: &[(String, String)], nodes: &[&Node]) {
    for (code, url) in links {
        for n in nodes {
            assert!(n.redirects(code, url), "{code} does not redirect from {} ({:?})", n.id, n.call("GET", &format!("/{code}"), None));
        }
    }
}

#[test]
fn links_survive_crashes_restarts_and_a_new_member() {
    let a = Node::start("a", 1, None, &[]);
    let mut b = Node::start("b", 2, Some(&a), &[]);
    let mut c = Node::start("c", 3, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);

    // Creates through every node; every link redirects from every node.
    let mut links = Vec::new();
    for i in 0..90 {
        let node = [&a, &b, &c][i % 3];
        let url = format!("https://example.com/page/{i}");
        links.push((node.create(&url), url));
    }
    assert_all_redirect(&links, &[&a, &b, &c]);

    // Clicks served anywhere are summed, and every node reports the sum.
    let code = a.create("https://example.com/counted");
    for i in 0..30 {
        assert!([&a, &b, &c][i % 3].redirects(&code, "https://example.com/counted"));
    }
    let summed = poll_until(Duration::from_secs(5), || {
        let counts: Vec<Value> =
            [&a, &b, &c].iter().map(|n| n.call("GET", &format!("/api/v1/links/{code}"), None).1["clicks"].clone()).collect();
        counts.iter().all(|c| c == 30).then_some(())
    });
    assert!(summed.is_some(), "clicks did not reach 30 everywhere");

    // A crashed node's links are served by the others, and creates go on.
    b.kill();
    assert_all_redirect(&links, &[&a, &c]);
    for i in 0..30 {
        let node = [&a, &c][i % 2];
        let url = format!("https://example.com/while-b-was-down/{i}");
        links.push((node.create(&url), url));
    }

    // b comes back and catches up before it is up; then c crashes.
    b.spawn();
    wait_settled(&[&a, &b], &["a", "b", "c"]);
    c.kill();
    assert_all_redirect(&links, &[&a, &b]);

    // c returns, d joins; once rebalanced, a may go.
    c.spawn();
    let d = Node::start("d", 4, Some(&a), &[]);
    let mut a = a;
    wait_settled(&[&a, &b, &c, &d], &["a", "b", "c", "d"]);
    a.kill();
    assert_all_redirect(&links, &[&b, &c, &d]);
}

#[test]
fn changes_and_deletes_show_through_every_node() {
    let a = Node::start("a", 11, None, &[]);
    let b = Node::start("b", 12, Some(&a), &[]);
    let c = Node::start("c", 13, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let codes: Vec<String> = (0..12).map(|i| b.create(&format!("https://example.com/v1/{i}"))).collect();
    for code in &codes {
        // Cached everywhere first, so a stale cache would show.
        assert!([&a, &b, &c].iter().all(|n| n.redirects(code, &code_url(code, &codes, "v1"))));
    }
    for (i, code) in codes.iter().enumerate() {
        let node = [&a, &b, &c][i % 3];
        if i % 2 == 0 {
            let (status, body, _) =
                node.call("PATCH", &format!("/api/v1/links/{code}"), Some(&json!({"url": format!("https://example.com/v2/{i}")})));
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["url"], format!("https://example.com/v2/{i}"));
        } else {
            assert_eq!(node.status("DELETE", &format!("/api/v1/links/{code}")), 204);
        }
    }
    for (i, code) in codes.iter().enumerate() {
        for n in [&a, &b, &c] {
            let seen = poll_until(Duration::from_secs(2), || {
                let (status, _, location) = n.call("GET", &format!("/{code}"), None);
                let want =
                    if i % 2 == 0 { status == 302 && location == Some(format!("https://example.com/v2/{i}")) } else { status == 410 };
                want.then_some(())
            });
            assert!(seen.is_some(), "{code} on {}: {:?}", n.id, n.call("GET", &format!("/{code}"), None));
        }
    }
    // An alias is claimed once across the cluster.
    let (s1, _, _) = a.call("POST", "/api/v1/links", Some(&json!({"url": "https://example.com/x", "alias": "shared-name"})));
    let (s2, body, _) = c.call("POST", "/api/v1/links", Some(&json!({"url": "https://example.com/y", "alias": "shared-name"})));
    assert_eq!((s1, s2), (201, 409), "{body}");
    assert!(b.redirects("shared-name", "https://example.com/x"));
}

fn code_url(code: &str, codes: &[String], version: &str) -> String {
    let i = codes.iter().position(|c| c == code).unwrap();
    format!("https://example.com/{version}/{i}")
}

#[test]
fn a_paused_peer_delays_requests_by_at_most_the_peer_timeout() {
    let timeout = Duration::from_secs(1);
    let flags = ["--peer-timeout", "1s"];
    let a = Node::start("a", 21, None, &flags);
    let b = Node::start("b", 22, Some(&a), &flags);
    let c = Node::start("c", 23, Some(&a), &flags);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let links: Vec<(String, String)> = (0..40)
        .map(|i| {
            let url = format!("https://example.com/p/{i}");
            (b.create(&url), url)
        })
        .collect();
    c.signal("-STOP");
    // Reads of links a does not hold and has not cached, and creates: none
    // waits on the stopped peer longer than one peer timeout. The slack for
    // the ordinary work of a request (generous, for a loaded test machine)
    // is less than a second timeout would add.
    let slack = Duration::from_millis(900);
    for (code, url) in &links {
        let started = Instant::now();
        assert!(a.redirects(code, url), "{code}");
        assert!(started.elapsed() < timeout + slack, "redirect of {code} took {:?}", started.elapsed());
    }
    for i in 0..20 {
        let started = Instant::now();
        a.create(&format!("https://example.com/during-pause/{i}"));
        assert!(started.elapsed() < timeout + slack, "create took {:?}", started.elapsed());
    }
    c.signal("-CONT");
}

#[test]
fn node_to_node_requests_need_the_cluster_key() {
    let a = Node::start("a", 31, None, &[]);
    wait_settled(&[&a], &["a"]);
    let code = a.create("https://example.com/secret");
    let unauth = agent().get(&a.url(&format!("/internal/v1/records/{code}"))).call();
    assert!(matches!(unauth, Err(ureq::Error::Status(401, _))), "{unauth:?}");
    let wrong = agent().get(&a.url(&format!("/internal/v1/records/{code}"))).set("x-shortd-cluster-key", "not-the-key").call();
    assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
    let right = agent().get(&a.url(&format!("/internal/v1/records/{code}"))).set("x-shortd-cluster-key", KEY).call().unwrap();
    assert_eq!(right.into_json::<Value>().unwrap()["url"], "https://example.com/secret");
}

#[test]
fn a_removed_or_long_dead_member_hands_its_share_to_the_others() {
    let flags = ["--dead-after", "3s"];
    let a = Node::start("a", 41, None, &flags);
    let b = Node::start("b", 42, Some(&a), &flags);
    let mut c = Node::start("c", 43, Some(&a), &flags);
    let mut d = Node::start("d", 44, Some(&a), &flags);
    wait_settled(&[&a, &b, &c, &d], &["a", "b", "c", "d"]);
    let links: Vec<(String, String)> = (0..60)
        .map(|i| {
            let url = format!("https://example.com/r/{i}");
            ([&a, &b, &c, &d][i % 4].create(&url), url)
        })
        .collect();

    // An operator removes a crashed node: it leaves every node's ring.
    c.kill();
    assert_eq!(a.status("DELETE", "/api/v1/cluster/members/c"), 204);
    assert_eq!(a.status("DELETE", "/api/v1/cluster/members/nobody"), 404);
    assert_eq!(a.status("DELETE", "/api/v1/cluster/members/a"), 409);
    let gone = |n: &Node, id: &str| n.cluster()["members"].as_array().unwrap().iter().all(|m| m["id"] != id);
    assert!(poll_until(SETTLE, || (gone(&a, "c") && gone(&b, "c") && gone(&d, "c")).then_some(())).is_some());

    // Another crashes and stays down past --dead-after: it leaves too
    // (after c's share has moved, or links on both would be lost).
    wait_settled(&[&a, &b, &d], &["a", "b", "d"]);
    d.kill();
    assert!(poll_until(SETTLE, || (gone(&a, "d") && gone(&b, "d")).then_some(())).is_some(), "{}", a.cluster());
    wait_settled(&[&a, &b], &["a", "b"]);

    // a and b now hold everything between them, so either alone serves it all.
    let mut b = b;
    b.kill();
    assert_all_redirect(&links, &[&a]);
}

#[test]
fn a_node_back_on_an_empty_disk_without_a_seed_pulls_its_share() {
    let mut a = Node::start("a", 51, None, &[]);
    let mut b = Node::start("b", 52, Some(&a), &[]);
    let c = Node::start("c", 53, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let links: Vec<(String, String)> = (0..45)
        .map(|i| {
            let url = format!("https://example.com/disk/{i}");
            ([&a, &b, &c][i % 3].create(&url), url)
        })
        .collect();

    // a loses its disk and comes back alone (no --seed, and the others
    // paused, so it starts up on its own): once the others reach it over
    // gossip it pulls everything it holds.
    a.kill();
    std::fs::remove_dir_all(&a.dir).unwrap();
    b.signal("-STOP");
    c.signal("-STOP");
    a.spawn();
    assert!(poll_until(SETTLE, || a.cluster()["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["id"] == "a" && m["state"] == "up"))
        .then_some(()))
    .is_some());
    b.signal("-CONT");
    c.signal("-CONT");
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    b.kill();
    assert_all_redirect(&links, &[&a, &c]);
}
