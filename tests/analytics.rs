//! Click analytics as an outside client sees them: real redirects with
//! browser and bot User-Agents, referrers and forwarded addresses through a
//! trusted proxy, a country database built here, then the stats API, before
//! and after kill -9; bots against `max_clicks`; `--analytics off`; QR codes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{mmdb, poll_until, Body, Server};
use serde_json::{json, Value};

const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
const BOTS: [&str; 6] = [
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "WhatsApp/2.23.20.0 A",
];
/// How long after a click its breakdown is durable (docs/analytics.md says
/// one second), with room for a busy machine.
const PERSISTED_AFTER: Duration = Duration::from_secs(3);
/// Small segments, so that copying the data directory (what a `kill -9`
/// would leave) while waiting for the breakdowns to reach it is cheap.
const SMALL_SEGMENTS: &str = "1048576";

fn write_db(dir: &Path, name: &str, networks: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, mmdb::country_db(networks)).unwrap();
    path
}

fn visit(s: &Server, code: &str, agent: &str, referer: Option<&str>, forwarded: &str) -> u16 {
    let mut headers = vec![("User-Agent", agent), ("X-Forwarded-For", forwarded)];
    if let Some(r) = referer {
        headers.push(("Referer", r));
    }
    s.send("GET", &format!("/{code}"), &headers, Body::None).status
}

fn stats(s: &Server, code: &str) -> Value {
    let r = s.get(&format!("/api/v1/links/{code}/stats"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// Waits until the link's stats show `clicks` and `bots`; returns them.
fn wait_for_stats(s: &Server, code: &str, clicks: u64, bots: u64) -> Value {
    let mut last = Value::Null;
    poll_until(Duration::from_secs(5), || {
        last = stats(s, code);
        (last["clicks"] == clicks && last["bots"] == bots).then_some(())
    });
    last
}

/// The clicks and bots that `shortd export` finds for `code` in a copy of
/// the running server's data directory: what a `kill -9` now would leave.
/// `None` while the copy cannot be read (a record half written).
fn on_disk(s: &Server, code: &str) -> Option<(u64, u64)> {
    let copy = tempfile::tempdir().unwrap();
    let dir = copy.path().join("data");
    common::disk::copy_dir(&s.data_dir(), &dir);
    let out = common::cli(&["export", "--data-dir", dir.to_str().unwrap()]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line: Value = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l["code"] == code)?;
    let hours = line["stats"].as_array()?;
    let sum = |k: &str| hours.iter().map(|h| h[k].as_u64().unwrap_or(0)).sum::<u64>();
    Some((sum("clicks"), sum("bots")))
}

/// A breakdown as `value -> clicks`, checking it is sorted by clicks.
fn breakdown(stats: &Value, dim: &str) -> Vec<(String, u64)> {
    let list: Vec<(String, u64)> = stats[dim]
        .as_array()
        .unwrap_or_else(|| panic!("{dim} is not a list: {stats}"))
        .iter()
        .map(|e| (e["value"].as_str().unwrap().to_string(), e["clicks"].as_u64().unwrap()))
        .collect();
    assert!(list.windows(2).all(|w| w[0].1 >= w[1].1), "{dim} is not sorted by clicks: {list:?}");
    let mut sorted = list.clone();
    sorted.sort();
    sorted
}

fn pairs(p: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = p.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    v.sort();
    v
}

fn assert_the_thirty(st: &Value) {
    assert_eq!((st["clicks"].as_u64(), st["bots"].as_u64()), (Some(30), Some(6)), "{st}");
    assert_eq!(breakdown(st, "referrers"), pairs(&[("news.example.com", 10), ("t.co", 10), ("direct", 10)]));
    assert_eq!(breakdown(st, "countries"), pairs(&[("DE", 10), ("JP", 20)]));
    assert_eq!(breakdown(st, "devices"), pairs(&[("desktop", 20), ("mobile", 10)]));
    assert_eq!(breakdown(st, "browsers"), pairs(&[("Chrome", 10), ("Mobile Safari", 10), ("Firefox", 10)]));
    assert_eq!(breakdown(st, "os"), pairs(&[("Windows", 10), ("iOS", 10), ("Linux", 10)]));
    let series = st["series"].as_array().unwrap();
    let summed: (u64, u64) = series.iter().fold((0, 0), |(c, b), p| (c + p["clicks"].as_u64().unwrap(), b + p["bots"].as_u64().unwrap()));
    assert_eq!(summed, (30, 6), "the series adds up to the totals: {st}");
}

#[test]
fn people_and_bots_are_told_apart_broken_down_and_survive_kill_9() {
    let dbdir = tempfile::tempdir().unwrap();
    let db = write_db(dbdir.path(), "country.mmdb", &[("192.0.2.0/24", "DE"), ("198.51.100.0/24", "JP"), ("2001:db8::/32", "JP")]);
    let s = Server::start(&["--trusted-proxy", "127.0.0.1", "--geoip-db", db.to_str().unwrap(), "--segment-bytes", SMALL_SEGMENTS]);
    let code = s.create(json!({"url": "https://example.com/launch"}))["code"].as_str().unwrap().to_string();

    for i in 0..10 {
        let ip = format!("192.0.2.{}", 10 + i);
        assert_eq!(visit(&s, &code, CHROME_WINDOWS, Some("https://news.example.com/story/42"), &ip), 302);
        assert_eq!(visit(&s, &code, SAFARI_IPHONE, Some("https://t.co/abc"), "198.51.100.7"), 302);
        // A proxy chain: the nearest untrusted hop is the client.
        assert_eq!(visit(&s, &code, FIREFOX_LINUX, None, "203.0.113.99, 2001:db8::5"), 302);
    }
    for bot in BOTS {
        assert_eq!(visit(&s, &code, bot, Some("https://slack.com/"), "192.0.2.1"), 302, "{bot} still gets its redirect");
    }

    let st = wait_for_stats(&s, &code, 30, 6);
    assert_the_thirty(&st);
    assert_eq!(s.wait_for_clicks(&code, 30), 30, "a link's clicks are its human clicks");
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains("shortd_bot_visits_total 6"), "{metrics}");
    assert!(metrics.contains("shortd_geoip_database_age_seconds"), "{metrics}");

    let all = s.get("/api/v1/stats").json();
    assert_eq!((all["clicks"].as_u64(), all["bots"].as_u64()), (Some(30), Some(6)), "{all}");
    assert_eq!(all["links"][0]["code"], code.as_str());

    // Killed once the log holds the thirty, which must be within the
    // documented second (with room); the restart then shows every figure.
    let logged = poll_until(PERSISTED_AFTER, || (on_disk(&s, &code) == Some((30, 6))).then_some(()));
    assert!(
        logged.is_some(),
        "the clicks and bots were not in the log {PERSISTED_AFTER:?} after the stats showed them: {:?}",
        on_disk(&s, &code)
    );
    let mut s = s;
    s.kill();
    let s = s.restart();
    let st = stats(&s, &code);
    assert_the_thirty(&st);
    assert_eq!(s.link(&code)["clicks"], 30);

    // And through a graceful stop, whose snapshot carries the rollups.
    let mut s = s;
    s.stop_gracefully();
    let s = s.restart();
    assert_the_thirty(&stats(&s, &code));
}

#[test]
fn bots_never_use_up_a_click_limit() {
    let s = Server::start(&[]);
    let code = s.create(json!({"url": "https://example.com/once", "max_clicks": 3}))["code"].as_str().unwrap().to_string();
    for bot in &BOTS[..3] {
        assert_eq!(visit(&s, &code, bot, None, "192.0.2.1"), 302, "{bot}");
    }
    for i in 0..3 {
        assert_eq!(visit(&s, &code, CHROME_WINDOWS, None, "192.0.2.1"), 302, "human {i}");
    }
    assert_eq!(visit(&s, &code, FIREFOX_LINUX, None, "192.0.2.1"), 410, "the fourth human");
    assert_eq!(s.link(&code)["clicks"], 3);
    let st = wait_for_stats(&s, &code, 3, 3);
    assert_eq!((st["clicks"].as_u64(), st["bots"].as_u64()), (Some(3), Some(3)), "{st}");
}

#[test]
fn count_bots_counts_them_as_clicks_and_against_the_limit() {
    let s = Server::start(&["--count-bots"]);
    let code = s.create(json!({"url": "https://example.com/once", "max_clicks": 1}))["code"].as_str().unwrap().to_string();
    assert_eq!(visit(&s, &code, BOTS[0], None, "192.0.2.1"), 302);
    assert_eq!(visit(&s, &code, CHROME_WINDOWS, None, "192.0.2.1"), 410);
    assert_eq!(s.link(&code)["clicks"], 1);
}

#[test]
fn analytics_off_keeps_click_totals_only() {
    let s = Server::start(&["--analytics", "off"]);
    let code = s.create(json!({"url": "https://example.com/plain"}))["code"].as_str().unwrap().to_string();
    for _ in 0..5 {
        assert_eq!(visit(&s, &code, CHROME_WINDOWS, Some("https://news.example.com/"), "192.0.2.1"), 302);
    }
    assert_eq!(s.wait_for_clicks(&code, 5), 5);
    let st = stats(&s, &code);
    assert_eq!((st["clicks"].as_u64(), st["bots"].as_u64()), (Some(0), Some(0)), "{st}");
    assert_eq!(st["referrers"], json!([]));
    // The click limit still ignores bots.
    let limited = s.create(json!({"url": "https://example.com/once", "max_clicks": 1}))["code"].as_str().unwrap().to_string();
    assert_eq!(visit(&s, &limited, BOTS[1], None, "192.0.2.1"), 302);
    assert_eq!(visit(&s, &limited, CHROME_WINDOWS, None, "192.0.2.1"), 302);
    assert_eq!(visit(&s, &limited, CHROME_WINDOWS, None, "192.0.2.1"), 410);
}

#[test]
fn a_hangup_reloads_the_country_database() {
    let dbdir = tempfile::tempdir().unwrap();
    let db = write_db(dbdir.path(), "country.mmdb", &[("192.0.2.0/24", "DE")]);
    let s = Server::start(&["--trusted-proxy", "127.0.0.1", "--geoip-db", db.to_str().unwrap()]);
    let code = s.create(json!({"url": "https://example.com/geo"}))["code"].as_str().unwrap().to_string();
    assert_eq!(visit(&s, &code, CHROME_WINDOWS, None, "192.0.2.5"), 302);
    wait_for_stats(&s, &code, 1, 0);
    let fresh = write_db(dbdir.path(), "next.mmdb", &[("192.0.2.0/24", "FR")]);
    std::fs::rename(fresh, &db).unwrap();
    s.hangup();
    let reloaded = poll_until(Duration::from_secs(5), || (s.run_log().matches("GeoIP database loaded").count() >= 2).then_some(()));
    assert!(reloaded.is_some(), "no reload in the log:\n{}", s.run_log());
    assert_eq!(visit(&s, &code, CHROME_WINDOWS, None, "192.0.2.5"), 302);
    let st = wait_for_stats(&s, &code, 2, 0);
    assert_eq!(breakdown(&st, "countries"), pairs(&[("DE", 1), ("FR", 1)]));
}

#[test]
fn without_a_database_countries_are_left_out_and_days_add_up() {
    let s = Server::start(&[]);
    let code = s.create(json!({"url": "https://example.com/days"}))["code"].as_str().unwrap().to_string();
    for _ in 0..4 {
        assert_eq!(visit(&s, &code, SAFARI_IPHONE, Some("https://T.CO/x"), "192.0.2.1"), 302);
    }
    wait_for_stats(&s, &code, 4, 0);
    let st = s.get(&format!("/api/v1/links/{code}/stats?interval=day&from=2020-01-01T00:00:00Z")).json();
    assert_eq!(st["interval"], "day");
    assert_eq!(st["clicks"], 4);
    assert_eq!(st["countries"], json!([]));
    assert_eq!(breakdown(&st, "referrers"), pairs(&[("t.co", 4)]));
    let series = st["series"].as_array().unwrap();
    assert!(series.len() > 2000, "one point a day since 2020: {}", series.len());
    assert_eq!(series.iter().filter(|p| p["clicks"] != 0).count(), 1);
    assert!(series[0]["t"].as_str().unwrap().starts_with("2020-01-01T00:00:00"), "{}", series[0]);
}

#[test]
fn bad_stats_and_qr_queries_name_the_field() {
    let s = Server::start(&[]);
    let code = s.create(json!({"url": "https://example.com/q"}))["code"].as_str().unwrap().to_string();
    let get = |q: &str| s.get(&format!("/api/v1/links/{code}/{q}"));
    get("stats?from=yesterday").field_problem(400, "from");
    get("stats?to=2026-13-01T00:00:00Z").field_problem(400, "to");
    get("stats?interval=week").field_problem(400, "interval");
    get("stats?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z").field_problem(400, "to");
    get("stats?from=1990-01-01T00:00:00Z&interval=hour").field_problem(400, "from");
    s.get("/api/v1/stats?limit=0").field_problem(400, "limit");
    get("qr?format=gif").field_problem(400, "format");
    get("qr?size=10").field_problem(400, "size");
    s.get("/api/v1/links/nosuch1/stats").problem(404);
    s.get("/api/v1/links/nosuch1/qr").problem(404);
}

#[test]
fn qr_codes_hold_the_short_url_and_are_cacheable() {
    let s = Server::start(&[]);
    let link = s.create(json!({"url": "https://example.com/qr"}));
    let (code, short_url) = (link["code"].as_str().unwrap(), link["short_url"].as_str().unwrap());

    let r = s.request("GET", &format!("/api/v1/links/{code}/qr?format=png&size=300")).call().unwrap();
    assert_eq!(r.content_type(), "image/png");
    let etag = r.header("etag").expect("an ETag").to_string();
    assert!(r.header("cache-control").is_some_and(|c| c.contains("max-age=")));
    let mut png = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut png).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (frame.width as usize, frame.height as usize);
    assert!((250..=300).contains(&w) && w == h, "{w}x{h}");
    let bits = frame.bit_depth as usize;
    let pixel = |x: usize, y: usize| -> u8 {
        let row = &buf[y * frame.line_size..];
        match bits {
            1 => {
                if row[x / 8] >> (7 - x % 8) & 1 == 1 {
                    255
                } else {
                    0
                }
            }
            _ => row[x],
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, pixel);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, short_url);

    let again = s.send("GET", &format!("/api/v1/links/{code}/qr?format=png&size=300"), &[("If-None-Match", &etag)], Body::None);
    assert_eq!(again.status, 304);

    let svg = s.get(&format!("/api/v1/links/{code}/qr?format=svg"));
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.body.contains("<svg") && svg.header("etag").is_some_and(|e| e != etag));
}

#[test]
fn export_and_import_carry_the_stats() {
    let s = Server::start(&[]);
    let code = s.create(json!({"url": "https://example.com/moved"}))["code"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(visit(&s, &code, FIREFOX_LINUX, Some("https://lobste.rs/s/1"), "192.0.2.1"), 302);
    }
    assert_eq!(visit(&s, &code, BOTS[2], None, "192.0.2.1"), 302);
    let before = wait_for_stats(&s, &code, 3, 1);
    let mut s = s;
    s.stop_gracefully();

    let out = common::cli(&["export", "--data-dir", s.data_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8(out.stdout).unwrap();
    assert!(lines.contains("\"stats\""), "{lines}");
    let to = tempfile::tempdir().unwrap();
    let file = to.path().join("links.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let data = to.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = common::cli(&["import", "--data-dir", data.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let moved = Server::start_at(&data, &[]);
    let after = stats(&moved, &code);
    for key in ["clicks", "bots", "referrers", "devices", "browsers", "os"] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(moved.link(&code)["clicks"], 3);
}
