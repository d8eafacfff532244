//! Crash safety of the real binary: under `--durability always` every
//! create that was answered 201 survives `kill -9`, round after round on
//! the same data directory, and garbage after the log's end (appended past
//! the preallocated size, or written over the zeros just after the last
//! record) is cut off at the next start without losing an acknowledged link.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::Duration;

use common::{disk, CreateFailure, Server};

const WRITERS: usize = 16;
const ROUNDS: usize = 3;
/// Small segments and frequent snapshots, so that rolls and snapshot writes
/// happen while the server is killed; warnings only (as these servers always
/// ran), so that the tail report is looked for among warnings.
const FLAGS: &[&str] = &["--segment-bytes", "131072", "--snapshot-records", "1500", "--log-level", "warn"];

type Links = Arc<Mutex<Vec<(String, String)>>>;

/// Runs `WRITERS` threads creating links until the server dies; returns the
/// links that were acknowledged with 201.
fn hammer_then_kill(server: Server, round: usize, run_for: Duration) -> Vec<(String, String)> {
    let acked: Links = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let base = server.base.clone();
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (acked, stop, refused, base) = (acked.clone(), stop.clone(), refused.clone(), base.clone());
            std::thread::spawn(move || {
                let a = common::agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("https://example.com/crash/r{round}/t{t}/{i}?q={}", i * 7919);
                    i += 1;
                    match common::create(&a, &base, &url) {
                        Ok(link) => {
                            assert_eq!(link.1, url, "the stored url differs from the one sent");
                            acked.lock().unwrap().push(link);
                        }
                        Err(CreateFailure::Status(s, body)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            eprintln!("create refused with {s}: {body}");
                        }
                        // The server was killed under this request: not acknowledged.
                        Err(CreateFailure::Transport(_)) => break,
                    }
                }
            })
        })
        .collect();
    sleep(run_for);
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer thread");
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0, "creates were refused while the server was healthy");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() > 50, "round {round}: only {} creates were acknowledged", acked.len());
    acked
}

fn verify(dir: &Path, all: &[(String, String)]) -> Server {
    let server = Server::start_at(dir, FLAGS);
    common::assert_all_redirect(&server.base, all, 4);
    server
}

/// The cut-off tail is reported at start, naming the file.
fn assert_tail_reported(server: &Server, segment: &Path) {
    let name = segment.file_name().unwrap().to_str().unwrap();
    let log = server.run_log();
    assert!(log.contains(name), "the start does not report the damaged tail of {name}; log:\n{log}");
}

#[test]
fn acknowledged_creates_survive_kill_9_and_garbage_after_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut all: Vec<(String, String)> = Vec::new();

    for round in 0..ROUNDS {
        let server = Server::start_at(&dir, FLAGS);
        let run_for = Duration::from_millis(1000 + 300 * round as u64);
        let acked = hammer_then_kill(server, round, run_for);
        eprintln!("round {round}: {} creates acknowledged before kill -9", acked.len());
        all.extend(acked);
        let server = verify(&dir, &all);
        server.kill9();
    }
    let codes: std::collections::HashSet<&str> = all.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes.len(), all.len(), "a code was handed out twice");
    assert!(disk::segments(&dir).len() > 1, "the test meant to roll segments");

    // Garbage appended past the preallocated end of the newest segment.
    let newest = disk::newest_segment(&dir);
    disk::append(&newest, &disk::garbage(4096));
    let server = verify(&dir, &all);
    assert_tail_reported(&server, &newest);
    server.kill9();

    // Garbage written over the zeros just after the last record.
    let newest = disk::newest_segment(&dir);
    let end = disk::data_end(&newest);
    disk::write_at(&newest, end as u64, &disk::garbage(300));
    let server = verify(&dir, &all);
    assert_tail_reported(&server, &newest);

    // The store still takes writes where the garbage was, and they last.
    let a = common::agent();
    for i in 0..50 {
        all.push(common::create(&a, &server.base, &format!("https://example.com/after-garbage/{i}")).expect("create after recovery"));
    }
    common::assert_all_redirect(&server.base, &all[all.len() - 50..], 1);
    let status = server.term();
    assert!(status.success(), "SIGTERM exit: {status}");
    let server = verify(&dir, &all);
    assert!(server.term().success());
}
