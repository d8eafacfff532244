//! The offline commands of the real binary: `shortd export` and
//! `shortd import` round-trip every link, and `shortd check` tells a
//! healthy data directory from a damaged one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::disk;
use serde_json::Value;
use shortd::store::{NewLink, Patch, Store, StoreOptions};

const FUTURE_MS: i64 = 4_000_000_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn opts(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.segment_bytes = 65536;
    o
}

fn link(url: String) -> NewLink {
    NewLink { url, alias: None, expires_ms: 0, max_clicks: 0, redirect: 302, disabled: false, idempotency: None }
}

/// Fills `dir` with links of every kind; returns the number that are live.
fn populate(dir: &Path) -> usize {
    let store = Store::open(opts(dir)).expect("open store");
    let rt = rt();
    let mut live = 0;
    rt.block_on(async {
        for i in 0..1200u64 {
            let mut n = link(format!("https://example.com/export/{i}?x={}&y=%20z#frag", i * 13));
            if i % 5 == 0 {
                n.alias = Some(format!("alias_{i}-X"));
            }
            if i % 3 == 0 {
                n.expires_ms = FUTURE_MS + i as i64 * 1001;
            }
            if i % 7 == 0 {
                // Already expired, still exported.
                n.expires_ms = 1_600_000_000_123;
            }
            if i % 4 == 1 {
                n.max_clicks = i + 1;
            }
            n.redirect = [301, 302, 307, 308][(i % 4) as usize];
            n.disabled = i % 6 == 0;
            let code = store.create(n).await.expect("create").link.code;
            match i % 10 {
                0 => store.delete(&code).await.expect("delete"),
                1 | 2 => {
                    let p = Patch {
                        url: Some(format!("https://example.org/patched/{i}")),
                        disabled: Some(i % 4 == 1),
                        expires_ms: Some(0),
                        ..Patch::default()
                    };
                    store.update(&code, p).await.expect("patch");
                    live += 1;
                }
                _ => live += 1,
            }
        }
    });
    store.close();
    live
}

fn export(dir: &Path) -> BTreeMap<String, Value> {
    let out = common::cli(&["export", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("UTF-8 export")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("export line {l:?}: {e}"));
            (v["code"].as_str().expect("code").to_string(), v)
        })
        .collect()
}

#[test]
fn export_then_import_round_trips_every_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
    let live = populate(&from);
    let exported = export(&from);
    assert_eq!(exported.len(), live, "export lists each live link once, and no deleted one");

    let file = tmp.path().join("links.jsonl");
    let text: String = exported.values().map(|v| format!("{v}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = common::cli(&["import", "--data-dir", to.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains(&format!("imported {live} links")) && report.contains("0 lines refused"), "import report: {report}");

    let imported = export(&to);
    assert_eq!(imported.keys().collect::<Vec<_>>(), exported.keys().collect::<Vec<_>>(), "the same codes");
    for (code, want) in &exported {
        let got = &imported[code];
        for field in ["url", "expires_at", "max_clicks", "redirect", "disabled"] {
            assert_eq!(got[field], want[field], "{code}: {field}");
        }
    }

    // The library agrees, to the millisecond.
    let a = Store::open(StoreOptions { read_only: true, ..opts(&from) }).unwrap();
    let b = Store::open(StoreOptions { read_only: true, ..opts(&to) }).unwrap();
    let (la, _) = a.page(None, 100_000);
    let (lb, _) = b.page(None, 100_000);
    let key = |l: &shortd::store::Link| (l.code.to_string(), l.url.clone(), l.expires_ms, l.max_clicks, l.redirect, l.disabled);
    let mut ka: Vec<_> = la.iter().map(key).collect();
    let mut kb: Vec<_> = lb.iter().map(key).collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb);
}

/// Runs `shortd import` of `lines` into `dir`; returns its report.
fn import(dir: &Path, lines: &[String]) -> String {
    let file = dir.with_extension("jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = common::cli(&["import", "--data-dir", dir.to_str().unwrap(), file.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import failed: {report}");
    report
}

#[test]
fn a_second_import_of_a_file_names_the_first_refusals_and_counts_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut lines: Vec<String> = (0..250).map(|i| format!(r#"{{"code":"again{i:03}","url":"https://again.example/{i}"}}"#)).collect();
    assert!(import(&dir, &lines).contains("imported 250 links"));
    lines.push(r#"{"code":"newone1","url":"https://new.example/"}"#.into());
    let report = import(&dir, &lines);
    assert!(report.contains("imported 1 links") && report.contains("250 lines refused"), "{report}");
    let named: Vec<&str> = report.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(named.len(), 100, "{report}");
    assert!(named.iter().all(|l| l.contains("taken")) && named[0].starts_with("line 1: "), "{report}");
    assert!(report.lines().any(|l| l == "150 more lines: the alias is already taken"), "{report}");
}

#[test]
fn an_import_keeps_the_first_of_a_code_given_twice_and_names_each_refused_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut lines = vec![
        r#"{"code":"dup0001","url":"https://first.example/a","clicks":4}"#.to_string(),
        r#"{"code":"dup0001","url":"https://second.example/a"}"#.to_string(),
        r#"{"code":"bad0001","url":"ftp://x.example/"}"#.to_string(),
        String::new(),
        r#"{"url":"https://generated.example/"}"#.to_string(),
        r#"{"alias":"stats01","url":"https://s.example/","stats":[{"hour":"2026-11-30T12:00:00Z","clicks":2}]}"#.to_string(),
    ];
    // Enough lines for several of the importer's 1 MiB chunks.
    let filler = 20_000;
    lines.extend(
        (0..filler).map(|i| format!(r#"{{"code":"f{i:06}","url":"https://filler.example/{i}/{}","redirect":301}}"#, "x".repeat(40))),
    );
    lines.push(r#"{"code":"dup0001","url":"https://third.example/"}"#.to_string());
    lines.push(r#"{"code":"stats01","url":"https://third.example/"}"#.to_string());
    let last = lines.len();
    let report = import(&dir, &lines);
    assert!(report.contains(&format!("imported {} links", filler + 3)) && report.contains("4 lines refused"), "{report}");
    for (line, why) in [(2, "taken"), (3, "url"), (last - 1, "taken"), (last, "taken")] {
        assert!(report.lines().any(|l| l.starts_with(&format!("line {line}: ")) && l.contains(why)), "line {line} ({why}) in {report}");
    }

    // Into a store that now has an index table: taken codes stay refused.
    let report = import(
        &dir,
        &[r#"{"code":"dup0001","url":"https://fourth.example/"}"#.into(), r#"{"code":"new0001","url":"https://new.example/"}"#.into()],
    );
    assert!(report.contains("imported 1 links") && report.contains("1 lines refused") && report.contains("line 1: "), "{report}");

    let links = export(&dir);
    assert_eq!(links.len(), filler + 4);
    assert_eq!((links["dup0001"]["url"].as_str(), links["dup0001"]["clicks"].as_u64()), (Some("https://first.example/a"), Some(4)));
    assert_eq!(links["stats01"]["url"], "https://s.example/");
    assert_eq!(links["new0001"]["url"], "https://new.example/");
    assert_eq!(links["f019999"]["redirect"], 301);
    assert!(links.values().any(|v| v["url"] == "https://generated.example/"));
}

#[test]
fn check_passes_a_healthy_dir_and_names_a_damaged_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    populate(&dir);
    let d = dir.to_str().unwrap();
    let segs = disk::segments(&dir);
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());

    let out = common::cli(&["check", "--data-dir", d]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check of a healthy dir failed:\n{text}");
    assert!(text.contains("ok"), "{text}");

    // A torn tail in the newest segment is reported but is no failure:
    // the next start cuts it off.
    let newest = segs.last().unwrap();
    let end = disk::data_end(newest);
    disk::write_at(newest, end as u64, &disk::garbage(64));
    let out = common::cli(&["check", "--data-dir", d]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a torn newest tail is not damage:\n{text}");
    disk::write_at(newest, end as u64, &[0; 64]);

    // A flipped bit in the middle of an older segment.
    let older = &segs[1];
    let recs = disk::records(older);
    let victim = recs[recs.len() / 2];
    disk::flip_bit(older, victim.off as u64 + 40);
    let out = common::cli(&["check", "--data-dir", d]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "check passed a damaged dir:\n{text}");
    let name = older.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(name), "check names the damaged file {name}:\n{text}");
    assert!(text.contains(&victim.off.to_string()), "check names the offset {}:\n{text}", victim.off);
}
