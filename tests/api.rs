//! The HTTP API and the redirect path as a user sees them, against the real
//! `shortd` binary: creating, following, changing and deleting links,
//! idempotent retries, expiry, click limits, paging, API keys, health,
//! metrics, bulk creation and restarts.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{poll_until, Body, Resp, Server};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Exactly the fields of a link in the API.
const LINK_FIELDS: [&str; 9] = ["code", "short_url", "url", "created_at", "expires_at", "max_clicks", "redirect", "clicks", "disabled"];
const CACHE_CONTROL: &str = "private, max-age=90";

fn is_generated_code(code: &str) -> bool {
    code.len() == 7 && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn code_of(link: &Value) -> String {
    link["code"].as_str().unwrap_or_else(|| panic!("link has no string code: {link}")).to_string()
}

fn time_of(v: &Value) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{v} is not an RFC 3339 string"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

/// The link has exactly the documented fields, each of the right type.
fn assert_link_shape(link: &Value) {
    let obj = link.as_object().unwrap_or_else(|| panic!("link is not an object: {link}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, LINK_FIELDS.into_iter().collect::<BTreeSet<_>>(), "link fields: {link}");
    assert!(link["code"].is_string() && link["short_url"].is_string() && link["url"].is_string(), "{link}");
    time_of(&link["created_at"]);
    if !link["expires_at"].is_null() {
        time_of(&link["expires_at"]);
    }
    assert!(link["max_clicks"].is_null() || link["max_clicks"].is_u64(), "{link}");
    assert!(link["redirect"].is_u64() && link["clicks"].is_u64() && link["disabled"].is_boolean(), "{link}");
}

/// A redirect exactly as the design gives it: status, `Location` byte for
/// byte, `Content-Length: 0`, `Cache-Control`, no body.
fn assert_redirect(r: &Resp, status: u16, location: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("location"), Some(location), "{r:?}");
    assert_eq!(r.header("content-length"), Some("0"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some(CACHE_CONTROL), "{r:?}");
    assert_eq!(r.body, "", "{r:?}");
}

fn auth(key: &str) -> String {
    format!("Bearer {key}")
}

/// JSON request headers, with `Authorization` when given.
fn json_with(authorization: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend(authorization.map(|a| ("Authorization", a)));
    h
}

#[test]
fn create_answers_201_with_the_link_and_its_location() {
    let s = Server::start(&[]);
    let before = OffsetDateTime::now_utc();
    let url = "https://example.com/a/b?c=d&e=%20f#frag";
    let r = s.post_json("/api/v1/links", &json!({ "url": url }));
    let after = OffsetDateTime::now_utc();
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.header("content-type").is_some_and(|ct| ct.starts_with("application/json")), "{r:?}");
    assert_eq!(r.header("idempotent-replayed"), None, "a first create is no replay: {r:?}");
    let link = r.json();
    assert_link_shape(&link);
    let code = code_of(&link);
    assert!(is_generated_code(&code), "generated code {code:?} is not 7 base62 characters");
    assert_eq!(r.header("location"), Some(format!("/api/v1/links/{code}").as_str()), "{r:?}");
    assert_eq!(link["short_url"], format!("{}/{code}", s.base));
    assert_eq!(link["url"], url);
    assert_eq!(link["expires_at"], Value::Null);
    assert_eq!(link["max_clicks"], Value::Null);
    assert_eq!(link["redirect"], 302);
    assert_eq!(link["clicks"], 0);
    assert_eq!(link["disabled"], false);
    let created = time_of(&link["created_at"]);
    let slack = time::Duration::seconds(2);
    assert!(created >= before - slack && created <= after + slack, "created_at {created} is not about now ({before}..{after})");

    // The Location of the 201 answers with the same link.
    let fetched = s.get(&format!("/api/v1/links/{code}"));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    assert_eq!(fetched.json(), link);

    // Generated codes never repeat and are all 7 base62 characters.
    let mut codes = HashSet::from([code]);
    for i in 0..30 {
        let c = code_of(&s.create(json!({ "url": format!("https://example.com/{i}") })));
        assert!(is_generated_code(&c), "{c:?}");
        assert!(codes.insert(c.clone()), "code {c} was handed out twice");
    }
}

#[test]
fn redirect_answers_with_exactly_the_target() {
    let s = Server::start(&[]);
    let url = "https://example.com/path/to?q=1&r=%2F%20x#section-2";
    let code = code_of(&s.create(json!({ "url": url })));
    // A miss, then cache hits: all the same.
    for _ in 0..3 {
        assert_redirect(&s.get(&format!("/{code}")), 302, url);
    }
    let head = s.head(&format!("/{code}"));
    assert_eq!(head.status, 302, "{head:?}");
    assert_eq!(head.header("location"), Some(url));
    assert_eq!(head.header("cache-control"), Some(CACHE_CONTROL));
    assert_eq!(head.header("content-length"), Some("0"));
    // The link does not ask for query forwarding, so the short URL's query
    // is not passed on.
    assert_redirect(&s.get(&format!("/{code}?utm_source=mail")), 302, url);
}

#[test]
fn a_link_answers_with_its_own_redirect_status() {
    let s = Server::start(&[]);
    for status in [301u16, 302, 307, 308] {
        let url = format!("https://example.com/status/{status}");
        let link = s.create(json!({ "url": url, "redirect": status }));
        assert_eq!(link["redirect"], status);
        let code = code_of(&link);
        assert_redirect(&s.get(&format!("/{code}")), status, &url);
        assert_eq!(s.head(&format!("/{code}")).status, status);
    }
}

#[test]
fn a_non_ascii_target_is_served_in_its_ascii_form() {
    let s = Server::start(&[]);
    let link = s.create(json!({ "url": "https://bücher.example/ä" }));
    let ascii = "https://xn--bcher-kva.example/%C3%A4";
    assert_eq!(link["url"], ascii);
    assert_redirect(&s.get(&format!("/{}", code_of(&link))), 302, ascii);
}

#[test]
fn an_alias_is_the_code_and_can_be_taken_only_once() {
    let s = Server::start(&[]);
    let alias = "Spring-Sale_2024";
    let link = s.create(json!({ "url": "https://example.com/sale", "alias": alias }));
    assert_link_shape(&link);
    assert_eq!(link["code"], alias);
    assert_eq!(link["short_url"], format!("{}/{alias}", s.base));
    assert_redirect(&s.get(&format!("/{alias}")), 302, "https://example.com/sale");

    for url in ["https://example.com/other", "https://example.com/sale"] {
        let r = s.post_json("/api/v1/links", &json!({ "url": url, "alias": alias }));
        r.field_problem(409, "alias");
    }
    // The first owner keeps the alias.
    assert_redirect(&s.get(&format!("/{alias}")), 302, "https://example.com/sale");

    // Codes are case-sensitive.
    s.get(&format!("/{}", alias.to_lowercase())).problem(404);
    let lower = s.create(json!({ "url": "https://example.com/lower", "alias": alias.to_lowercase() }));
    assert_redirect(&s.get(&format!("/{}", code_of(&lower))), 302, "https://example.com/lower");
    assert_redirect(&s.get(&format!("/{alias}")), 302, "https://example.com/sale");

    // The shortest and the longest alias.
    for a in ["x".to_string(), "L".repeat(64)] {
        let l = s.create(json!({ "url": "https://example.com/len", "alias": a }));
        assert_eq!(l["code"], a.as_str());
        assert_redirect(&s.get(&format!("/{a}")), 302, "https://example.com/len");
    }
}

#[test]
fn reserved_aliases_are_refused() {
    let s = Server::start(&[]);
    for alias in ["api", "metrics", "healthz", "readyz", "_internal", "API", "Metrics", "HEALTHZ"] {
        let r = s.post_json("/api/v1/links", &json!({ "url": "https://example.com/", "alias": alias }));
        r.field_problem(400, "alias");
    }
    assert!(s.list_all().is_empty(), "a refused alias created a link");
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
    assert_eq!(s.get("/metrics").status, 200);
}

#[test]
fn clicks_are_counted() {
    let s = Server::start(&[]);
    let a = code_of(&s.create(json!({ "url": "https://example.com/a" })));
    let b = code_of(&s.create(json!({ "url": "https://example.com/b" })));
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/{a}")).status, 302);
    }
    assert_eq!(s.get(&format!("/{b}")).status, 302);
    assert_eq!(s.wait_for_clicks(&a, 3), 3, "clicks on {a}");
    assert_eq!(s.wait_for_clicks(&b, 1), 1, "clicks on {b}");
}

#[test]
fn a_changed_url_is_served_by_the_next_redirect() {
    let s = Server::start(&[]);
    let created = s.create(json!({ "url": "https://example.com/old" }));
    let code = code_of(&created);
    for _ in 0..3 {
        assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/old");
    }
    let r = s.patch_json(&format!("/api/v1/links/{code}"), &json!({ "url": "https://example.com/new" }));
    assert_eq!(r.status, 200, "{r:?}");
    let link = r.json();
    assert_link_shape(&link);
    assert_eq!(link["code"], code.as_str());
    assert_eq!(link["url"], "https://example.com/new");
    assert_eq!(link["created_at"], created["created_at"], "a change moved created_at");
    for _ in 0..5 {
        assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/new");
    }
    assert_eq!(s.head(&format!("/{code}")).header("location"), Some("https://example.com/new"));
    assert_eq!(s.link(&code)["url"], "https://example.com/new");
}

#[test]
fn a_disabled_link_answers_410_until_enabled() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/d" })));
    assert_eq!(s.get(&format!("/{code}")).status, 302);
    let r = s.patch_json(&format!("/api/v1/links/{code}"), &json!({ "disabled": true }));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["disabled"], true);
    s.get(&format!("/{code}")).problem(410);
    assert_eq!(s.head(&format!("/{code}")).status, 410);
    assert_eq!(s.link(&code)["disabled"], true);

    let r = s.patch_json(&format!("/api/v1/links/{code}"), &json!({ "disabled": false }));
    assert_eq!(r.json()["disabled"], false);
    assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/d");
}

#[test]
fn patching_the_expiry_and_the_status_takes_effect() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/e" })));
    let path = format!("/api/v1/links/{code}");
    assert_eq!(s.get(&format!("/{code}")).status, 302);

    let r = s.patch_json(&path, &json!({ "ttl_seconds": 1 }));
    assert_eq!(r.status, 200, "{r:?}");
    let expires = time_of(&r.json()["expires_at"]);
    let now = OffsetDateTime::now_utc();
    assert!((expires - now).abs() < time::Duration::seconds(3), "expires_at {expires} is not about 1 s from now ({now})");
    let gone = poll_until(Duration::from_secs(5), || (s.get(&format!("/{code}")).status == 410).then_some(()));
    assert!(gone.is_some(), "the link still redirects 5 s after ttl_seconds 1");
    s.get(&format!("/{code}")).problem(410);

    // Removing the expiry brings the link back.
    let r = s.patch_json(&path, &json!({ "expires_at": null }));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["expires_at"], Value::Null);
    assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/e");

    // An explicit expiry in the future is kept as given.
    let at = (OffsetDateTime::now_utc() + time::Duration::hours(1)).replace_nanosecond(0).expect("zero nanoseconds");
    let r = s.patch_json(&path, &json!({ "expires_at": at.format(&Rfc3339).expect("formatting") }));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(time_of(&r.json()["expires_at"]), at);
    assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/e");

    let r = s.patch_json(&path, &json!({ "redirect": 308 }));
    assert_eq!(r.json()["redirect"], 308);
    assert_redirect(&s.get(&format!("/{code}")), 308, "https://example.com/e");
}

#[test]
fn patching_an_unknown_or_deleted_link_is_refused() {
    let s = Server::start(&[]);
    s.patch_json("/api/v1/links/nosuch1", &json!({ "url": "https://example.com/" })).problem(404);
    let code = code_of(&s.create(json!({ "url": "https://example.com/p" })));
    assert_eq!(s.delete(&format!("/api/v1/links/{code}")).status, 204);
    s.patch_json(&format!("/api/v1/links/{code}"), &json!({ "disabled": false })).problem(410);
    s.get(&format!("/{code}")).problem(410);
}

#[test]
fn a_deleted_link_answers_410() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/del" })));
    let keep = code_of(&s.create(json!({ "url": "https://example.com/keep" })));
    assert_eq!(s.get(&format!("/{code}")).status, 302);
    let r = s.delete(&format!("/api/v1/links/{code}"));
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.body, "");
    s.get(&format!("/{code}")).problem(410);
    assert_eq!(s.head(&format!("/{code}")).status, 410);
    s.get(&format!("/api/v1/links/{code}")).problem(410);
    s.delete("/api/v1/links/nosuch1").problem(404);
    let listed: Vec<String> = s.list_all().iter().map(code_of).collect();
    assert_eq!(listed, vec![keep.clone()]);
    assert_redirect(&s.get(&format!("/{keep}")), 302, "https://example.com/keep");
}

#[test]
fn unknown_codes_and_paths_answer_404_problems() {
    let s = Server::start(&[]);
    s.get("/zzzzzzz").problem(404);
    s.get("/no-such-alias").problem(404);
    assert_eq!(s.head("/zzzzzzz").status, 404);
    s.get("/api/v1/links/zzzzzzz").problem(404);
    s.get("/not%20a%20code").problem(404);
    s.get("/a/b").problem(404);
    assert_eq!(s.get("/").status, 302, "GET / leads to the web UI (tests/ui.rs)");
    s.get("/api/v1/nothing").problem(404);
    s.get(&format!("/{}", "a".repeat(65))).problem(404);
}

#[test]
fn an_idempotent_retry_gives_the_same_link() {
    let s = Server::start(&[]);
    let body = json!({ "url": "https://example.com/idem", "max_clicks": 9 });
    let key = [("Idempotency-Key", "order-7f3a-0001")];
    let first = s.send_json("POST", "/api/v1/links", &key, &body);
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = s.send_json("POST", "/api/v1/links", &key, &body);
    assert_eq!(retry.status, 201, "{retry:?}");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"), "{retry:?}");
    assert_eq!(retry.json(), first.json());
    assert_eq!(retry.header("location"), first.header("location"));

    let other = s.send_json("POST", "/api/v1/links", &key, &json!({ "url": "https://example.com/other" }));
    other.field_problem(422, "Idempotency-Key");

    let fresh = s.send_json("POST", "/api/v1/links", &[("Idempotency-Key", "order-7f3a-0002")], &body);
    assert_eq!(fresh.status, 201);
    assert_eq!(fresh.header("idempotent-replayed"), None);
    assert_ne!(fresh.json()["code"], first.json()["code"]);

    let same_url = s.list_all().iter().filter(|l| l["url"] == "https://example.com/idem").count();
    assert_eq!(same_url, 2, "a retry created a second link");
}

#[test]
fn a_link_with_ttl_seconds_expires() {
    let s = Server::start(&[]);
    let sent = Instant::now();
    let link = s.create(json!({ "url": "https://example.com/ttl", "ttl_seconds": 1 }));
    let lifetime = time_of(&link["expires_at"]) - time_of(&link["created_at"]);
    assert!((lifetime - time::Duration::seconds(1)).abs() < time::Duration::milliseconds(200), "expires_at - created_at is {lifetime}");
    let code = code_of(&link);
    let r = s.get(&format!("/{code}"));
    if sent.elapsed() < Duration::from_millis(800) {
        assert_redirect(&r, 302, "https://example.com/ttl");
    }
    let gone = poll_until(Duration::from_secs(5), || (s.get(&format!("/{code}")).status == 410).then_some(()));
    assert!(gone.is_some(), "the link still redirects 5 s after ttl_seconds 1");
    assert!(OffsetDateTime::now_utc() >= time_of(&link["expires_at"]) - time::Duration::milliseconds(50), "410 before expires_at");
    s.get(&format!("/{code}")).problem(410);
    assert_eq!(s.head(&format!("/{code}")).status, 410);
}

#[test]
fn a_link_with_expires_at_keeps_that_instant() {
    let s = Server::start(&[]);
    let at = (OffsetDateTime::now_utc() + time::Duration::days(2)).replace_nanosecond(0).expect("zero nanoseconds");
    let link = s.create(json!({ "url": "https://example.com/at", "expires_at": at.format(&Rfc3339).expect("formatting") }));
    assert_eq!(time_of(&link["expires_at"]), at);
    assert_redirect(&s.get(&format!("/{}", code_of(&link))), 302, "https://example.com/at");
}

#[test]
fn max_clicks_lets_exactly_that_many_racing_clicks_through() {
    let s = Server::start(&[]);
    let link = s.create(json!({ "url": "https://example.com/limited", "max_clicks": 5 }));
    assert_eq!(link["max_clicks"], 5);
    let url = s.url(&format!("/{}", code_of(&link)));
    let racers = 20;
    let barrier = Arc::new(Barrier::new(racers));
    let threads: Vec<_> = (0..racers)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                barrier.wait();
                common::fetch(agent.get(&url), Body::None)
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().expect("racer thread")).collect();
    let ok = answers.iter().filter(|r| r.status == 302).count();
    let gone = answers.iter().filter(|r| r.status == 410).count();
    assert_eq!((ok, gone), (5, 15), "statuses: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status == 302) {
        assert_redirect(r, 302, "https://example.com/limited");
    }
    s.get(&format!("/{}", code_of(&link))).problem(410);
    assert_eq!(s.wait_for_clicks(&code_of(&link), 5), 5);
}

#[test]
fn the_list_pages_through_every_link_exactly_once() {
    let s = Server::start(&[]);
    let mut live = BTreeSet::new();
    for i in 0..20 {
        live.insert(code_of(&s.create(json!({ "url": format!("https://example.com/list/{i}") }))));
    }
    for alias in ["list-a", "list-b", "list-c"] {
        live.insert(code_of(&s.create(json!({ "url": "https://example.com/alias", "alias": alias }))));
    }
    let gone_generated = live.iter().next().expect("links exist").clone();
    for code in [gone_generated.as_str(), "list-b"] {
        assert_eq!(s.delete(&format!("/api/v1/links/{code}")).status, 204);
    }
    live.remove(&gone_generated);
    live.remove("list-b");
    let patched = live.iter().next().expect("links exist").clone();
    assert_eq!(s.patch_json(&format!("/api/v1/links/{patched}"), &json!({ "url": "https://example.com/patched" })).status, 200);

    for limit in [1usize, 5, 7, 21, 1000] {
        let (links, sizes) = s.list_pages(limit);
        assert!(sizes.iter().all(|&n| n <= limit), "limit {limit}: page sizes {sizes:?}");
        let codes: Vec<String> = links.iter().map(code_of).collect();
        let unique: BTreeSet<String> = codes.iter().cloned().collect();
        assert_eq!(unique.len(), codes.len(), "limit {limit}: a link was listed twice: {codes:?}");
        assert_eq!(unique, live, "limit {limit}: listed codes differ from the live links");
        for l in &links {
            assert_link_shape(l);
        }
        let p = links.iter().find(|l| l["code"] == patched.as_str()).expect("patched link listed");
        assert_eq!(p["url"], "https://example.com/patched", "the list shows an old version");
    }
    // The default page holds all 21 links.
    let page = s.get("/api/v1/links").json();
    assert_eq!(page["links"].as_array().map(Vec::len), Some(21));
    assert_eq!(page["next_cursor"], Value::Null);
}

#[test]
fn api_keys_guard_the_api_but_not_redirects() {
    let keys = ["first-key-0001", "second-key-0002"];
    let s = Server::start(&["--api-key", &keys.join(",")]);
    let body = br#"{"url":"https://example.com/keyed"}"#;

    // Refusals come before the body is read, so each goes on its own connection.
    let none = s.send_alone("POST", "/api/v1/links", &json_with(None), Body::Bytes(body));
    none.field_problem(401, "Authorization");
    for wrong in [auth("wrong-key-0003"), auth("first-key-000"), auth("first-key-00012"), keys[0].to_string(), format!("Basic {}", keys[0])]
    {
        s.send_alone("POST", "/api/v1/links", &json_with(Some(&wrong)), Body::Bytes(body)).problem(401);
    }
    let listed = s.send("GET", "/api/v1/links", &[("Authorization", auth(keys[0]).as_str())], Body::None);
    assert!(listed.json()["links"].as_array().is_some_and(Vec::is_empty), "a refused request created a link");

    let created = s.send("POST", "/api/v1/links", &json_with(Some(&auth(keys[0]))), Body::Bytes(body));
    assert_eq!(created.status, 201, "{created:?}");
    let code = code_of(&created.json());
    let second = s.send("POST", "/api/v1/links", &json_with(Some(&auth(keys[1]))), Body::Bytes(br#"{"url":"https://example.com/k2"}"#));
    assert_eq!(second.status, 201, "the second key is refused: {second:?}");

    // Redirects, health and readiness need no key.
    assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/keyed");
    assert_eq!(s.head(&format!("/{code}")).status, 302);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);

    // Every API route needs one.
    s.get(&format!("/api/v1/links/{code}")).problem(401);
    s.get("/api/v1/links").problem(401);
    s.send_alone("PATCH", &format!("/api/v1/links/{code}"), &json_with(None), Body::Bytes(br#"{"disabled":true}"#)).problem(401);
    s.delete(&format!("/api/v1/links/{code}")).problem(401);
    s.send_alone(
        "POST",
        "/api/v1/links:batch",
        &[("Content-Type", "application/x-ndjson")],
        Body::Bytes(b"{\"url\":\"https://example.com/b\"}\n"),
    )
    .problem(401);
    assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/keyed");
    let with_key = s.send("GET", &format!("/api/v1/links/{code}"), &[("Authorization", auth(keys[1]).as_str())], Body::None);
    assert_eq!(with_key.status, 200, "{with_key:?}");
}

#[test]
fn a_401_names_the_auth_scheme() {
    let s = Server::start(&["--api-key", "first-key-0001"]);
    let r = s.post_json("/api/v1/links", &json!({ "url": "https://example.com/" }));
    r.problem(401);
    assert!(
        r.header("www-authenticate").is_some_and(|v| v.to_ascii_lowercase().starts_with("bearer")),
        "no WWW-Authenticate: Bearer: {r:?}"
    );
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let s = Server::start(&["--api-key", "first-key-0001"]);
    for header in ["bearer first-key-0001", "BEARER first-key-0001"] {
        let r = s.send_json("POST", "/api/v1/links", &[("Authorization", header)], &json!({ "url": "https://example.com/" }));
        assert_eq!(r.status, 201, "Authorization: {header}: {r:?}");
    }
}

#[test]
fn wrong_methods_answer_405_with_allow() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/m" })));
    let link = format!("/api/v1/links/{code}");
    let redirect = format!("/{code}");
    let cases: &[(&str, &str, &str)] = &[
        ("PUT", "/api/v1/links", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/links", "GET, HEAD, POST"),
        ("PATCH", "/api/v1/links", "GET, HEAD, POST"),
        ("GET", "/api/v1/links:batch", "POST"),
        ("PUT", "/api/v1/links:batch", "POST"),
        ("POST", link.as_str(), "GET, HEAD, PATCH, DELETE"),
        ("PUT", link.as_str(), "GET, HEAD, PATCH, DELETE"),
        ("POST", redirect.as_str(), "GET, HEAD"),
        ("DELETE", redirect.as_str(), "GET, HEAD"),
        ("PUT", redirect.as_str(), "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ];
    for &(method, path, allow) in cases {
        // Refused before the body is read: on a connection of its own.
        let body = if method == "GET" { Body::None } else { Body::Bytes(b"{}") };
        let r = s.send_alone(method, path, &[("Content-Type", "application/json")], body);
        r.problem(405);
        let got: BTreeSet<&str> =
            r.header("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow header: {r:?}")).split(',').map(str::trim).collect();
        let want: BTreeSet<&str> = allow.split(", ").collect();
        assert_eq!(got, want, "{method} {path}: Allow");
    }
    // Nothing was changed by the refused requests.
    assert_redirect(&s.get(&redirect), 302, "https://example.com/m");
    assert_eq!(s.list_all().len(), 1);
}

#[test]
fn health_and_readiness_answer_200() {
    let s = Server::start(&[]);
    let h = s.get("/healthz");
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(s.head("/healthz").status, 200);
    let r = s.get("/readyz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "ready");
}

/// The sum of the samples of `name` whose labels include every one of
/// `labels` (each written as `key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("checked by the format test");
        if labels.iter().all(|l| series.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().expect("checked by the format test");
        }
    }
    found
}

#[test]
fn metrics_are_served_in_prometheus_text_format() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/metrics" })));
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/{code}")).status, 302);
    }
    assert_eq!(s.get("/nosuch1").status, 404);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|ct| ct.starts_with("text/plain")), "{r:?}");
    let text = &r.body;

    // Every line is a comment or `name{labels} value`; a family is typed once.
    let mut typed = HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let family = t.split(' ').next().unwrap_or_default();
            assert!(typed.insert(family.to_string()), "family {family} is typed twice");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "sample value is not a number: {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
    }

    for name in [
        "shortd_http_requests_total",
        "shortd_cache_hits_total",
        "shortd_cache_misses_total",
        "shortd_clicks_total",
        "shortd_store_appended_bytes_total",
        "shortd_store_fsync_duration_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let at_least = |name: &str, labels: &[&str], min: f64| {
        let v = sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?}:\n{text}"));
        assert!(v >= min, "{name} {labels:?} is {v}, expected at least {min}");
    };
    at_least("shortd_http_requests_total", &["route=\"redirect\"", "status=\"302\""], 3.0);
    at_least("shortd_http_requests_total", &["route=\"redirect\"", "status=\"404\""], 1.0);
    at_least("shortd_http_requests_total", &["route=\"links\"", "status=\"201\""], 1.0);
    at_least("shortd_cache_hits_total", &[], 1.0);
    at_least("shortd_cache_misses_total", &[], 2.0);
    at_least("shortd_clicks_total", &[], 3.0);
    at_least("shortd_store_appended_bytes_total", &[], 1.0);
    at_least("shortd_store_fsync_duration_seconds_count", &[], 1.0);
}

#[test]
fn a_batch_of_json_lines_creates_each_valid_line() {
    let s = Server::start(&[]);
    let lines = [
        r#"{"url":"https://example.com/b1"}"#,
        "",
        r#"{"url":"https://example.com/b2","alias":"batch-two","redirect":301}"#,
        r#"{"url":"ftp://example.com/b3"}"#,
        "this is not json",
        r#"{"url":"https://example.com/b5","alias":"batch-two"}"#,
        r#"{"url":"https://example.com/b6","ttl_seconds":3600,"max_clicks":2}"#,
    ];
    let body = lines.join("\n") + "\n";
    let r = s.send("POST", "/api/v1/links:batch", &[("Content-Type", "application/x-ndjson")], Body::Bytes(body.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    let out = r.json();
    assert_eq!(out["created"], 3, "{out}");
    let results = out["results"].as_array().unwrap_or_else(|| panic!("no results array: {out}"));
    let statuses: Vec<u64> = results.iter().map(|x| x["status"].as_u64().unwrap_or(0)).collect();
    assert_eq!(statuses, [201, 201, 400, 400, 409, 201], "{out}");
    assert_eq!(results[2]["problem"]["field"], "url", "{out}");
    assert_eq!(results[3]["problem"]["field"], "body", "{out}");
    assert_eq!(results[4]["problem"]["field"], "alias", "{out}");
    for refused in [&results[2], &results[3], &results[4]] {
        let p = &refused["problem"];
        assert_eq!(p["status"], refused["status"], "{out}");
        for key in ["type", "title", "detail", "reason"] {
            assert!(p[key].as_str().is_some_and(|v| !v.is_empty()), "line problem lacks {key}: {out}");
        }
    }

    let b1 = &results[0]["link"];
    assert_link_shape(b1);
    assert_redirect(&s.get(&format!("/{}", code_of(b1))), 302, "https://example.com/b1");
    assert_eq!(results[1]["link"]["code"], "batch-two");
    assert_redirect(&s.get("/batch-two"), 301, "https://example.com/b2");
    let b6 = &results[5]["link"];
    assert_link_shape(b6);
    assert_eq!(b6["max_clicks"], 2);
    assert!(!b6["expires_at"].is_null());
    assert_eq!(s.list_all().len(), 3);
}

#[test]
fn sigterm_drains_and_a_restart_keeps_links_and_clicks() {
    let mut s = Server::start(&[]);
    let a = code_of(&s.create(json!({ "url": "https://example.com/a" })));
    let b = code_of(&s.create(json!({ "url": "https://example.com/b", "alias": "kept-alias", "max_clicks": 10 })));
    let c = code_of(&s.create(json!({ "url": "https://example.com/c", "redirect": 307 })));
    let d = code_of(&s.create(json!({ "url": "https://example.com/d" })));
    assert_eq!(s.delete(&format!("/api/v1/links/{d}")).status, 204);
    for _ in 0..4 {
        assert_eq!(s.get(&format!("/{a}")).status, 302);
    }
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/{b}")).status, 302);
    }
    // No wait for the click batches: a graceful stop must keep them.
    let (status, took) = s.stop_gracefully();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}; log:\n{}", s.log());
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let s = s.restart();
    assert_eq!(s.link(&a)["clicks"], 4, "clicks on {a} after restart");
    assert_eq!(s.link(&b)["clicks"], 3, "clicks on {b} after restart");
    assert_eq!(s.link(&c)["clicks"], 0);
    assert_redirect(&s.get(&format!("/{a}")), 302, "https://example.com/a");
    assert_redirect(&s.get(&format!("/{b}")), 302, "https://example.com/b");
    assert_redirect(&s.get(&format!("/{c}")), 307, "https://example.com/c");
    s.get(&format!("/{d}")).problem(410);
    let listed: BTreeSet<String> = s.list_all().iter().map(code_of).collect();
    assert_eq!(listed, BTreeSet::from([a.clone(), b.clone(), c.clone()]));
    // New codes after a restart never reuse old ones.
    let fresh = code_of(&s.create(json!({ "url": "https://example.com/new" })));
    assert!(![&a, &b, &c, &d].contains(&&fresh), "code {fresh} handed out again after restart");
}

#[test]
fn acknowledged_links_survive_kill_9() {
    let mut s = Server::start(&[]);
    let links: Vec<(String, String)> = (0..5)
        .map(|i| {
            let url = format!("https://example.com/crash/{i}");
            (code_of(&s.create(json!({ "url": url }))), url)
        })
        .collect();
    s.kill();
    let s = s.restart();
    for (code, url) in &links {
        assert_redirect(&s.get(&format!("/{code}")), 302, url);
    }
    assert_eq!(s.list_all().len(), links.len());
}

#[test]
fn public_url_and_cache_control_settings_are_honoured() {
    let s = Server::start(&["--public-url", "https://sho.rt", "--cache-control", "public, max-age=300"]);
    let link = s.create(json!({ "url": "https://example.com/pub" }));
    assert_eq!(link["short_url"], format!("https://sho.rt/{}", code_of(&link)));
    let r = s.get(&format!("/{}", code_of(&link)));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    // A target on the shortener's own public host would loop.
    for own in ["https://sho.rt/abc", "http://SHO.RT./abc", "https://sho.rt:8443/x"] {
        s.post_json("/api/v1/links", &json!({ "url": own })).field_problem(400, "url");
    }
    assert_eq!(s.list_all().len(), 1);
}

#[test]
fn the_config_file_fills_settings_the_command_line_leaves_out() {
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    let toml = "public-url = \"https://sho.rt\"\ncache-control = \"public, max-age=1\"\nmax-url-bytes = 64\n";
    std::fs::write(file.path(), toml).expect("writing the TOML file");
    let path = file.path().to_str().expect("UTF-8 path");
    let s = Server::start(&["--config", path, "--cache-control", "public, max-age=300"]);
    let link = s.create(json!({ "url": "https://example.com/from-toml" }));
    assert_eq!(link["short_url"], format!("https://sho.rt/{}", code_of(&link)));
    assert_eq!(s.get(&format!("/{}", code_of(&link))).header("cache-control"), Some("public, max-age=300"));
    s.post_json("/api/v1/links", &json!({ "url": format!("https://example.com/{}", "x".repeat(64)) })).field_problem(400, "url");
}

#[test]
fn links_changes_and_retries_survive_graceful_and_crash_restarts() {
    let mut s = Server::start(&[]);
    let idem_key = [("Idempotency-Key", "restart-key-0001")];
    let idem_body = json!({ "url": "https://example.com/idem-restart" });
    let first = s.send_json("POST", "/api/v1/links", &idem_key, &idem_body);
    assert_eq!(first.status, 201, "{first:?}");
    let idem = code_of(&first.json());
    let a = code_of(&s.create(json!({ "url": "https://example.com/a1" })));
    assert_eq!(s.patch_json(&format!("/api/v1/links/{a}"), &json!({ "url": "https://example.com/a2" })).status, 200);
    let b = code_of(&s.create(json!({ "url": "https://example.com/b", "alias": "restart-b" })));
    assert_eq!(s.patch_json(&format!("/api/v1/links/{b}"), &json!({ "disabled": true })).status, 200);
    let c = code_of(&s.create(json!({ "url": "https://example.com/c" })));
    assert_eq!(s.delete(&format!("/api/v1/links/{c}")).status, 204);
    let d = code_of(&s.create(json!({ "url": "https://example.com/d", "max_clicks": 3 })));
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/{d}")).status, 302);
    }
    assert_eq!(s.get(&format!("/{d}")).status, 410);
    let e = code_of(&s.create(json!({ "url": "https://example.com/e" })));
    for _ in 0..2 {
        assert_eq!(s.get(&format!("/{e}")).status, 302);
    }
    let mut seen: HashSet<String> = [&idem, &a, &b, &c, &d, &e].into_iter().cloned().collect();

    let (status, _) = s.stop_gracefully();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());
    let mut s = s.restart();
    assert_redirect(&s.get(&format!("/{a}")), 302, "https://example.com/a2");
    s.get(&format!("/{b}")).problem(410);
    assert_eq!(s.link(&b)["disabled"], true);
    s.get(&format!("/{c}")).problem(410);
    s.get(&format!("/api/v1/links/{c}")).problem(410);
    s.get(&format!("/{d}")).problem(410);
    assert_eq!(s.link(&d)["clicks"], 3);
    assert_eq!(s.link(&e)["clicks"], 2);
    let retry = s.send_json("POST", "/api/v1/links", &idem_key, &idem_body);
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (201, Some("true")), "retry after a graceful restart: {retry:?}");
    assert_eq!(code_of(&retry.json()), idem);
    s.send_json("POST", "/api/v1/links", &idem_key, &json!({ "url": "https://example.com/else" })).field_problem(422, "Idempotency-Key");

    // More changes after the snapshot, then a crash: the log after the
    // snapshot is replayed.
    assert_eq!(s.patch_json(&format!("/api/v1/links/{a}"), &json!({ "url": "https://example.com/a3" })).status, 200);
    assert_eq!(s.patch_json(&format!("/api/v1/links/{b}"), &json!({ "disabled": false })).status, 200);
    let f = code_of(&s.create(json!({ "url": "https://example.com/f" })));
    assert!(seen.insert(f.clone()), "code {f} handed out twice");
    let idem2_key = [("Idempotency-Key", "restart-key-0002")];
    let second = s.send_json("POST", "/api/v1/links", &idem2_key, &idem_body);
    assert_eq!(second.status, 201);
    let idem2 = code_of(&second.json());
    assert!(seen.insert(idem2.clone()));
    s.kill();
    let s = s.restart();
    assert_redirect(&s.get(&format!("/{a}")), 302, "https://example.com/a3");
    assert_redirect(&s.get(&format!("/{b}")), 302, "https://example.com/b");
    assert_redirect(&s.get(&format!("/{f}")), 302, "https://example.com/f");
    s.get(&format!("/{c}")).problem(410);
    s.get(&format!("/{d}")).problem(410);
    assert!(s.link(&e)["clicks"].as_u64().is_some_and(|n| n >= 2), "clicks went backwards after a crash");
    for (key, code) in [(idem_key, &idem), (idem2_key, &idem2)] {
        let retry = s.send_json("POST", "/api/v1/links", &key, &idem_body);
        assert_eq!((retry.status, retry.header("idempotent-replayed")), (201, Some("true")), "retry after a crash: {retry:?}");
        assert_eq!(&code_of(&retry.json()), code);
    }
    for i in 0..5 {
        let g = code_of(&s.create(json!({ "url": format!("https://example.com/g{i}") })));
        assert!(seen.insert(g.clone()), "code {g} handed out again after a crash");
    }
}

#[test]
fn racing_creates_of_one_alias_give_it_to_exactly_one() {
    let s = Server::start(&[]);
    let racers = 10;
    let barrier = Arc::new(Barrier::new(racers));
    let url = s.url("/api/v1/links");
    let threads: Vec<_> = (0..racers)
        .map(|i| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                let body = json!({ "url": format!("https://example.com/racer/{i}"), "alias": "race-alias" }).to_string();
                barrier.wait();
                common::fetch(agent.post(&url).set("Content-Type", "application/json"), Body::Bytes(body.as_bytes()))
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().expect("racer thread")).collect();
    let winners: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "statuses: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status != 201) {
        r.field_problem(409, "alias");
    }
    let won_url = winners[0].json()["url"].as_str().expect("url").to_string();
    assert_redirect(&s.get("/race-alias"), 302, &won_url);
    assert_eq!(s.list_all().len(), 1);
}

#[test]
fn racing_retries_with_one_idempotency_key_create_one_link() {
    let s = Server::start(&[]);
    let racers = 10;
    let barrier = Arc::new(Barrier::new(racers));
    let url = s.url("/api/v1/links");
    let threads: Vec<_> = (0..racers)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                barrier.wait();
                let req = agent.post(&url).set("Content-Type", "application/json").set("Idempotency-Key", "race-key-0001");
                common::fetch(req, Body::Bytes(br#"{"url":"https://example.com/once"}"#))
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().expect("racer thread")).collect();
    assert!(answers.iter().all(|r| r.status == 201), "statuses: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    let codes: HashSet<String> = answers.iter().map(|r| code_of(&r.json())).collect();
    assert_eq!(codes.len(), 1, "one key gave several codes: {codes:?}");
    let fresh = answers.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
    assert_eq!(fresh, 1, "exactly one answer is the original");
    assert_eq!(s.list_all().len(), 1);
}

#[test]
fn the_click_limit_can_be_changed_and_head_does_not_use_it_up() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/lim", "max_clicks": 2 })));
    let path = format!("/api/v1/links/{code}");
    for _ in 0..3 {
        assert_eq!(s.head(&format!("/{code}")).status, 302, "HEAD used up a click");
    }
    for _ in 0..2 {
        assert_redirect(&s.get(&format!("/{code}")), 302, "https://example.com/lim");
    }
    s.get(&format!("/{code}")).problem(410);
    assert_eq!(s.head(&format!("/{code}")).status, 410);
    assert_eq!(s.link(&code)["clicks"], 2);

    let r = s.patch_json(&path, &json!({ "max_clicks": 4 }));
    assert_eq!(r.json()["max_clicks"], 4);
    for _ in 0..2 {
        assert_eq!(s.get(&format!("/{code}")).status, 302);
    }
    s.get(&format!("/{code}")).problem(410);

    let r = s.patch_json(&path, &json!({ "max_clicks": null }));
    assert_eq!(r.json()["max_clicks"], Value::Null);
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/{code}")).status, 302);
    }
    assert_eq!(s.wait_for_clicks(&code, 7), 7);

    // A limit below the clicks already made ends the link at once.
    assert_eq!(s.patch_json(&path, &json!({ "max_clicks": 1 })).status, 200);
    s.get(&format!("/{code}")).problem(410);
}

#[test]
fn the_longest_accepted_url_is_served_whole() {
    let s = Server::start(&[]);
    let head = "https://example.com/";
    let url = format!("{head}{}", "p".repeat(8192 - head.len()));
    let link = s.create(json!({ "url": url }));
    assert_eq!(link["url"], url.as_str());
    assert_redirect(&s.get(&format!("/{}", code_of(&link))), 302, &url);
}

#[test]
fn json_media_types_with_parameters_or_suffixes_are_accepted() {
    let s = Server::start(&[]);
    let body = br#"{"url":"https://example.com/ct"}"#;
    for ct in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.shortd+json"] {
        let r = s.send("POST", "/api/v1/links", &[("Content-Type", ct)], Body::Bytes(body));
        assert_eq!(r.status, 201, "Content-Type {ct}: {r:?}");
    }
    let code = code_of(&s.create(json!({ "url": "https://example.com/ct" })));
    let r = s.send(
        "PATCH",
        &format!("/api/v1/links/{code}"),
        &[("Content-Type", "application/merge-patch+json")],
        Body::Bytes(br#"{"redirect":301}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.get(&format!("/{code}")).status, 301);
}

#[test]
fn expires_at_with_an_offset_means_the_same_instant() {
    let s = Server::start(&[]);
    let link = s.create(json!({ "url": "https://example.com/tz", "expires_at": "2035-06-01T12:00:00.250+02:00" }));
    let want = OffsetDateTime::parse("2035-06-01T10:00:00.250Z", &Rfc3339).expect("literal");
    assert_eq!(time_of(&link["expires_at"]), want);
}

#[test]
fn the_links_gauge_counts_live_links() {
    let s = Server::start(&[]);
    let codes: Vec<String> = (0..3).map(|i| code_of(&s.create(json!({ "url": format!("https://example.com/g{i}") })))).collect();
    assert_eq!(s.delete(&format!("/api/v1/links/{}", codes[0])).status, 204);
    let text = s.get("/metrics").body;
    assert_eq!(sample(&text, "shortd_links", &[]), Some(2.0), "shortd_links after 3 creates and 1 delete:\n{text}");
}

#[test]
fn idle_connections_do_not_hold_up_a_graceful_stop() {
    let mut s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/idle" })));
    assert_eq!(s.get(&format!("/{code}")).status, 302);
    // One connection that never sent a byte, one idle after a request.
    let silent = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connecting");
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connecting");
    std::io::Write::write_all(&mut kept, format!("GET /{code} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).expect("writing");
    kept.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 512];
    let n = std::io::Read::read(&mut kept, &mut buf).expect("reading the answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 302"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let (status, took) = s.stop_gracefully();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());
    assert!(took < Duration::from_secs(5), "idle connections held the stop for {took:?}");
    drop((silent, kept));
}

#[test]
fn head_is_answered_wherever_get_is() {
    let s = Server::start(&[]);
    let code = code_of(&s.create(json!({ "url": "https://example.com/h" })));
    for path in ["/api/v1/links".to_string(), format!("/api/v1/links/{code}")] {
        let r = s.head(&path);
        assert_eq!(r.status, 200, "HEAD {path}: {r:?}");
    }
}

/// Numbers of the log segment files (`NNNNNNNN.log`) in a data directory.
fn segment_files(dir: &std::path::Path) -> BTreeSet<u32> {
    std::fs::read_dir(dir)
        .expect("reading the data directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".log")?;
            (stem.len() == 8).then(|| stem.parse().ok()).flatten()
        })
        .collect()
}

#[test]
fn compaction_keeps_live_links_and_deletions_across_restarts() {
    let mut s =
        Server::start(&["--segment-bytes", "65536", "--snapshot-records", "100", "--compact-ratio", "0.5", "--durability", "interval"]);
    let url = |i: usize| format!("https://example.com/compaction/{i:04}/{}", "x".repeat(160));
    let lines: String = (0..600).map(|i| json!({ "url": url(i) }).to_string() + "\n").collect();
    let r = s.send("POST", "/api/v1/links:batch", &[("Content-Type", "application/x-ndjson")], Body::Bytes(lines.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    let out = r.json();
    assert_eq!(out["created"], 600, "{out}");
    let codes: Vec<String> = out["results"].as_array().expect("results").iter().map(|x| code_of(&x["link"])).collect();
    let first_segments = segment_files(&s.data_dir());
    assert!(first_segments.len() >= 3, "600 links of ~250 bytes should fill several 64 KiB segments: {first_segments:?}");

    // Delete the first two thirds (the oldest segments), four at a time.
    let deleted: Vec<String> = codes[..400].to_vec();
    std::thread::scope(|scope| {
        for chunk in deleted.chunks(100) {
            let s = &s;
            scope.spawn(move || {
                for code in chunk {
                    assert_eq!(s.delete(&format!("/api/v1/links/{code}")).status, 204);
                }
            });
        }
    });
    let oldest = *first_segments.iter().next().expect("segments exist");
    let compacted = poll_until(Duration::from_secs(10), || (!segment_files(&s.data_dir()).contains(&oldest)).then_some(()));
    assert!(
        compacted.is_some(),
        "segment {oldest} (nearly all dead) was not compacted away within 10 s; segments now {:?}",
        segment_files(&s.data_dir())
    );

    let check = |s: &Server, when: &str| {
        for (i, code) in codes.iter().enumerate() {
            let r = s.get(&format!("/{code}"));
            if i < 400 {
                assert_eq!(r.status, 410, "{when}: deleted link {code} answers {r:?}");
            } else {
                assert_redirect(&r, 302, &url(i));
            }
        }
        let (listed, _) = s.list_pages(64);
        let listed_codes: Vec<String> = listed.iter().map(code_of).collect();
        let unique: BTreeSet<&String> = listed_codes.iter().collect();
        assert_eq!(unique.len(), listed_codes.len(), "{when}: a link was listed twice");
        assert_eq!(unique, codes[400..].iter().collect::<BTreeSet<_>>(), "{when}: the list differs from the live links");
    };
    check(&s, "after compaction");
    let (status, _) = s.stop_gracefully();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());
    let mut s = s.restart();
    check(&s, "after a graceful restart");
    s.kill();
    let s = s.restart();
    check(&s, "after kill -9 and restart");
}

/// Sends a request head, reads the answer the server gives to the head
/// alone (a refusal before the body is read), then sends the body as a
/// client that did not wait would have, and asks `GET /healthz` on the
/// same connection. Returns the first answer's head and what the second
/// request got: `Some(status line)`, or `None` when the connection was
/// closed.
fn refusal_then_reuse(port: u16, head: &str, body: &[u8]) -> (String, Option<String>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    c.set_read_timeout(Some(Duration::from_secs(3))).expect("read timeout");
    c.write_all(head.as_bytes()).expect("writing the head");
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the whole first answer (head plus its Content-Length body)
    // is in; it comes before any of the request body is sent.
    loop {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        first.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&first).to_string();
        if let Some((h, b)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
            if b.len() >= len.unwrap_or(0) {
                break;
            }
        }
    }
    let first_head = String::from_utf8_lossy(&first).split("\r\n\r\n").next().unwrap_or("").to_string();
    let _ = c.write_all(body);
    // The server either reads past the body to this request or closes the
    // connection; the read's timeout bounds the wait for either.
    let second = match c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") {
        Err(_) => None,
        Ok(()) => match c.read(&mut buf) {
            Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()),
            _ => None,
        },
    };
    (first_head, second)
}

#[test]
fn a_refusal_before_the_body_is_read_keeps_or_closes_the_connection_cleanly() {
    let s = Server::start(&["--api-key", "first-key-0001"]);
    let body = br#"{"url":"https://example.com/"}"#;
    let cases = [
        ("401", format!("POST /api/v1/links HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())),
        ("405", format!("PUT /api/v1/links HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())),
        (
            "415",
            format!(
                "POST /api/v1/links HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer first-key-0001\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (want, head) in cases {
        let (first, second) = refusal_then_reuse(s.port, &head, body);
        assert!(first.starts_with(&format!("HTTP/1.1 {want}")), "first answer: {first:?}");
        let says_close = first.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close");
        if !says_close && !second.as_deref().is_some_and(|l| l.starts_with("HTTP/1.1 200")) {
            failures
                .push(format!("{want}: the answer keeps the connection alive (no Connection: close) but the next request got {second:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn listening_on_port_zero_gives_short_urls_with_the_real_port() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shortd.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shortd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--log-format", "json", "--data-dir"])
        .arg(dir.path().join("data"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = poll_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text.lines().find(|l| l.contains("shortd serving"))?;
        serde_json::from_str::<Value>(line).ok()?["fields"]["addr"].as_str().map(String::from)
    });
    let created = addr.as_ref().and_then(|addr| {
        common::agent()
            .post(&format!("http://{addr}/api/v1/links"))
            .send_json(json!({"url": "https://example.com/"}))
            .ok()?
            .into_json::<Value>()
            .ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    let (addr, created) =
        addr.zip(created).unwrap_or_else(|| panic!("no server answered; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert!(!addr.ends_with(":0"), "{addr}");
    assert_eq!(created["short_url"], format!("http://{addr}/{}", created["code"].as_str().unwrap()));
}

#[test]
fn drain_delay_keeps_serving_while_readyz_says_not_ready() {
    let mut s = Server::start(&["--drain-delay", "2s"]);
    let code = s.create(json!({"url": "https://example.com/still-served"}))["code"].as_str().unwrap().to_string();
    assert_eq!(s.get("/readyz").status, 200);
    let pid = s.pid();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    // Not ready, but still answering, until the delay is over.
    let unready = poll_until(Duration::from_secs(2), || (s.send_alone("GET", "/readyz", &[], Body::None).status == 503).then_some(()));
    assert!(unready.is_some(), "/readyz did not turn 503 after SIGTERM");
    let r = s.send_alone("GET", &format!("/{code}"), &[], Body::None);
    assert_eq!((r.status, r.header("location")), (302, Some("https://example.com/still-served")));
    let (status, took) = s.wait_for_exit();
    assert_eq!(status.code(), Some(0));
    assert!(took >= Duration::from_millis(500), "exited {took:?} after the check, before the delay was over");
}
