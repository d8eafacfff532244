//! The commands behind `shortd`: serve, export, import, check.

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::analytics::rollup::{hour_of, Hour, DIM_NAMES, MS_PER_HOUR};
use crate::config::{Cli, Command, Config, Durability, LinkLimits, LogFormat};
use crate::journal::record::{self, Body};
use crate::journal::scan::{Found, Scan};
use crate::journal::segment::{segment_number, Segment, SEGMENT_HEADER_LEN};
use crate::journal::snapshot::{self, Snapshot};
use crate::lists::Blocklist;
use crate::store::{Link, Store, StoreOptions};
use crate::{http::api::rfc3339, input, Server};

/// Creates in flight at once during an import, for group commit.
const IMPORT_WINDOW: usize = 8192;

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
            init_logging(LogFormat::Text, "warn");
            import(&data.data_dir, &file, &links)
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
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let server = Server::start(cfg).map_err(|e| e.to_string())?;
    let app = server.app().clone();
    std::thread::Builder::new().name("shortd-signals".into()).spawn(move || reload_on_hangup(&app)).map_err(|e| e.to_string())?;
    wait_for_signal();
    std::thread::spawn(|| {
        wait_for_signal();
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

/// SIGHUP re-reads the key file, the blocklist and the GeoIP database; once a minute, rate-limit
/// state of quiet clients is dropped.
fn reload_on_hangup(app: &crate::http::App) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        let mut prune = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    app.access.reload();
                    app.analytics.geo.reload();
                }
                _ = prune.tick() => app.access.prune(),
            }
        }
    });
}

fn wait_for_signal() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
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

/// The `stats` of an export line, back into rollup hours.
fn parse_hours(v: &Value) -> Result<Vec<(u32, Hour)>, String> {
    let bad = |what: &str| format!("stats: {what}");
    let list = v.as_array().ok_or_else(|| bad("must be a list of hours"))?;
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let at = e["hour"].as_str().ok_or_else(|| bad("each hour needs an RFC 3339 \"hour\""))?;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).map_err(|_| bad("bad \"hour\""))?;
        let count = |k: &str| e[k].as_u64().map(|n| n.min(u32::MAX as u64) as u32).unwrap_or(0);
        let mut h = Hour { clicks: count("clicks"), bots: count("bots"), ..Hour::default() };
        for (d, name) in DIM_NAMES.iter().enumerate() {
            for (k, n) in e[*name].as_object().into_iter().flatten() {
                h.values[d].push((k.as_str().into(), n.as_u64().unwrap_or(0).min(u32::MAX as u64) as u32));
            }
        }
        out.push((hour_of((at.unix_timestamp_nanos() / 1_000_000) as i64), h));
    }
    Ok(out)
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

fn import(dir: &Path, file: &Path, limits: &LinkLimits) -> Result<(), String> {
    let rules = input::Rules { max_url_bytes: limits.max_url_bytes, own_host: None, blocklist: &Blocklist::default() };
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?))
    };
    let store = Arc::new(open(dir, false)?);
    let started = std::time::Instant::now();
    let (mut created, mut failed) = (0u64, 0u64);
    let mut inflight = Vec::with_capacity(IMPORT_WINDOW);
    // An exported link's clicks and hourly stats come along with it.
    type Carried = (u64, Vec<(u32, Hour)>);
    let settle = |inflight: &mut Vec<(usize, tokio::sync::oneshot::Receiver<_>, Carried)>, created: &mut u64, failed: &mut u64| {
        for (line, rx, (clicks, hours)) in inflight.drain(..) {
            match rx.blocking_recv() {
                Ok(Ok(c)) => {
                    *created += 1;
                    let c: crate::store::Created = c;
                    if clicks > 0 {
                        store.add_clicks(&c.link.code, clicks);
                    }
                    let keys: Vec<_> = hours.iter().map(|(hour, _)| (c.link.code.clone(), *hour)).collect();
                    for (hour, h) in hours {
                        store.rollups().replace(c.link.code.clone(), hour, h);
                    }
                    store.rollups().mark_dirty(keys);
                }
                Ok(Err(e)) => {
                    *failed += 1;
                    eprintln!("line {line}: {e}");
                }
                Err(_) => *failed += 1,
            }
        }
    };
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("reading {}: {e}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Map<String, Value>>(&line).map_err(|e| e.to_string()).and_then(|o| {
            let new = input::new_link(&o, &rules, crate::clock::now_ms(), input::Source::Import).map_err(|e| e.to_string())?;
            let hours = o.get("stats").map(parse_hours).transpose()?.unwrap_or_default();
            Ok((new, (o.get("clicks").and_then(Value::as_u64).unwrap_or(0), hours)))
        });
        match parsed {
            Ok((new, carried)) => inflight.push((i + 1, store.create_queued(new).map_err(|e| e.to_string())?, carried)),
            Err(e) => {
                failed += 1;
                eprintln!("line {}: {e}", i + 1);
            }
        }
        if inflight.len() >= IMPORT_WINDOW {
            settle(&mut inflight, &mut created, &mut failed);
        }
    }
    settle(&mut inflight, &mut created, &mut failed);
    store.persist_rollups(u32::MAX);
    store.close();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("imported {created} links in {secs:.1}s ({:.0}/s); {failed} lines refused", created as f64 / secs.max(1e-9));
    if failed > 0 && created == 0 {
        return Err("nothing was imported".into());
    }
    Ok(())
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
                        Body::Rollups(_) => rollups += 1,
                    }
                    end = at + record::padded(len);
                }
                Found::Damage { at, resume: None, reason } if newest => {
                    println!("segment {n:08}.log: torn tail at byte {at}: {reason} (cut off at the next start)");
                }
                Found::Damage { at, reason, .. } => {
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
