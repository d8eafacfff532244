//! Several real shortd processes on 127.0.0.x addresses forming a cluster,
//! for `tests/cluster.rs` and `tests/raft.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::{agent, free_port, poll_until};

pub const KEY: &str = "test-cluster-key";
/// Generous bound for the cluster to settle (gossip, joining pulls).
pub const SETTLE: Duration = Duration::from_secs(30);

pub struct Node {
    pub id: String,
    pub addr: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    _root: Option<TempDir>,
}

impl Node {
    /// A node on `127.0.0.{host}`, seeded with `seed` (if any).
    pub fn start(id: &str, host: u8, seed: Option<&Node>, extra: &[&str]) -> Node {
        let root = tempfile::Builder::new().prefix("shortd-cluster-").tempdir().unwrap();
        let addr = format!("127.0.0.{host}:{}", free_port());
        let mut args: Vec<String> =
            ["--node-id", id, "--cluster-key", KEY, "--workers", "1", "--durability", "always", "--segment-bytes", "4194304"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        if let Some(s) = seed {
            args.extend(["--seed".to_string(), s.addr.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut n = Node { id: id.into(), addr, dir: root.path().join("data"), args, child: None, _root: Some(root) };
        n.spawn();
        n
    }

    pub fn spawn(&mut self) {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_file_name("shortd.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        let mut child = self.child.take().unwrap();
        let exited = poll_until(Duration::from_secs(20), || child.try_wait().unwrap());
        assert!(exited.is_some_and(|s| s.success()), "node {} did not stop cleanly: {exited:?}; log:\n{}", self.id, self.log());
    }

    /// What the latest start said of its partition replicas: (reopened,
    /// rebuilt).
    pub fn replicas_opened(&self) -> (u32, u32) {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("partition replicas opened")).expect("no start reported its replicas");
        let field = |name: &str| -> u32 {
            let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 1;
            line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        (field("reopened"), field("rebuilt"))
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
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

    pub fn status(&self, method: &str, path: &str) -> u16 {
        self.call(method, path, None).0
    }

    pub fn create(&self, url: &str) -> String {
        let (status, body, _) = self.call("POST", "/api/v1/links", Some(&json!({ "url": url })));
        assert_eq!(status, 201, "create through {}: {body}", self.id);
        body["code"].as_str().unwrap().to_string()
    }

    pub fn cluster(&self) -> Value {
        self.call("GET", "/api/v1/cluster", None).1
    }

    pub fn redirects(&self, code: &str, url: &str) -> bool {
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
pub fn wait_settled(nodes: &[&Node], ids: &[&str]) {
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

pub fn assert_all_redirect(links: &[(String, String)], nodes: &[&Node]) {
    for (code, url) in links {
        for n in nodes {
            assert!(n.redirects(code, url), "{code} does not redirect from {} ({:?})", n.id, n.call("GET", &format!("/{code}"), None));
        }
    }
}
