//! `/metrics` passes `promtool check metrics` (`apt-get install
//! prometheus` provides promtool; without it the lint fails the test under
//! `CI=true` and says SKIPPED elsewhere) and carries the series an operator
//! needs after some traffic.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{poll_until, Server};
use serde_json::json;

#[test]
fn metrics_pass_promtool_and_cover_the_redirect_path_and_the_store() {
    let s = Server::start(&[]);
    let code = s.create(json!({"url": "https://example.com/metrics"}))["code"].as_str().unwrap().to_string();
    for _ in 0..25 {
        assert_eq!(s.get(&format!("/{code}")).status, 302);
    }
    assert_eq!(s.get("/nosuchcode").status, 404);
    s.wait_for_clicks(&code, 25);
    let text = poll_until(Duration::from_secs(5), || {
        let t = s.get("/metrics").body;
        t.contains("shortd_clicks_total 25").then_some(t)
    })
    .expect("clicks did not reach /metrics");
    for series in [
        "shortd_http_requests_total{route=\"redirect\",status=\"302\"} 25",
        "shortd_http_requests_total{route=\"redirect\",status=\"404\"} 1",
        "shortd_cache_hits_total",
        "shortd_cache_misses_total",
        "shortd_store_appended_bytes_total",
        "shortd_store_fsync_duration_seconds_count",
        "shortd_store_commit_batch_size_count",
        "shortd_redirect_duration_seconds_bucket",
        "shortd_links 1",
        "shortd_store_segments 1",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
    let Ok(mut promtool) =
        Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
    else {
        return common::prereq::skip_or_fail("promtool, for the lint of /metrics", "apt-get install prometheus");
    };
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
