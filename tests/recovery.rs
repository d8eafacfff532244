//! Start-up, snapshots, compaction and a full disk, driven through the
//! store's library API (no HTTP).
//!
//! A "crash" here is a copy of the data directory taken while the store is
//! synced and idle (`common::disk::copy_dir`): that is what `kill -9` leaves
//! on disk, since the page cache survives the process. The original store is
//! then closed and the copy opened, as a restarted process would.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::disk;
use proptest::prelude::*;
use shortd::config::Durability;
use shortd::journal::record::KIND_PUT;
use shortd::store::{Link, Lookup, NewLink, OpenError, Patch, Store, StoreOptions, WriteError};

/// Small segments, so that a few thousand links span several of them.
const SEGMENT: u64 = 65536;
/// A far-future expiry base (2096), so that no link expires during a test.
const FUTURE_MS: i64 = 4_000_000_000_000;
/// `compact_ratio` above 1 means no segment is ever dead enough to compact.
const NEVER_COMPACT: f64 = 2.0;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn opts(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.segment_bytes = SEGMENT;
    o.compact_ratio = NEVER_COMPACT;
    o
}

fn open(o: StoreOptions) -> Store {
    let dir = o.dir.clone();
    Store::open(o).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn new_link(url: String) -> NewLink {
    NewLink::to(url)
}

/// Queues every create (so that group commit batches them) and waits for
/// the answers. Must run outside a tokio runtime.
fn create_all(store: &Store, news: Vec<NewLink>) -> Vec<Link> {
    let mut out = Vec::with_capacity(news.len());
    for chunk in news.chunks(4096) {
        let rxs: Vec<_> = chunk.iter().map(|n| store.create_queued(n.clone()).expect("queue create")).collect();
        for rx in rxs {
            out.push(rx.blocking_recv().expect("writer answered").expect("create succeeded").link);
        }
    }
    out
}

fn urls(prefix: &str, n: usize, pad: usize) -> Vec<NewLink> {
    (0..n).map(|i| new_link(format!("https://example.com/{prefix}/{i}/{}", "p".repeat(pad)))).collect()
}

/// What a lookup shows, comparable and printable.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Missing,
    Deleted,
    Live(Link),
}

fn seen(store: &Store, code: &str) -> Seen {
    match store.lookup(code) {
        Lookup::Missing => Seen::Missing,
        Lookup::Deleted => Seen::Deleted,
        Lookup::Live(l) => Seen::Live(l),
        Lookup::Unavailable => panic!("{code}: the index is damaged"),
    }
}

/// Syncs the store and copies its directory: the disk after a crash now.
fn crash_copy(store: &Store, from: &Path, to: &Path) {
    rt().block_on(store.sync()).expect("sync before the crash copy");
    disk::copy_dir(from, to);
}

/// The links that the store does not show as they were acknowledged,
/// each with what it shows instead.
fn wrong_links(store: &Store, links: &[Link]) -> Vec<String> {
    links
        .iter()
        .filter_map(|l| match seen(store, &l.code) {
            Seen::Live(got) if got == *l => None,
            other => Some(format!("{}: {other:?}", l.code)),
        })
        .collect()
}

fn assert_all_live(store: &Store, links: &[Link], what: &str) {
    let bad = wrong_links(store, links);
    assert!(bad.is_empty(), "{what}: {} of {} links are wrong, e.g. {:?}", bad.len(), links.len(), &bad[..bad.len().min(5)]);
}

// ---------------------------------------------------------------- torn tail

#[derive(Clone, Copy, Debug)]
enum Tear {
    /// The second half of the last record never reached the disk.
    ZeroHalf,
    /// None of the last record reached the disk.
    ZeroAll,
    /// The last record's second half is garbage.
    Garbage,
    /// The file ends in the middle of the last record.
    Truncate,
}

/// Builds a crashed directory whose last record is torn; returns it with
/// every link created and the code of the torn one.
fn torn(tmp: &Path, tear: Tear) -> (PathBuf, Vec<Link>, String) {
    let live = tmp.join("live");
    let crashed = tmp.join("crashed");
    let store = open(opts(&live));
    let links = create_all(&store, urls("torn", 400, 60));
    crash_copy(&store, &live, &crashed);
    store.close();

    let seg = disk::newest_segment(&crashed);
    let last = *disk::records(&seg).last().expect("records in the newest segment");
    assert_eq!(last.kind, KIND_PUT);
    let code = disk::put_key(&seg, last.off);
    let (off, half) = (last.off as u64, last.padded as u64 / 2);
    // A torn record's batch never finished its sync, so no sync mark
    // follows it.
    let end = off as usize + last.padded;
    disk::write_at(&seg, end as u64, &vec![0; disk::data_end(&seg).saturating_sub(end)]);
    match tear {
        Tear::ZeroHalf => disk::write_at(&seg, off + half, &vec![0; half as usize]),
        Tear::ZeroAll => disk::write_at(&seg, off, &vec![0; last.padded]),
        Tear::Garbage => disk::write_at(&seg, off + half, &disk::garbage(half as usize)),
        Tear::Truncate => std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(off + half).unwrap(),
    }
    (crashed, links, code)
}

/// The store opens on a torn tail and serves every record before it.
fn torn_tail_opens(tear: Tear) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, links, torn_code) = torn(tmp.path(), tear);
    let store = open(opts(&dir));
    let (kept, lost): (Vec<Link>, Vec<Link>) = links.into_iter().partition(|l| l.code != torn_code);
    assert_eq!(lost.len(), 1);
    assert_all_live(&store, &kept, &format!("{tear:?}: after recovery"));
    assert_eq!(seen(&store, &torn_code), Seen::Missing, "{tear:?}: the torn record must be dropped");
    store.close();
    let store = open(opts(&dir));
    assert_all_live(&store, &kept, &format!("{tear:?}: after a second start"));
    store.close();
}

/// Writes made after the store recovered from a torn tail are readable
/// (at once when `at_once`) and after a restart.
fn torn_tail_takes_new_writes(tear: Tear, at_once: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, links, torn_code) = torn(tmp.path(), tear);
    let store = open(opts(&dir));
    let mut kept: Vec<Link> = links.into_iter().filter(|l| l.code != torn_code).collect();
    // Enough to fill the rest of the segment and roll to the next one.
    let fresh = create_all(&store, urls("after-tear", 600, 60));
    if at_once {
        assert_all_live(&store, &fresh, &format!("{tear:?}: links created after recovery, before a restart"));
    }
    kept.extend(fresh);
    store.close();
    drop(store);
    let store = open(opts(&dir));
    assert_all_live(&store, &kept, &format!("{tear:?}: every link after a restart"));
    store.close();
}

#[test]
fn torn_tail_zero_filled_is_cut_off() {
    torn_tail_opens(Tear::ZeroHalf);
    torn_tail_opens(Tear::ZeroAll);
    torn_tail_takes_new_writes(Tear::ZeroHalf, true);
}

#[test]
fn torn_tail_of_garbage_is_cut_off() {
    torn_tail_opens(Tear::Garbage);
    torn_tail_takes_new_writes(Tear::Garbage, true);
}

#[test]
fn torn_tail_truncated_file_is_cut_off() {
    torn_tail_opens(Tear::Truncate);
    torn_tail_takes_new_writes(Tear::Truncate, false);
}

#[test]
fn torn_tail_truncated_file_takes_new_writes_readable_at_once() {
    torn_tail_takes_new_writes(Tear::Truncate, true);
}

/// A crash while the writer rolls to a new segment can leave that segment
/// empty or zero-filled, without its header (Segment::create writes the
/// header after creating and preallocating the file).
fn crash_during_roll(len: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let (live, crashed) = (tmp.path().join("live"), tmp.path().join("crashed"));
    let store = open(opts(&live));
    let links = create_all(&store, urls("roll", 300, 60));
    crash_copy(&store, &live, &crashed);
    store.close();
    let segs = disk::segments(&crashed);
    let next = segs.len() as u32 + 1;
    let path = crashed.join(format!("{next:08}.log"));
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();

    let store =
        Store::open(opts(&crashed)).unwrap_or_else(|e| panic!("a crash during a segment roll ({len} zero bytes) stops the start: {e}"));
    assert_all_live(&store, &links, "after a crash during a roll");
    let fresh = create_all(&store, urls("after-roll-crash", 300, 60));
    assert_all_live(&store, &fresh, "links created after a crash during a roll");
    store.close();
}

#[test]
fn crash_during_segment_roll_leaves_a_startable_store() {
    crash_during_roll(0);
    crash_during_roll(SEGMENT);
}

#[test]
fn the_next_segment_is_prepared_ahead_and_a_close_leaves_none_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(opts(&dir));
    let links = create_all(&store, urls("spare", 1500, 60));
    let segs = disk::segments(&dir);
    assert!(segs.len() >= 3, "1500 links fit in {} segment(s) of {SEGMENT} bytes", segs.len());
    let spare = dir.join(format!("{:08}.log.tmp", segs.len() + 1));
    let prepared = common::poll_until(Duration::from_secs(5), || spare.exists().then_some(()));
    assert!(prepared.is_some(), "no segment prepared after {}", segs.len());
    store.close();
    let left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".tmp")).collect();
    assert!(left.is_empty(), "a close left {left:?}");
    let store = open(opts(&dir));
    assert_all_live(&store, &links, "after a close and a start");
    store.close();
}

/// A record longer than a whole segment (a long URL with a small
/// `--segment-bytes`; the server's settings refuse that pair, the library
/// refuses the record) is refused, and the store carries on.
#[test]
fn a_link_larger_than_a_segment_is_refused_and_nothing_else_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(opts(&dir));
    let small = create_all(&store, urls("before-big", 10, 10));
    let rx = store.create_queued(new_link(format!("https://example.com/{}", "b".repeat(SEGMENT as usize + 4096)))).unwrap();
    match rx.blocking_recv().unwrap() {
        Err(WriteError::Unavailable(msg)) => assert!(msg.contains("segment"), "{msg}"),
        other => panic!("a record larger than a segment was not refused: {:?}", other.map(|c| c.link.code)),
    }
    let after = create_all(&store, urls("after-big", 10, 10));
    assert_all_live(&store, &small, "links before the big one");
    assert_all_live(&store, &after, "links after the big one");
    store.close();
    let store = open(opts(&dir));
    assert_all_live(&store, &small, "after a restart: before");
    assert_all_live(&store, &after, "after a restart: after");
    store.close();
}

// ------------------------------------------------------- mid-log damage

#[test]
fn a_damaged_segment_header_stops_the_start_and_names_that_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let store = open(opts(&dir));
    create_all(&store, urls("head", 1500, 90));
    store.close();
    let segs = disk::segments(&dir);
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    // Segments are opened together, their headers read at once: the damaged
    // one is still the one named.
    let victim = &segs[1];
    disk::flip_bit(victim, 13);
    match Store::open(opts(&dir)) {
        Ok(s) => {
            s.close();
            panic!("a damaged segment header went unnoticed at start-up");
        }
        Err(OpenError::Damaged { file, offset, reason }) => {
            assert_eq!((&file, offset), (victim, 0), "{reason}");
            assert!(reason.contains("header"), "{reason}");
        }
        Err(e) => panic!("not reported as damage: {e}"),
    }
}

#[test]
fn flipped_bit_in_an_older_segment_stops_the_start_and_repair_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, crashed) = (tmp.path().join("live"), tmp.path().join("crashed"));
    let store = open(opts(&live));
    let links = create_all(&store, urls("flip", 1500, 90));
    // A crash copy holds no snapshot, so a start replays the whole log.
    crash_copy(&store, &live, &crashed);
    store.close();
    assert!(disk::snapshots(&crashed).is_empty());
    let segs = disk::segments(&crashed);
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());

    let older = &segs[0];
    let recs = disk::records(older);
    let victim = recs[recs.len() / 2];
    let victim_code = disk::put_key(older, victim.off);
    disk::flip_bit(older, victim.off as u64 + 36);

    let err = match Store::open(opts(&crashed)) {
        Ok(s) => {
            s.close();
            panic!("a flipped bit in an older segment went unnoticed at start-up");
        }
        Err(e) => e,
    };
    match &err {
        OpenError::Damaged { file, offset, .. } => {
            assert_eq!(file, older, "names the damaged file");
            assert_eq!(*offset, victim.off as u64, "names the damaged record's offset");
        }
        other => panic!("want OpenError::Damaged, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&older.display().to_string()) && msg.contains(&victim.off.to_string()), "message names file and offset: {msg}");
    assert!(msg.contains("repair"), "message says how to go on: {msg}");

    let mut o = opts(&crashed);
    o.repair = true;
    let store = open(o);
    let (kept, lost): (Vec<Link>, Vec<Link>) = links.into_iter().partition(|l| l.code != victim_code);
    assert_eq!(lost.len(), 1);
    assert_all_live(&store, &kept, "after --repair");
    assert_eq!(seen(&store, &victim_code), Seen::Missing);
    let mut all = kept;
    all.extend(create_all(&store, urls("after-repair", 50, 10)));
    store.close();

    // The repaired start wrote a snapshot on close; a plain start now works.
    let store = open(opts(&crashed));
    assert_all_live(&store, &all, "a normal start after a repaired one");
    store.close();
}

// ------------------------------------------ snapshot + replay == replay

#[derive(Clone, Debug)]
enum Op {
    Create {
        alias: bool,
        pad: usize,
        ttl: Option<u16>,
        max_clicks: u8,
        redirect: u16,
        idem: bool,
    },
    /// Sends an earlier idempotent create again.
    Retry {
        pick: usize,
    },
    Patch {
        pick: usize,
        pad: Option<usize>,
        ttl: Option<Option<u16>>,
        max_clicks: Option<u8>,
        redirect: Option<u16>,
        disabled: Option<bool>,
    },
    Delete {
        pick: usize,
    },
    Click {
        pick: usize,
        n: u8,
    },
    Restart {
        crash: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let redirect = prop::sample::select(vec![301u16, 302, 307, 308]);
    prop_oneof![
        4 => (any::<bool>(), 0usize..3000, prop::option::of(1u16..1000), any::<u8>(), redirect.clone(), any::<bool>())
            .prop_map(|(alias, pad, ttl, max_clicks, redirect, idem)| Op::Create { alias, pad, ttl, max_clicks, redirect, idem }),
        1 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        3 => (any::<usize>(), prop::option::of(0usize..3000), prop::option::of(prop::option::of(1u16..1000)), prop::option::of(any::<u8>()),
              prop::option::of(redirect), prop::option::of(any::<bool>()))
            .prop_map(|(pick, pad, ttl, max_clicks, redirect, disabled)| Op::Patch { pick, pad, ttl, max_clicks, redirect, disabled }),
        2 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        3 => (any::<usize>(), 1u8..50).prop_map(|(pick, n)| Op::Click { pick, n }),
        1 => any::<bool>().prop_map(|crash| Op::Restart { crash }),
    ]
}

/// The expected visible state of one link.
#[derive(Clone, Debug)]
struct Want {
    url: String,
    expires_ms: i64,
    max_clicks: u64,
    redirect: u16,
    disabled: bool,
    deleted: bool,
}

#[derive(Default)]
struct Model {
    links: BTreeMap<String, Want>,
    order: Vec<String>,
    clicks: HashMap<String, u64>,
    /// Idempotency key, body hash, code.
    idem: Vec<(String, u64, String)>,
}

impl Model {
    fn pick(&self, i: usize) -> Option<String> {
        (!self.order.is_empty()).then(|| self.order[i % self.order.len()].clone())
    }
}

fn expiry(ttl: Option<u16>) -> i64 {
    ttl.map_or(0, |t| FUTURE_MS + t as i64 * 1000)
}

/// Checks every code the model knows (and one it does not) against a store.
fn check_against_model(store: &Store, model: &Model, label: &str) -> Result<BTreeMap<String, (Seen, u64)>, TestCaseError> {
    let mut state = BTreeMap::new();
    let mut live = 0u64;
    for (code, want) in &model.links {
        let got = seen(store, code);
        let clicks = store.clicks(code);
        let want_clicks = model.clicks.get(code).copied().unwrap_or(0);
        prop_assert_eq!(clicks, want_clicks, "{}: clicks of {}", label, code);
        if want.deleted {
            prop_assert_eq!(&got, &Seen::Deleted, "{}: {} was deleted", label, code);
        } else {
            live += 1;
            let Seen::Live(l) = &got else {
                return Err(TestCaseError::fail(format!("{label}: {code} should be live, is {got:?}")));
            };
            prop_assert_eq!(&l.url, &want.url, "{}: url of {}", label, code);
            prop_assert_eq!(l.expires_ms, want.expires_ms, "{}: expiry of {}", label, code);
            prop_assert_eq!(l.max_clicks, want.max_clicks, "{}: max_clicks of {}", label, code);
            prop_assert_eq!(l.redirect, want.redirect, "{}: redirect of {}", label, code);
            prop_assert_eq!(l.disabled, want.disabled, "{}: disabled of {}", label, code);
            prop_assert_eq!(l.clicks, want_clicks, "{}: link.clicks of {}", label, code);
        }
        state.insert(code.clone(), (got, clicks));
    }
    prop_assert_eq!(seen(store, "never-made"), Seen::Missing);
    prop_assert_eq!(store.stats().links, live, "{}: live link count", label);
    let (page, next) = store.page(None, 100_000);
    prop_assert!(next.is_none());
    let mut paged: Vec<&str> = page.iter().map(|l| l.code.as_str()).collect();
    paged.sort_unstable();
    let want_paged: Vec<&str> = model.links.iter().filter(|(_, w)| !w.deleted).map(|(c, _)| c.as_str()).collect();
    prop_assert_eq!(paged, want_paged, "{}: paging lists exactly the live links", label);
    Ok(state)
}

/// Idempotent creates sent again answer with the link they made (or Gone).
fn check_idempotency(store: &Store, model: &Model, label: &str) -> Result<(), TestCaseError> {
    let rt = rt();
    for (key, hash, code) in &model.idem {
        let mut n = new_link("https://example.com/retry".into());
        n.idempotency = Some((key.clone(), *hash));
        let r = rt.block_on(store.create(n));
        if model.links[code].deleted {
            prop_assert!(matches!(r, Err(WriteError::Gone)), "{}: retry of {} for deleted {}: {:?}", label, key, code, r.map(|c| c.link));
        } else {
            let c = r.map_err(|e| TestCaseError::fail(format!("{label}: retry of {key}: {e}")))?;
            prop_assert!(c.replayed, "{}: retry of {} made a new link {}", label, key, c.link.code);
            prop_assert_eq!(c.link.code.as_str(), code.as_str());
        }
    }
    Ok(())
}

fn proptest_opts(dir: &Path) -> StoreOptions {
    let mut o = opts(dir);
    // Durability is covered elsewhere; here fsyncs would only cost time.
    o.durability = Durability::Never;
    o.snapshot_records = 5;
    o
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut generation = 0;
    let mut dir = tmp.path().join("d0");
    let mut store = open(proptest_opts(&dir));
    let mut m = Model::default();
    let mut made = 0usize;
    for op in ops {
        match op.clone() {
            Op::Create { alias, pad, ttl, max_clicks, redirect, idem } => {
                made += 1;
                let mut n = new_link(format!("https://example.com/{made}/{}", "u".repeat(pad)));
                n.alias = alias.then(|| format!("alias-{made}"));
                n.expires_ms = expiry(ttl);
                n.max_clicks = max_clicks as u64;
                n.redirect = redirect;
                let key = format!("idem-{made}");
                if idem {
                    n.idempotency = Some((key.clone(), made as u64 * 31));
                }
                let c = rt.block_on(store.create(n.clone())).map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
                prop_assert!(!c.replayed);
                let code = c.link.code.to_string();
                if let Some(a) = &n.alias {
                    prop_assert_eq!(&code, a);
                }
                prop_assert!(!m.links.contains_key(&code), "code {} handed out twice", code);
                let want =
                    Want { url: n.url, expires_ms: n.expires_ms, max_clicks: n.max_clicks, redirect, disabled: false, deleted: false };
                m.links.insert(code.clone(), want);
                m.order.push(code.clone());
                if idem {
                    m.idem.push((key, made as u64 * 31, code));
                }
            }
            Op::Retry { pick } => {
                if m.idem.is_empty() {
                    continue;
                }
                let (key, hash, code) = m.idem[pick % m.idem.len()].clone();
                let mut n = new_link("https://example.com/ignored".into());
                n.idempotency = Some((key, hash));
                match rt.block_on(store.create(n)) {
                    Ok(c) => {
                        prop_assert!(c.replayed && c.link.code == code.as_str() && !m.links[&code].deleted);
                    }
                    Err(WriteError::Gone) => prop_assert!(m.links[&code].deleted),
                    Err(e) => return Err(TestCaseError::fail(format!("retry: {e}"))),
                }
            }
            Op::Patch { pick, pad, ttl, max_clicks, redirect, disabled } => {
                let Some(code) = m.pick(pick) else { continue };
                made += 1;
                let p = Patch {
                    url: pad.map(|pad| format!("https://example.org/{made}/{}", "v".repeat(pad))),
                    expires_ms: ttl.map(expiry),
                    max_clicks: max_clicks.map(u64::from),
                    redirect,
                    disabled,
                };
                let r = rt.block_on(store.update(&code, p.clone()));
                let want = m.links.get_mut(&code).expect("known code");
                if want.deleted {
                    prop_assert!(matches!(r, Err(WriteError::Gone)), "patch of deleted {}: {:?}", code, r);
                    continue;
                }
                let got = r.map_err(|e| TestCaseError::fail(format!("patch {code}: {e}")))?;
                if let Some(u) = p.url {
                    want.url = u;
                }
                if let Some(e) = p.expires_ms {
                    want.expires_ms = e;
                }
                if let Some(x) = p.max_clicks {
                    want.max_clicks = x;
                }
                if let Some(r) = p.redirect {
                    want.redirect = r;
                }
                if let Some(d) = p.disabled {
                    want.disabled = d;
                }
                prop_assert_eq!(&got.url, &want.url);
                prop_assert_eq!(got.disabled, want.disabled);
            }
            Op::Delete { pick } => {
                let Some(code) = m.pick(pick) else { continue };
                rt.block_on(store.delete(&code)).map_err(|e| TestCaseError::fail(format!("delete {code}: {e}")))?;
                m.links.get_mut(&code).expect("known code").deleted = true;
            }
            Op::Click { pick, n } => {
                let Some(code) = m.pick(pick) else { continue };
                store.add_clicks(&code, n as u64);
                store.persist_clicks();
                *m.clicks.entry(code).or_default() += n as u64;
            }
            Op::Restart { crash } => {
                generation += 1;
                let next = tmp.path().join(format!("d{generation}"));
                if crash {
                    crash_copy(&store, &dir, &next);
                    store.close();
                    drop(store);
                } else {
                    store.close();
                    drop(store);
                    std::fs::rename(&dir, &next).unwrap();
                }
                dir = next;
                store = open(proptest_opts(&dir));
                check_against_model(&store, &m, "after a restart")?;
            }
        }
    }

    // The final state, as a crash would leave it: with whatever snapshots
    // were written along the way, and the same without any snapshot.
    let with = tmp.path().join("with-snapshots");
    let without = tmp.path().join("without-snapshots");
    crash_copy(&store, &dir, &with);
    store.close();
    drop(store);
    disk::copy_dir(&with, &without);
    disk::remove_snapshots(&without);

    let a = open(proptest_opts(&with));
    let b = open(proptest_opts(&without));
    let sa = check_against_model(&a, &m, "snapshot + replay")?;
    let sb = check_against_model(&b, &m, "replay alone")?;
    prop_assert_eq!(sa, sb, "snapshot + replay differs from replay alone");
    check_idempotency(&a, &m, "snapshot + replay")?;
    check_idempotency(&b, &m, "replay alone")?;
    a.close();
    b.close();
    // A clean close writes an exact snapshot; start from it once more.
    let a = open(proptest_opts(&with));
    check_against_model(&a, &m, "after a clean close")?;
    a.close();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_replay_equals_replay_alone(ops in prop::collection::vec(op(), 1..45)) {
        run_ops(&ops)?;
    }
}

/// One burst of concurrent changes to distinct links: 500 deletes, 1000
/// patches, 500 creates and some clicks, applied to the model as well.
fn burst(rt: &tokio::runtime::Runtime, store: &Arc<Store>, m: &mut Model, round: usize) {
    let base = round * 1500;
    let (deletes, patches) = (m.order[base..base + 500].to_vec(), m.order[base + 500..base + 1500].to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    rt.block_on(async {
        for code in deletes.clone() {
            let s = store.clone();
            tasks.spawn(async move { s.delete(&code).await.map(|_| None) });
        }
        for (i, code) in patches.iter().cloned().enumerate() {
            let s = store.clone();
            let p = Patch { url: Some(format!("https://example.org/r{round}/{i}")), disabled: Some(i % 3 == 0), ..Patch::default() };
            tasks.spawn(async move { s.update(&code, p).await.map(Some) });
        }
        for i in 0..500 {
            let s = store.clone();
            tasks.spawn(async move { s.create(new_link(format!("https://example.net/r{round}/{i}"))).await.map(|c| Some(c.link)) });
        }
        while let Some(r) = tasks.join_next().await {
            if let Some(l) = r.expect("task").expect("write") {
                let want = Want { url: l.url.clone(), expires_ms: 0, max_clicks: 0, redirect: 302, disabled: l.disabled, deleted: false };
                if m.links.insert(l.code.to_string(), want).is_none() {
                    m.order.push(l.code.to_string());
                }
            }
        }
    });
    for code in deletes {
        m.links.get_mut(&code).unwrap().deleted = true;
    }
    for code in &patches[..100] {
        store.add_clicks(code, 3);
        *m.clicks.entry(code.clone()).or_default() += 3;
    }
    store.persist_clicks();
}

/// How long a merge of some 40 000 links may take on a busy machine.
const MERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a merge is writing in `dir`: an index table or a snapshot
/// under its temporary name (the next log segment, made ahead as
/// `.log.tmp`, is no merge).
fn half_written(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.ends_with(".idx.tmp") || (name.starts_with("snapshot-") && name.ends_with(".tmp"))
    })
}

/// Merges (an index table and its snapshot) are written by a background
/// thread while the writer goes on, changing the index meanwhile; a start
/// from the table plus the log after it must end at exactly the state of a
/// full replay.
#[test]
fn snapshots_taken_during_heavy_writes_replay_to_the_right_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("live");
    let mut o = opts(&dir);
    o.durability = Durability::Never;
    o.segment_bytes = 1 << 20;
    // Each burst writes more than this, so a snapshot can start inside it
    // and the rest of the burst run while it is written (the threshold is
    // the larger of this and an eighth of the index table, so not every
    // burst starts one; the copy must hold at least one).
    o.snapshot_records = 1800;
    let store = Arc::new(open(o.clone()));
    let mut m = Model::default();
    for l in create_all(&store, urls("fuzzy", 40_000, 20)) {
        let want = Want { url: l.url.clone(), expires_ms: 0, max_clicks: 0, redirect: 302, disabled: false, deleted: false };
        m.links.insert(l.code.to_string(), want);
        m.order.push(l.code.to_string());
    }
    let rt = rt();
    for round in 0..4 {
        burst(&rt, &store, &mut m, round);
        rt.block_on(store.sync()).unwrap();
        // A merge the burst started has finished (no index table or
        // snapshot is half written), so that the copy holds it.
        let settled = common::poll_until(MERGE_TIMEOUT, || (!half_written(&dir)).then_some(()));
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(settled.is_some(), "round {round}: a merge was still being written after {MERGE_TIMEOUT:?}: {files:?}");
    }
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    disk::copy_dir(&dir, &with);
    store.close();
    assert!(!disk::snapshots(&with).is_empty(), "a snapshot was written along the way");
    disk::copy_dir(&with, &without);
    disk::remove_snapshots(&without);

    let a = open(StoreOptions { dir: with, ..o.clone() });
    let b = open(StoreOptions { dir: without, ..o });
    let sa = check_against_model(&a, &m, "snapshot + replay").unwrap();
    let sb = check_against_model(&b, &m, "replay alone").unwrap();
    assert!(sa == sb);
    a.close();
    b.close();
}

// ---------------------------------------------------------------- compaction

#[test]
fn compaction_keeps_exactly_the_live_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut o = opts(&dir);
    o.compact_ratio = 0.3;
    // Durability does not matter here; fsyncs would only cost time.
    o.durability = Durability::Never;
    let store = open(o.clone());
    let links = create_all(&store, urls("compact", 3000, 80));
    let before = disk::segments(&dir).len();
    assert!(before >= 5, "want several segments, got {before}");

    let mut m = Model::default();
    for l in &links {
        let want = Want { url: l.url.clone(), expires_ms: 0, max_clicks: 0, redirect: 302, disabled: false, deleted: false };
        m.links.insert(l.code.to_string(), want);
    }
    let rt = rt();
    rt.block_on(async {
        for (i, l) in links.iter().enumerate() {
            match i % 10 {
                // Deleted: only a tombstone should be left.
                0..=4 => {
                    store.delete(&l.code).await.unwrap();
                    m.links.get_mut(l.code.as_str()).unwrap().deleted = true;
                }
                // Patched: only the newest version should be left.
                5..=7 => {
                    let url = format!("https://example.org/patched/{i}");
                    store.update(&l.code, Patch { url: Some(url.clone()), redirect: Some(308), ..Patch::default() }).await.unwrap();
                    let w = m.links.get_mut(l.code.as_str()).unwrap();
                    w.url = url;
                    w.redirect = 308;
                }
                // Untouched, with clicks whose records compaction drops.
                _ => {
                    store.add_clicks(&l.code, i as u64);
                    m.clicks.insert(l.code.to_string(), i as u64);
                }
            }
        }
    });
    store.persist_clicks();
    rt.block_on(store.sync()).unwrap();
    // Compaction runs in the writer's idle time (it may have started while
    // the changes went in) and removes a drained segment after the next
    // snapshot; wait until the count is down and has settled.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let n = disk::segments(&dir).len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n < before && last.1.elapsed() > Duration::from_millis(700) {
            break;
        }
        assert!(Instant::now() < deadline, "no segment was compacted away in 20s ({n} segments, {before} before)");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = disk::segments(&dir).len();
    eprintln!("segments: {before} before compaction, {after} after");
    check_against_model(&store, &m, "while running, after compaction").unwrap();
    store.close();

    drop(store);
    let store = open(o.clone());
    check_against_model(&store, &m, "after compaction and a restart").unwrap();
    // The survivors still take changes.
    let survivor = links.iter().find(|l| !m.links[l.code.as_str()].deleted).unwrap();
    rt.block_on(store.update(&survivor.code, Patch { disabled: Some(true), ..Patch::default() })).unwrap();
    m.links.get_mut(survivor.code.as_str()).unwrap().disabled = true;
    store.close();
    drop(store);
    let store = open(o);
    check_against_model(&store, &m, "after one more restart").unwrap();
    store.close();
}

// ---------------------------------------------------------------- full disk

/// A 2 MiB tmpfs, unmounted (lazily, should a test thread still hold a
/// file) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A fresh 2 MiB tmpfs at `tmp/mnt`, or None where no tmpfs can be
    /// mounted here (after `skip_or_fail`: a failure under CI).
    fn fresh(tmp: &Path) -> Option<(Tmpfs, PathBuf)> {
        let mnt = tmp.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        match Tmpfs::mount(&mnt) {
            Ok(fs) => Some((fs, mnt)),
            Err(e) => {
                common::prereq::skip_or_fail(&format!("a tmpfs mount, to fill a small disk ({e})"), "run as root: mount -t tmpfs");
                None
            }
        }
    }

    fn mount(at: &Path) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// What filling a small disk through the store left.
struct FullDisk {
    /// Why the first create that did not fit was refused.
    refusal: WriteError,
    /// Creates acknowledged (before and after the refusal).
    acked: usize,
    /// Acknowledged links not answered as made, on the full disk...
    wrong_when_full: Vec<String>,
    /// ...and after a restart on it.
    wrong_after_restart: Vec<String>,
    /// Files in the data directory whose names end in `.tmp`.
    leftovers: Vec<String>,
}

/// Fills a 2 MiB tmpfs through the store, tries 20 more creates, then
/// reads every acknowledged link back before and after a restart; None
/// when no tmpfs could be mounted.
fn fill_a_small_disk() -> Option<FullDisk> {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, mnt) = Tmpfs::fresh(tmp.path())?;
    let dir = mnt.join("data");
    let o = opts(&dir);
    let store = open(o.clone());
    let rt = rt();
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..100_000 {
        match rt.block_on(store.create(new_link(format!("https://example.com/full/{i}/{}", "f".repeat(200))))) {
            Ok(c) => acked.push(c.link),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("2 MiB filled up");
    eprintln!("{} creates acknowledged, then: {refusal}", acked.len());
    // More creates keep failing cleanly; reads are unaffected.
    for i in 0..20 {
        let r = rt.block_on(store.create(new_link(format!("https://example.com/still-full/{i}"))));
        if let Ok(c) = r {
            acked.push(c.link);
        }
    }
    let wrong_when_full = wrong_links(&store, &acked);
    store.close();
    drop(store);

    let store = open(o);
    let wrong_after_restart = wrong_links(&store, &acked);
    store.close();
    drop(store);
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    drop(fs);
    Some(FullDisk { refusal, acked: acked.len(), wrong_when_full, wrong_after_restart, leftovers })
}

#[test]
fn a_full_disk_fails_creates_and_loses_nothing() {
    let Some(full) = fill_a_small_disk() else { return };
    // A client whose create does not fit is told the disk is full (or the
    // store is unavailable), and every link it was told was made answers
    // as made, on the full disk and after a restart on it.
    let refusal = &full.refusal;
    assert!(matches!(refusal, WriteError::DiskFull(_) | WriteError::Unavailable(_)), "refusal: {refusal:?}");
    assert!(full.acked > 1000, "only {} links fit", full.acked);
    for (when, wrong) in [("on a full disk", &full.wrong_when_full), ("after a restart on a full disk", &full.wrong_after_restart)] {
        assert!(
            wrong.is_empty(),
            "{when}: {} of {} acknowledged links are wrong, e.g. {:?}",
            wrong.len(),
            full.acked,
            &wrong[..wrong.len().min(5)]
        );
    }
}

#[test]
fn a_failed_snapshot_leaves_no_temporary_file() {
    let Some(full) = fill_a_small_disk() else { return };
    assert!(full.leftovers.is_empty(), "left behind: {:?}", full.leftovers);
}

/// Click totals whose append fails (no room to roll to a new segment) stay
/// pending and are logged once there is room: a copy of the directory taken
/// then (what `kill -9` would leave, no snapshot since) has them.
#[test]
fn click_totals_survive_a_failed_append_and_land_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((fs, mnt)) = Tmpfs::fresh(tmp.path()) else { return };
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).unwrap();
    let dir = mnt.join("data");
    let store = open(opts(&dir));
    let rt = rt();
    let first = rt.block_on(store.create(new_link("https://example.com/clicked".into()))).unwrap().link;
    for i in 0..100_000 {
        if rt.block_on(store.create(new_link(format!("https://example.com/fill/{i}/{}", "f".repeat(200))))).is_err() {
            break;
        }
    }
    store.add_clicks(&first.code, 5);
    store.persist_clicks();
    assert!(rt.block_on(store.sync()).is_err() || store.poisoned().is_none(), "the sync after a failed append");
    std::fs::remove_file(&ballast).unwrap();
    // The next round carries the totals that the failed one could not log.
    let logged = (0..50).any(|_| {
        store.persist_clicks();
        let ok = rt.block_on(store.sync()).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(20));
        }
        ok
    });
    assert!(logged, "nothing could be logged after room was made: {:?}", store.poisoned());
    let copy = tmp.path().join("copy");
    disk::copy_dir(&dir, &copy);
    store.close();
    drop(store);
    drop(fs);
    let reopened = open(opts(&copy));
    assert_eq!(reopened.clicks(&first.code), 5, "click totals from before the failed append were lost");
    reopened.close();
}

/// Damage early in the newest segment with intact records after it is not a
/// torn tail: those records may be acknowledged links, so the start stops,
/// and `repair` keeps every intact record.
#[test]
fn damage_before_intact_records_in_the_newest_segment_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(opts(&dir));
    let links = create_all(&store, urls("newest", 20, 10));
    store.close();
    for snap in std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".snap")) {
        std::fs::remove_file(snap.path()).unwrap();
    }
    let seg = disk::segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 40] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    match Store::open(opts(&dir)) {
        Err(OpenError::Damaged { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, 32);
        }
        other => panic!("damage before intact records was taken for a torn tail: {:?}", other.err()),
    }
    let mut o = opts(&dir);
    o.repair = true;
    let store = open(o);
    assert_all_live(&store, &links[1..], "intact links after repair");
    store.close();
}

// ---------------------------------------------------------------- compaction

/// Compaction copies a segment in chunks of a few thousand records; a
/// segment with many more live records than a chunk loses none of them,
/// whether the record is at the start, the end or a chunk's edge.
#[test]
fn compacting_a_segment_of_many_chunks_keeps_every_live_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut o = StoreOptions::new(&dir);
    o.segment_bytes = 2 << 20;
    o.compact_ratio = 0.5;
    o.snapshot_records = 1000;
    let store = open(o.clone());
    // About 130 bytes a record: some 16 000 records in each 2 MiB segment.
    let links = create_all(&store, urls("many", 40_000, 20));
    let first = disk::segments(&dir)[0].clone();
    let rt = rt();
    // Most of the first segment's links go, so that it is worth compacting;
    // the rest (thousands, several chunks' worth of records) must move.
    let (gone, kept): (Vec<_>, Vec<_>) = links.iter().enumerate().partition(|(i, _)| *i < 16_000 && i % 5 != 0);
    rt.block_on(async {
        for (_, l) in &gone {
            store.delete(&l.code).await.expect("delete");
        }
    });
    let kept: Vec<Link> = kept.into_iter().map(|(_, l)| l.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.exists() {
        assert!(Instant::now() < deadline, "the first segment was not compacted away in 30 s: {:?}", disk::segments(&dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_all_live(&store, &kept, "after compaction");
    store.close();
    let store = open(o);
    assert_all_live(&store, &kept, "after compaction and a restart");
    for (_, l) in gone.iter().take(100) {
        assert_eq!(seen(&store, &l.code), Seen::Deleted, "{}", l.code);
    }
}
