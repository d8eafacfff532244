//! Damage at rest, as an operator meets it: one flipped byte inside a link
//! in an old, sealed segment. The scrub finds it without being asked,
//! compaction copies every intact record past it and keeps the damaged
//! segment, and no intact link is lost at any step, restarts included.

mod common;

use std::time::Duration;

use common::{disk, poll_until, Server};
use serde_json::{json, Value};

const LINKS: usize = 600;
const FLAGS: &[&str] = &["--segment-bytes", "65536", "--compact-ratio", "0.5"];

fn metric(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").body;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_redirects(s: &Server, links: &[(String, String)], when: &str) {
    let wrong: Vec<String> = links
        .iter()
        .filter_map(|(code, url)| {
            let r = s.get(&format!("/{code}"));
            (r.status != 302 || r.header("location") != Some(url.as_str()))
                .then(|| format!("{code}: {} {:?}", r.status, r.header("location")))
        })
        .collect();
    assert!(wrong.is_empty(), "{when}: {} intact links do not redirect to their URL, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
}

#[test]
fn a_damaged_record_in_a_sealed_segment_costs_only_its_own_link_through_scrub_compaction_and_restarts() {
    let mut s = Server::start(FLAGS);
    let mut links: Vec<(String, String)> = (0..LINKS)
        .map(|i| {
            let url = format!("https://example.com/{i:04}/{}", "x".repeat(1000));
            let v = s.create(json!({ "url": url }));
            (v["code"].as_str().unwrap().to_string(), url)
        })
        .collect();
    assert!(s.stop_gracefully().0.success());

    let dir = s.data_dir();
    let first = disk::segments(&dir).remove(0);
    let puts: Vec<_> = disk::records(&first).into_iter().filter(|r| r.kind == 1).collect();
    let victim = puts[3];
    let damaged_code = disk::put_key(&first, victim.off);
    disk::flip_bit(&first, (victim.key_end + 100) as u64);
    links.retain(|(c, _)| *c != damaged_code);

    let mut s = s.restart();
    let damage_seen = poll_until(Duration::from_secs(10), || {
        let ready = s.get("/readyz").json();
        ready["damage"].as_object().is_some_and(|d| d.keys().any(|f| f.ends_with("00000001.log"))).then_some(ready)
    });
    assert!(damage_seen.is_some(), "the scrub did not report the damaged segment in /readyz: {}", s.get("/readyz").body);
    assert!(metric(&s, "shortd_store_scrub_damage_found_total") >= 1.0);
    assert_eq!(s.get("/readyz").status, 200, "damage takes the node out of service");
    assert_redirects(&s, &links, "after the restart");

    let segments_before = disk::segments(&dir).len();
    let (delete, keep): (Vec<_>, Vec<_>) = links.iter().cloned().enumerate().partition(|(i, _)| i % 3 != 0);
    for (_, (code, _)) in &delete {
        assert_eq!(s.delete(&format!("/api/v1/links/{code}")).status, 204);
    }
    let keep: Vec<(String, String)> = keep.into_iter().map(|(_, l)| l).collect();
    let compacted = poll_until(Duration::from_secs(20), || {
        assert_redirects(&s, &keep, "while compacting");
        let refused = metric(&s, "shortd_store_compaction_refused_total") >= 1.0;
        (refused && disk::segments(&dir).len() < segments_before).then_some(())
    });
    assert!(compacted.is_some(), "compaction did not run: {} segments, log:\n{}", disk::segments(&dir).len(), s.log());
    assert!(first.exists(), "compaction removed the damaged segment");
    let r = s.get(&format!("/{damaged_code}"));
    assert_eq!(r.status, 404, "the damaged link answers {} {:?}", r.status, r.header("location"));
    assert_redirects(&s, &keep, "after compaction");
    let ready: Value = s.get("/readyz").json();
    assert!(ready["damage"].to_string().contains("kept by compaction"), "{ready}");

    assert!(s.stop_gracefully().0.success());
    let s = s.restart();
    assert_redirects(&s, &keep, "after compaction and a restart");
    for (_, (code, _)) in delete.iter().take(20) {
        assert_eq!(s.get(&format!("/{code}")).status, 410);
    }
    assert!(!s.log().contains("missing segment"), "{}", s.log());
}
