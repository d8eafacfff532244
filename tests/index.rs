//! The mapped index table (`index-N.idx`) of the real binary: a damaged
//! block, a damaged or torn file, `kill -9` in the middle of a merge, and
//! a store whose pages are not in memory.
//! In each case every link answers with its own URL once the store has
//! recovered, and no answer before that is another link's or a false 404.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CreateFailure, Server};

const BLOCK: usize = 4096;

/// `n` links in the export format, imported into a new data directory
/// under `root`; returns the directory and the `(code, url)` pairs.
fn imported(root: &Path, n: usize) -> (PathBuf, Vec<(String, String)>) {
    let links: Vec<(String, String)> =
        (0..n).map(|i| (format!("ix{i:06}"), format!("https://example.com/index/{i}?v={}", i * 31))).collect();
    let mut text = String::new();
    for (code, url) in &links {
        text.push_str(&format!("{{\"code\":\"{code}\",\"url\":\"{url}\",\"redirect\":302,\"clicks\":3,\"disabled\":false}}\n"));
    }
    let file = root.join("links.jsonl");
    std::fs::write(&file, text).unwrap();
    let dir = root.join("data");
    let out = common::cli(&["import", "--data-dir", dir.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    (dir, links)
}

fn tables(dir: &Path) -> Vec<PathBuf> {
    let mut t: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(".idx"))
        .collect();
    t.sort();
    t
}

/// Polls every link until each answers 302 with its URL; meanwhile an
/// answer may only be that, or 503 (the index is being rebuilt).
fn all_redirect_eventually(s: &Server, links: &[(String, String)]) {
    let mut left: Vec<&(String, String)> = links.iter().collect();
    let ok = common::poll_until(Duration::from_secs(60), || {
        left.retain(|(code, url)| {
            let (status, loc) = common::redirect(s.agent(), &s.base, code);
            match status {
                302 => {
                    assert_eq!(loc.as_deref(), Some(url.as_str()), "{code} answered another URL");
                    false
                }
                503 => true,
                other => panic!("{code}: {other} {loc:?} while the index recovers; want 302 or 503"),
            }
        });
        left.is_empty().then_some(())
    });
    assert!(ok.is_some(), "{} links still do not redirect, e.g. {:?}; log:\n{}", left.len(), left.first(), s.log());
}

#[test]
fn a_damaged_table_block_is_rebuilt_from_the_log_and_no_answer_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let (dir, links) = imported(root.path(), 20_000);
    let table = tables(&dir).pop().expect("the import wrote an index table");
    let mut bytes = std::fs::read(&table).unwrap();
    let blocks = (bytes.len() - BLOCK) / (BLOCK + 8);
    // A bit flipped in the slots of three blocks: the first, a middle one, the last.
    for b in [0, blocks / 2, blocks - 1] {
        bytes[BLOCK * (1 + b) + 100] ^= 0x40;
    }
    std::fs::write(&table, &bytes).unwrap();

    let s = Server::start_at(&dir, &[]);
    all_redirect_eventually(&s, &links);
    assert!(s.log().contains("index table damaged"), "the damage was not reported; log:\n{}", s.log());
    assert!(s.log().contains("index rebuilt from the log"), "no rebuild; log:\n{}", s.log());
    // Click totals (3 imported, plus the visits above) of the intact blocks
    // came along; the rebuild wrote a sound table.
    let clicked = links.iter().filter(|(code, _)| s.link(code)["clicks"].as_u64().is_some_and(|n| n >= 3)).count();
    assert!(clicked > links.len() * 9 / 10, "only {clicked} links kept their clicks");
    let written_after = || {
        let log = s.log();
        let rebuilt = log.find("index rebuilt from the log")?;
        log[rebuilt..].contains("snapshot and index table written").then_some(())
    };
    assert!(common::poll_until(Duration::from_secs(30), written_after).is_some(), "no table written after the rebuild");
    assert!(tables(&dir).iter().all(|t| std::fs::read(t).unwrap() != bytes), "the damaged table is still there");
    let mut s = s;
    s.stop_gracefully();
    let s = s.restart();
    common::assert_all_redirect(&s.base, &links, 4);
    assert!(!s.run_log().contains("index table damaged"), "the new table is damaged too");
}

#[test]
fn a_damaged_or_torn_table_file_sends_the_start_to_the_log() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("header", |b| b[20] ^= 1),
        ("torn", |b| b.truncate(b.len() / 2)),
        ("checksums", |b| {
            let n = b.len();
            b[n - 5] ^= 1
        }),
    ];
    for (what, damage) in damages {
        let root = tempfile::tempdir().unwrap();
        let (dir, links) = imported(root.path(), 5_000);
        let table = tables(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&table).unwrap();
        damage(&mut bytes);
        std::fs::write(&table, &bytes).unwrap();
        let mut s = Server::start_at(&dir, &[]);
        assert!(s.log().contains("index table unusable"), "{what}: not reported; log:\n{}", s.log());
        common::assert_all_redirect(&s.base, &links, 4);
        // The clean stop writes a sound table, which the next start uses.
        s.stop_gracefully();
        let s = s.restart();
        assert!(!s.run_log().contains("index table unusable"), "{what}: the table written at the stop is unusable");
        common::assert_all_redirect(&s.base, &links, 4);
    }
}

#[test]
fn kill_9_in_the_middle_of_a_merge_loses_no_acknowledged_link() {
    let root = tempfile::tempdir().unwrap();
    // Big enough that a merge takes a while, so that the kill lands in one.
    let (dir, imported_links) = imported(root.path(), 200_000);
    let flags = ["--snapshot-records", "2000", "--durability", "always", "--log-level", "info"];
    let mut acked_all = Vec::new();
    let mut s = Server::start_at(&dir, &flags);
    for round in 0..3 {
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let (acked, stop, base) = (acked.clone(), stop.clone(), s.base.clone());
                std::thread::spawn(move || {
                    let a = common::agent();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match common::create(&a, &base, &format!("https://example.com/merge/{round}/{t}/{i}")) {
                            Ok(link) => acked.lock().unwrap().push(link),
                            Err(CreateFailure::Transport(_)) => break,
                            Err(CreateFailure::Status(status, body)) => panic!("create answered {status}: {body}"),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Kill while a table is being written.
        let merging = common::poll_until(Duration::from_secs(60), || {
            std::fs::read_dir(&dir).unwrap().flatten().any(|e| e.file_name().to_str().unwrap().ends_with(".idx.tmp")).then_some(())
        });
        assert!(merging.is_some(), "round {round}: no merge started; log:\n{}", s.log());
        s.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        acked_all.extend(acked.lock().unwrap().drain(..));
        s = s.restart();
        assert!(
            !std::fs::read_dir(&dir).unwrap().flatten().any(|e| e.file_name().to_str().unwrap().ends_with(".idx.tmp")),
            "round {round}: the half-written table was not removed at start"
        );
        common::assert_all_redirect(&s.base, &acked_all, 4);
    }
    let sample: Vec<_> = imported_links.iter().step_by(97).cloned().collect();
    common::assert_all_redirect(&s.base, &sample, 4);
    assert!(acked_all.len() > 100, "only {} creates were acknowledged", acked_all.len());
}

/// Drops `dir`'s files from the page cache, as memory pressure would;
/// false on a file system that keeps its files in memory (tmpfs).
fn evict_from_page_cache(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if rustix::fs::statfs(dir).is_ok_and(|s| s.f_type == TMPFS_MAGIC) {
        return false;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let f = std::fs::File::open(e.unwrap().path()).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
    true
}

/// A store larger than memory, or one the page cache has dropped: every
/// link still answers with its own URL, and lookups whose pages are not in
/// memory are done on a blocking thread, not in the event loop.
#[test]
fn links_whose_pages_are_not_in_memory_answer_right_and_are_read_off_the_event_loop() {
    // Under the target folder, not the system's temporary one, which is
    // often a tmpfs whose pages cannot be dropped.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (dir, links) = imported(root.path(), 20_000);
    // No scrub: it would read every segment back into memory at start.
    let s = Server::start_at(&dir, &["--scrub-rate", "0"]);
    let evicted = evict_from_page_cache(&dir);
    let sample: Vec<(String, String)> = links.iter().step_by(97).cloned().collect();
    for (code, url) in &sample {
        let (status, loc) = common::redirect(s.agent(), &s.base, code);
        assert_eq!((status, loc.as_deref()), (302, Some(url.as_str())), "{code}");
    }
    let metrics = s.get("/metrics").body;
    let cold: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shortd_redirect_cold_loads_total ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shortd_redirect_cold_loads_total in /metrics"));
    if evicted {
        assert!(cold > 0, "{} lookups over an evicted store, none read off the event loop", sample.len());
    } else {
        common::prereq::skip_or_fail(
            &format!("a data directory off tmpfs ({} is on tmpfs: its pages cannot leave memory; {cold} cold loads)", dir.display()),
            "a target folder on a disk file system (CARGO_TARGET_DIR)",
        );
    }
    // Once read, the same links are cached and answer at once.
    for (code, url) in sample.iter().take(20) {
        assert_eq!(common::redirect(s.agent(), &s.base, code), (302, Some(url.clone())));
    }
}
