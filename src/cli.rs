//! The commands behind `shortd`: serve, export, import, check.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::analytics::rollup::{Hour, DIM_NAMES, MS_PER_HOUR};
use crate::clock::rfc3339;
use crate::config::{Cli, Command, Config, Durability, LogFormat};
use crate::journal::open::unsynced_damage;
use crate::journal::record::{self, Body};
use crate::journal::scan::{Found, Scan};
use crate::journal::segment::{segment_number, Segment, SEGMENT_HEADER_LEN};
use crate::journal::snapshot::{self, Snapshot};
use crate::store::{Link, Store, StoreOptions};
use crate::Server;

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => match (*args).resolve() {
            Ok(cfg) => serve(cfg),
            Err(e) => Err(e.to_string()),
        },
        Command::Export(d) => {
            init_logging(LogFormat::Text, "warn");
            export(&d.data_dir)
        }
        Command::Import { data, links, file } => {
            init_logging(LogFormat::Text, &std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
            crate::import::run(&data.data_dir, &file, &links)
        }
        Command::Check { data } => {
            init_logging(LogFormat::Text, "warn");
            check(&data.data_dir)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shortd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    // openraft narrates every election and replication hiccup at info and
    // warn; the cluster logs what an operator needs. Name it to see more.
    let level = if level.contains("openraft") { level.to_string() } else { format!("{level},openraft=error,openraft::replication=off") };
    let filter = tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only where a person watches a terminal: in a file, a
    // journal or a log shipper they are noise (and JSON never has them).
    let colour = format == LogFormat::Text && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn serve(cfg: Config) -> Result<(), String> {
    init_logging(cfg.log_format, &cfg.log_level);
    // Listening for signals before the first request is served: a stop, or
    // a SIGHUP (whose default action ends the process), sent as soon as
    // /healthz answers must not be missed.
    let stops = listen_for(&[SignalKind::terminate(), SignalKind::interrupt()], "shortd-stops")?;
    let hangups = listen_for(&[SignalKind::hangup()], "shortd-hangups")?;
    let server = Server::start(cfg).map_err(|e| e.to_string())?;
    let app = server.app().clone();
    std::thread::Builder::new().name("shortd-reload".into()).spawn(move || reload_on_hangup(&app, &hangups)).map_err(|e| e.to_string())?;
    let _ = stops.recv();
    std::thread::spawn(move || {
        let _ = stops.recv();
        eprintln!("shortd: second signal, exiting now");
        std::process::exit(130);
    });
    let delay = server.app().cfg.drain_delay;
    if !delay.is_zero() {
        // Not ready, still serving: a load balancer polling /readyz moves
        // traffic away before the listeners close.
        tracing::info!(?delay, "shutting down: /readyz answers 503 while requests are still served");
        server.app().begin_shutdown();
        std::thread::sleep(delay);
    }
    tracing::info!("shutting down: draining connections (send SIGINT again to exit at once)");
    server.shutdown();
    Ok(())
}

/// Each SIGHUP re-reads the key file, the blocklist and the GeoIP database;
/// once a minute, rate-limit state of quiet clients is dropped.
fn reload_on_hangup(app: &crate::http::App, hangups: &Receiver<()>) {
    const PRUNE_EVERY: Duration = Duration::from_secs(60);
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    loop {
        match hangups.recv_timeout(next_prune.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                app.access.reload();
                app.analytics.geo.reload();
                crate::metrics::config_reloaded();
            }
            Err(RecvTimeoutError::Timeout) => {
                app.access.prune();
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A receiver that gets one message per signal of the given kinds, from
/// the moment this returns (their handlers are installed by then).
fn listen_for(kinds: &[SignalKind], thread: &str) -> Result<Receiver<()>, String> {
    let kinds = kinds.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let cannot = format!("cannot listen for signals {kinds:?}");
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let Ok(streams) = kinds.into_iter().map(signal).collect::<Result<Vec<_>, _>>() else { return };
                let _ = ready_tx.send(());
                let mut forwards = tokio::task::JoinSet::new();
                for mut stream in streams {
                    let tx = tx.clone();
                    forwards.spawn(async move { while stream.recv().await.is_some() && tx.send(()).is_ok() {} });
                }
                forwards.join_all().await;
            });
        })
        .map_err(|e| e.to_string())?;
    ready.recv().map_err(|_| cannot)?;
    Ok(rx)
}

fn link_line(store: &Store, link: &Link) -> Value {
    let mut line = json!({
        "code": link.code.as_str(),
        "url": link.url,
        "created_at": rfc3339(link.created_ms),
        "expires_at": (link.expires_ms != 0).then(|| rfc3339(link.expires_ms)),
        "max_clicks": (link.max_clicks != 0).then_some(link.max_clicks),
        "redirect": link.redirect,
        "clicks": link.clicks,
        "disabled": link.disabled,
    });
    let hours = store.rollups().of(&link.code);
    if !hours.is_empty() {
        line["stats"] = hours.iter().map(|(hour, h)| hour_line(*hour, h)).collect();
    }
    line
}

/// One rollup hour as an export line holds it.
fn hour_line(hour: u32, h: &Hour) -> Value {
    let mut v = json!({"hour": rfc3339(hour as i64 * MS_PER_HOUR), "clicks": h.clicks, "bots": h.bots});
    for (d, name) in DIM_NAMES.iter().enumerate() {
        v[*name] = h.values[d].iter().map(|(k, n)| (k.to_string(), Value::from(*n))).collect::<Map<String, Value>>().into();
    }
    v
}

fn open(dir: &Path, read_only: bool) -> Result<Store, String> {
    let mut opts = StoreOptions::new(dir);
    opts.read_only = read_only;
    opts.durability = Durability::Never;
    Store::open(opts).map_err(|e| e.to_string())
}

fn export(dir: &Path) -> Result<(), String> {
    let store = open(dir, true)?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    let mut cursor = None;
    loop {
        let (links, next) = store.page(cursor, 10_000);
        for link in &links {
            serde_json::to_writer(&mut out, &link_line(&store, link)).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.flush().map_err(|e| e.to_string())
}

/// Verifies every record of every segment and every snapshot.
fn check(dir: &Path) -> Result<(), String> {
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment_number))
        .collect();
    numbers.sort_unstable();
    let mut problems = 0;
    let (mut puts, mut deletes, mut clicks, mut idem, mut rollups, mut bytes) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (i, &n) in numbers.iter().enumerate() {
        let seg = match Segment::open(dir, n) {
            Ok(s) => s,
            Err(e) => {
                println!("segment {n:08}.log: unreadable: {e}");
                problems += 1;
                continue;
            }
        };
        let newest = i + 1 == numbers.len();
        let mut end = SEGMENT_HEADER_LEN;
        for found in Scan::new(seg.bytes(), SEGMENT_HEADER_LEN, seg.len()) {
            match found {
                Found::Record { rec, at, len } => {
                    match rec.body {
                        Body::Put(_) => puts += 1,
                        Body::Delete { .. } => deletes += 1,
                        Body::Clicks(_) => clicks += 1,
                        Body::Idempotency { .. } => idem += 1,
                        Body::Raft { .. } | Body::Synced { .. } => {}
                        Body::Rollups(_) => rollups += 1,
                    }
                    end = at + record::padded(len);
                }
                Found::Damage { at, reason, .. } => {
                    let (unsynced, past) = unsynced_damage(&seg, at);
                    if newest && unsynced {
                        println!(
                            "segment {n:08}.log: torn tail at byte {at}: {reason}; no completed sync covered it (cut off at the next start, with the {} intact records after it)",
                            past.records
                        );
                        break;
                    }
                    println!("segment {n:08}.log: damage at byte {at}: {reason}");
                    problems += 1;
                }
            }
        }
        bytes += end as u64;
    }
    let snaps = snapshot::list(dir).map_err(|e| e.to_string())?;
    for path in &snaps {
        match Snapshot::read(path) {
            Ok(s) => println!("snapshot {}: ok (replay from segment {} byte {})", path.display(), s.meta.replay_seg, s.meta.replay_off),
            Err(e) => {
                println!("snapshot {}: {e}", path.display());
                problems += 1;
            }
        }
    }
    println!(
        "segments: {}, data bytes: {bytes}, records: {puts} put, {deletes} delete, {clicks} clicks, {idem} idempotency, {rollups} rollups; snapshots: {}",
        numbers.len(),
        snaps.len()
    );
    let store = open(dir, true)?;
    let stats = store.stats();
    println!("keys in index: {} (live links and tombstones)", stats.keys);
    if problems > 0 {
        return Err(format!("{problems} problem(s) found"));
    }
    println!("ok");
    Ok(())
}
