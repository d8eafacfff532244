//! Several real shortd processes on 127.0.0.x addresses forming a Raft
//! cluster: crashes (`kill -9`), restarts, a paused peer (SIGSTOP), a new
//! member, removal of a dead one, a replaced disk, and what a client sees
//! through every node.

mod common;

use std::time::Duration;

use common::cluster::{assert_all_redirect, wait_settled, Node, KEY, SETTLE};
use common::{agent, poll_until};
use serde_json::{json, Value};

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
fn a_paused_node_costs_an_election_and_loses_nothing() {
    let a = Node::start("a", 21, None, &[]);
    let b = Node::start("b", 22, Some(&a), &[]);
    let c = Node::start("c", 23, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let mut links: Vec<(String, String)> = (0..40)
        .map(|i| {
            let url = format!("https://example.com/p/{i}");
            (b.create(&url), url)
        })
        .collect();
    // c may lead some partitions: their writes wait for an election among
    // a and b (about two seconds), then go on. Nothing needs c meanwhile.
    c.signal("-STOP");
    assert_all_redirect(&links, &[&a, &b]);
    for i in 0..20 {
        let url = format!("https://example.com/during-pause/{i}");
        links.push(([&a, &b][i % 2].create(&url), url));
    }
    c.signal("-CONT");
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    assert_all_redirect(&links, &[&a, &b, &c]);
}

#[test]
fn node_to_node_requests_need_the_cluster_key() {
    let a = Node::start("a", 31, None, &[]);
    wait_settled(&[&a], &["a"]);
    let code = a.create("https://example.com/secret");
    let paths = [
        ("GET", format!("/internal/v1/records/{code}")),
        ("POST", "/internal/v1/raft/append?group=0".to_string()),
        ("POST", "/internal/v1/raft/vote?group=0".to_string()),
        ("POST", "/internal/v1/raft/snapshot?group=0".to_string()),
        ("POST", "/internal/v1/propose?group=0".to_string()),
        ("POST", "/internal/v1/join".to_string()),
        ("POST", format!("/internal/v1/invalidate/{code}")),
    ];
    for (method, path) in &paths {
        for key in [None, Some("not-the-key")] {
            let mut req = agent().request(method, &a.url(path));
            if let Some(k) = key {
                req = req.set("x-shortd-cluster-key", k);
            }
            let answer = if *method == "POST" { req.send_string("{}") } else { req.call() };
            assert!(matches!(answer, Err(ureq::Error::Status(401, _))), "{method} {path} with {key:?}: {answer:?}");
        }
    }
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
fn a_node_back_on_an_empty_disk_takes_its_place_again() {
    let mut a = Node::start("a", 51, None, &[]);
    let b = Node::start("b", 52, Some(&a), &[]);
    let mut c = Node::start("c", 53, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let links: Vec<(String, String)> = (0..45)
        .map(|i| {
            let url = format!("https://example.com/disk/{i}");
            ([&a, &b, &c][i % 3].create(&url), url)
        })
        .collect();

    // a loses its disk and comes back seeded by b: a new Raft identity
    // under the old name, which replaces the old one in every group.
    a.kill();
    std::fs::remove_dir_all(&a.dir).unwrap();
    a.args.extend(["--seed".to_string(), b.addr.clone()]);
    a.spawn();
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    c.kill();
    assert_all_redirect(&links, &[&a, &b]);
}

#[test]
fn a_nodes_listing_pages_through_every_partition_exactly_once() {
    let a = Node::start("a", 61, None, &[]);
    let b = Node::start("b", 62, Some(&a), &[]);
    let c = Node::start("c", 63, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let mut created: Vec<String> = (0..40).map(|i| [&a, &b, &c][i % 3].create(&format!("https://example.com/listed/{i}"))).collect();
    created.sort();

    // Each node lists its replicas, which catch up within moments.
    for node in [&a, &b, &c] {
        let listed = poll_until(Duration::from_secs(10), || {
            let (mut seen, mut cursor) = (Vec::new(), String::new());
            loop {
                let (status, page, _) = node.call("GET", &format!("/api/v1/links?limit=7&cursor={cursor}"), None);
                assert_eq!(status, 200, "{page}");
                let links = page["links"].as_array().unwrap();
                assert!(links.len() <= 7);
                seen.extend(links.iter().map(|l| l["code"].as_str().unwrap().to_string()));
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = next.to_string(),
                    None => break,
                }
            }
            seen.sort();
            (seen == created).then_some(seen)
        });
        assert!(listed.is_some(), "node {} never listed each of the 40 links exactly once", node.id);
    }
    let (status, body, _) = a.call("GET", "/api/v1/links?cursor=zz", None);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_graceful_restart_reopens_every_replica_and_loses_nothing() {
    let mut a = Node::start("a", 71, None, &[]);
    let mut b = Node::start("b", 72, Some(&a), &[]);
    let mut c = Node::start("c", 73, Some(&a), &[]);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    assert_eq!(c.replicas_opened(), (0, 16), "a first start has nothing to reopen");

    let mut links: Vec<(String, String)> = (0..30)
        .map(|i| {
            let url = format!("https://example.com/restart/{i}");
            ([&a, &b, &c][i % 3].create(&url), url)
        })
        .collect();
    let changed = "https://example.com/changed";
    let (status, body, _) = b.call("PATCH", &format!("/api/v1/links/{}", links[0].0), Some(&json!({ "url": changed })));
    assert_eq!(status, 200, "{body}");
    links[0].1 = changed.to_string();
    let deleted = links.pop().unwrap().0;
    assert_eq!(c.status("DELETE", &format!("/api/v1/links/{deleted}")), 204);
    // (status, whether it was a replay, the code)
    let keyed = |node: &Node| -> (u16, bool, String) {
        let req = agent().post(&node.url("/api/v1/links")).set("idempotency-key", "restart-key-1");
        match req.send_json(json!({ "url": "https://example.com/keyed" })) {
            Ok(r) => {
                let replayed = r.header("idempotent-replayed") == Some("true");
                (r.status(), replayed, r.into_json::<Value>().unwrap()["code"].as_str().unwrap().to_string())
            }
            Err(e) => panic!("keyed create through {}: {e}", node.id),
        }
    };
    let (status, replayed, keyed_code) = keyed(&a);
    assert_eq!((status, replayed), (201, false));
    let counted = links[1].0.clone();
    for i in 0..5 {
        assert!([&a, &b, &c][i % 3].redirects(&counted, &links[1].1));
    }
    let codes = |links: &[(String, String)]| -> Vec<String> { links.iter().map(|(c, _)| c.clone()).chain([keyed_code.clone()]).collect() };

    // c stops gracefully while the others take writes; back, it reopens
    // every replica and catches up from the journal.
    c.stop();
    for i in 0..10 {
        let url = format!("https://example.com/while-c-was-stopped/{i}");
        links.push(([&a, &b][i % 2].create(&url), url));
    }
    c.spawn();
    assert_eq!(c.replicas_opened(), (16, 0));
    assert!(lists_exactly(&c, &codes(&links)), "c's replicas did not catch up after reopening");

    // The whole cluster stops gracefully and comes back.
    for n in [&mut a, &mut b, &mut c] {
        n.stop();
    }
    for n in [&mut a, &mut b, &mut c] {
        n.spawn();
    }
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    for n in [&a, &b, &c] {
        assert_eq!(n.replicas_opened(), (16, 0), "node {}", n.id);
        assert!(lists_exactly(n, &codes(&links)), "node {} lost or kept a link it should not have", n.id);
        assert_eq!(n.status("GET", &format!("/{deleted}")), 410, "the deleted link came back on {}", n.id);
    }
    assert_all_redirect(&links, &[&a, &b, &c]);
    // The claim of the key survived: a retry is answered with its code.
    assert_eq!(keyed(&b), (201, true, keyed_code.clone()), "the idempotency key was forgotten in the restart");
    let (_, shown, _) = c.call("GET", &format!("/api/v1/links/{counted}"), None);
    assert_eq!(shown["clicks"], 5, "clicks served before the stop: {shown}");

    // A damaged marker costs only its replica a rebuild.
    c.stop();
    let marker = c.dir.join("state/p-00/stopped");
    let mut bytes = std::fs::read(&marker).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&marker, bytes).unwrap();
    c.spawn();
    assert_eq!(c.replicas_opened(), (15, 1));
    assert!(lists_exactly(&c, &codes(&links)), "c lost links after rebuilding a replica");

    // A crash leaves no marker: every replica is rebuilt, nothing is lost.
    c.kill();
    c.spawn();
    assert_eq!(c.replicas_opened(), (0, 16));
    assert!(lists_exactly(&c, &codes(&links)), "c lost links after a crash");
    assert_all_redirect(&links, &[&c]);
}

/// Lists `node`'s replicas until they hold exactly `want`, for up to 15 s.
fn lists_exactly(node: &Node, want: &[String]) -> bool {
    let mut want = want.to_vec();
    want.sort();
    poll_until(Duration::from_secs(15), || {
        let (status, page, _) = node.call("GET", "/api/v1/links?limit=1000", None);
        assert_eq!(status, 200, "{page}");
        let mut seen: Vec<String> = page["links"].as_array().unwrap().iter().map(|l| l["code"].as_str().unwrap().to_string()).collect();
        seen.sort();
        (seen == want).then_some(())
    })
    .is_some()
}

#[test]
fn a_replica_behind_the_purged_log_is_sent_the_snapshot() {
    let args = ["--partitions", "2", "--raft-snapshot-entries", "20"];
    let a = Node::start("a", 81, None, &args);
    let b = Node::start("b", 82, Some(&a), &args);
    let mut c = Node::start("c", 83, Some(&a), &args);
    wait_settled(&[&a, &b, &c], &["a", "b", "c"]);
    let create = |i: usize, what: &str| {
        let url = format!("https://example.com/{what}/{i}");
        ([&a, &b][i % 2].create(&url), url)
    };
    let mut links: Vec<(String, String)> = (0..20).map(|i| create(i, "before")).collect();

    // While c is stopped, each group takes several snapshots' worth of
    // entries and purges its journal past the point c stopped at.
    c.stop();
    links.extend((0..150).map(|i| create(i, "while-c-was-stopped")));
    c.spawn();
    assert_eq!(c.replicas_opened(), (2, 0));
    let codes: Vec<String> = links.iter().map(|(code, _)| code.clone()).collect();
    assert!(lists_exactly(&c, &codes), "c's replicas did not catch up");
    let installed = c.log().matches("installed a snapshot sent by the group's leader").count();
    assert!(installed >= 1, "c caught up without a snapshot; log:\n{}", c.log());
    let snap = std::fs::read(c.dir.join("raft/group-0.snap")).unwrap();
    assert_eq!(&snap[..8], b"shortdS1", "group 0's snapshot is not in the checked layout");
    // What came is the partition store's own files.
    let files: Vec<String> = std::fs::read_dir(c.dir.join("raft"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().unwrap().starts_with("group-0-"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten().map(|f| f.file_name().into_string().unwrap()))
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".log")), "group 0's snapshot holds no segment: {files:?}");

    // Crashes at moments spread over a catch-up by snapshot (the transfer,
    // the files' rename, the store's swap), then one more: each time the
    // replicas are rebuilt from the snapshots kept here and the journal
    // after them, and changes go on reaching c.
    c.stop();
    links.extend((0..100).map(|i| create(i, "between-crashes")));
    for pause in [0, 30, 80, 150] {
        c.spawn();
        std::thread::sleep(Duration::from_millis(pause));
        c.kill();
    }
    c.spawn();
    let codes: Vec<String> = links.iter().map(|(code, _)| code.clone()).collect();
    assert!(lists_exactly(&c, &codes), "c lost links to crashes while catching up");
    c.kill();
    c.spawn();
    assert_eq!(c.replicas_opened(), (0, 2));
    assert!(lists_exactly(&c, &codes), "c lost links rebuilding from its snapshots");
    let gone = links.pop().unwrap().0;
    assert_eq!(a.status("DELETE", &format!("/api/v1/links/{gone}")), 204);
    links.push(create(0, "after"));
    let codes: Vec<String> = links.iter().map(|(code, _)| code.clone()).collect();
    assert!(lists_exactly(&c, &codes), "c did not follow changes after the rebuild");
    assert_all_redirect(&links, &[&a, &b, &c]);
}
