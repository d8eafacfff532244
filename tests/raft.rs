//! The cluster's consensus, checked as an outside client would: three nodes
//! named `node-11`, `node-23` and `node-5` (two of which shared an id slot
//! under the old scheme), `--durability always`, the default replication
//! factor. Traffic from 12 threads mixes generated creates, aliases raced
//! by two clients through two nodes, and one Idempotency-Key sent four
//! times at once through different nodes; every create carries its own key
//! and is retried on 502/503/504 or a dropped connection for up to 15 s.
//! It runs with every node up, with one paused (SIGSTOP) for 6 s, and with
//! one killed (kill -9) and brought back. Afterwards every acknowledged
//! link redirects from every node, every raced alias had exactly one
//! winner and shows its URL, and every key gave one code.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{wait_settled, Node};
use serde_json::{json, Value};

const RETRY_FOR: Duration = Duration::from_secs(15);
const TRAFFIC: Duration = Duration::from_secs(8);
const NAMES: [&str; 3] = ["node-11", "node-23", "node-5"];

fn three(host: u8) -> Vec<Node> {
    let flags: [&str; 0] = [];
    let first = Node::start(NAMES[0], host, None, &flags);
    let second = Node::start(NAMES[1], host + 1, Some(&first), &flags);
    let third = Node::start(NAMES[2], host + 2, Some(&first), &flags);
    let nodes = vec![first, second, third];
    wait_settled(&nodes.iter().collect::<Vec<_>>(), &NAMES);
    nodes
}

/// A create as a careful client makes it: its own key, retried while the
/// answer is 502/503/504 or no answer. `None` when it never got one.
fn careful_create(node: &Node, body: &Value, key: &str) -> Option<(u16, Value)> {
    let started = Instant::now();
    loop {
        let req = common::agent().post(&node.url("/api/v1/links")).set("idempotency-key", key);
        let (status, answer) = match req.send_json(body.clone()) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        };
        if ![0, 502, 503, 504].contains(&status) {
            return Some((status, answer));
        }
        if started.elapsed() > RETRY_FOR {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Default)]
struct Seen {
    /// code -> URL, for every create answered 201.
    links: Mutex<HashMap<String, String>>,
    /// alias -> the URLs of its 201 answers, and how many clients raced it.
    races: Mutex<HashMap<String, (Vec<String>, usize)>>,
    /// key -> the codes its four requests were answered with.
    keys: Mutex<HashMap<String, Vec<String>>>,
    /// Requests that got no answer in 15 s of retries, or an unexpected one.
    failures: Mutex<Vec<String>>,
}

impl Seen {
    fn acknowledged(&self, what: &str, answer: Option<(u16, Value)>) -> Option<(String, String)> {
        match answer {
            Some((201, body)) => {
                let (code, url) = (body["code"].as_str()?.to_string(), body["url"].as_str()?.to_string());
                self.links.lock().unwrap().insert(code.clone(), url.clone());
                Some((code, url))
            }
            Some((409, _)) if what.starts_with("alias") => None,
            other => {
                self.failures.lock().unwrap().push(format!("{what}: {other:?}"));
                None
            }
        }
    }
}

/// 12 client threads for `TRAFFIC`: four make generated links, four race
/// aliases in pairs, four send one key four times at once.
fn traffic(nodes: &[Node], up: &[usize], phase: &str, seen: &Seen) {
    let stop = AtomicBool::new(false);
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    std::thread::scope(|s| {
        for t in 0..12 {
            let (stop, seen, next) = (&stop, seen, &next);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = next();
                    let node = &nodes[up[n as usize % up.len()]];
                    match t % 3 {
                        0 => {
                            let url = format!("https://example.com/{phase}/gen/{n}");
                            let answer = careful_create(node, &json!({ "url": url }), &format!("{phase}-gen-{n}"));
                            seen.acknowledged(&format!("generated {n}"), answer);
                        }
                        1 => {
                            let alias = format!("{phase}-race-{n}");
                            let (a, b) = (&nodes[up[0]], &nodes[up[1 % up.len()]]);
                            let answers: Vec<Option<(u16, Value)>> = std::thread::scope(|r| {
                                let tries: Vec<_> = [a, b]
                                    .into_iter()
                                    .enumerate()
                                    .map(|(side, node)| {
                                        let (alias, url) = (alias.clone(), format!("https://example.com/{phase}/race/{n}/{side}"));
                                        r.spawn(move || {
                                            careful_create(node, &json!({"url": url, "alias": alias}), &format!("{alias}-{side}"))
                                        })
                                    })
                                    .collect();
                                tries.into_iter().map(|t| t.join().unwrap()).collect()
                            });
                            let mut won = Vec::new();
                            for answer in answers {
                                if let Some((_, url)) = seen.acknowledged(&format!("alias {alias}"), answer) {
                                    won.push(url);
                                }
                            }
                            seen.races.lock().unwrap().insert(alias, (won, 2));
                        }
                        _ => {
                            let key = format!("{phase}-key-{n}");
                            let url = format!("https://example.com/{phase}/key/{n}");
                            let codes: Vec<Option<String>> = std::thread::scope(|r| {
                                let sends: Vec<_> = (0..4)
                                    .map(|i| {
                                        let (node, key, url) = (&nodes[up[i % up.len()]], key.clone(), url.clone());
                                        r.spawn(move || careful_create(node, &json!({ "url": url }), &key))
                                    })
                                    .collect();
                                sends
                                    .into_iter()
                                    .map(|h| seen.acknowledged(&format!("key {key}"), h.join().unwrap()).map(|(code, _)| code))
                                    .collect()
                            });
                            seen.keys.lock().unwrap().insert(key, codes.into_iter().flatten().collect());
                        }
                    }
                }
            });
        }
        std::thread::sleep(TRAFFIC);
        stop.store(true, Ordering::Relaxed);
    });
}

fn check(nodes: &[Node], seen: &Seen) {
    let failures = seen.failures.lock().unwrap();
    assert!(failures.is_empty(), "{} requests failed, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    for (alias, (won, _)) in seen.races.lock().unwrap().iter() {
        assert_eq!(won.len(), 1, "alias {alias} had {} winners: {won:?}", won.len());
        for n in nodes {
            assert!(n.redirects(alias, &won[0]), "{alias} from {}: {:?}", n.id, n.call("GET", &format!("/{alias}"), None));
        }
    }
    for (key, codes) in seen.keys.lock().unwrap().iter() {
        assert_eq!(codes.len(), 4, "key {key}: {codes:?}");
        assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 1, "key {key} gave several codes: {codes:?}");
    }
    let links = seen.links.lock().unwrap().clone();
    eprintln!(
        "{} links acknowledged, {} aliases raced, {} keys sent four times",
        links.len(),
        seen.races.lock().unwrap().len(),
        seen.keys.lock().unwrap().len()
    );
    assert!(links.len() > 50, "only {} links acknowledged", links.len());
    for (code, url) in &links {
        for n in nodes {
            assert!(n.redirects(code, url), "{code} -> {url} from {}: {:?}", n.id, n.call("GET", &format!("/{code}"), None));
        }
    }
}

#[test]
fn generated_codes_never_collide_whatever_the_node_ids() {
    let nodes = three(61);
    let mut codes = HashSet::new();
    let mut create = |n: &Node, i: usize| {
        let (status, body, _) = n.call("POST", "/api/v1/links", Some(&json!({"url": format!("https://example.com/c/{i}")})));
        assert_eq!(status, 201, "create {i} through {}: {body}", n.id);
        assert!(codes.insert(body["code"].as_str().unwrap().to_string()), "code {} made twice", body["code"]);
    };
    (0..300).for_each(|i| create(&nodes[0], i));
    (300..400).for_each(|i| create(&nodes[1], i));
    (400..500).for_each(|i| create(&nodes[2], i));
    assert_eq!(codes.len(), 500);
}

#[test]
fn no_acknowledged_create_is_lost_duplicated_or_taken_twice_through_a_pause_and_a_crash() {
    let mut nodes = three(71);
    let seen = Seen::default();
    traffic(&nodes, &[0, 1, 2], "up", &seen);

    // node-5 paused for 6 s in the middle of the traffic: clients keep
    // sending to all three; those that picked node-5 wait, or retry.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            nodes[2].signal("-STOP");
            std::thread::sleep(Duration::from_secs(6));
            nodes[2].signal("-CONT");
        });
        traffic(&nodes, &[0, 1, 2], "paused", &seen);
    });
    wait_settled(&nodes.iter().collect::<Vec<_>>(), &NAMES);

    // node-23 killed with kill -9 while traffic goes to the other two,
    // then brought back.
    nodes[1].kill();
    traffic(&nodes, &[0, 2], "killed", &seen);
    nodes[1].spawn();
    wait_settled(&nodes.iter().collect::<Vec<_>>(), &NAMES);
    check(&nodes, &seen);
}

#[test]
fn a_click_limit_holds_across_nodes() {
    let nodes = three(81);
    let (status, body, _) = nodes[0].call("POST", "/api/v1/links", Some(&json!({"url": "https://example.com/limited", "max_clicks": 4})));
    assert_eq!(status, 201, "{body}");
    let code = body["code"].as_str().unwrap().to_string();
    // Two clicks through each node: four are within the limit, wherever
    // they land, and the rest are 410 everywhere.
    let answers: Vec<u16> = (0..6).map(|i| nodes[i % 3].call("GET", &format!("/{code}"), None).0).collect();
    assert_eq!(answers.iter().filter(|&&s| s == 302).count(), 4, "{answers:?}");
    assert_eq!(&answers[4..], &[410, 410], "{answers:?}");
    for n in &nodes {
        assert_eq!(n.call("GET", &format!("/{code}"), None).0, 410, "through {}", n.id);
    }
    let (_, link, _) = nodes[1].call("GET", &format!("/api/v1/links/{code}"), None);
    assert_eq!(link["clicks"], 4, "{link}");
}
