//! A fixed-rate (open-loop) HTTP/1.1 load generator for latency at a given
//! rate, light enough that the client is not what is measured.
//!
//! CONNS keep-alive connections each send `GET PATH` on a fixed schedule
//! (their share of RATE). A request's latency counts from when it was due,
//! not from when it was sent, so a server that stalls cannot hide the
//! requests it delayed (coordinated omission, as wrk2 corrects it). One
//! thread polls non-blocking sockets in a loop instead of sleeping on a
//! timer: timers here tick in milliseconds, which would show up as latency.
//! Loopback only; bounded by SECS.
//!
//! usage: cargo run --release --example fixed_rate -- 127.0.0.1:PORT /PATH RATE SECS [CONNS]
//! PATH `@FILE` takes paths (or URLs) from FILE, one per line, in turn.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Latency histogram: 1 µs buckets up to 100 ms, the last one open-ended.
const BUCKETS: usize = 100_000;

struct Conn {
    stream: TcpStream,
    due: Instant,
    in_flight: bool,
    buf: Vec<u8>,
}

/// Bytes of one complete response at the start of `buf`, if it is all there.
fn response_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or(0usize);
    (buf.len() >= head_end + body).then_some(head_end + body)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: fixed_rate ADDR PATH RATE SECS [CONNS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is HOST:PORT");
    assert!(addr.ip().is_loopback(), "load tests stay on loopback");
    let path = &args[2];
    let rate: f64 = args[3].parse().expect("RATE is requests per second");
    let secs: f64 = args[4].parse().expect("SECS is a number");
    let conns: usize = args.get(5).map_or(64, |c| c.parse().expect("CONNS is a number"));
    let paths: Vec<String> = match path.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .expect("reading the paths file")
            .lines()
            .map(|l| match l.find("://") {
                // A URL: keep its path.
                Some(i) => l[i + 3..].find('/').map_or("/".to_string(), |j| l[i + 3 + j..].to_string()),
                None => l.to_string(),
            })
            .collect(),
        None => vec![path.clone()],
    };
    let requests: Vec<Vec<u8>> = paths.iter().map(|p| format!("GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()).collect();
    let mut next_request = 0usize;
    let interval = Duration::from_secs_f64(conns as f64 / rate);

    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let mut pool: Vec<Conn> = (0..conns)
        .map(|i| {
            let stream = TcpStream::connect(addr).expect("connecting");
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            Conn { stream, due: start + interval.mul_f64(i as f64 / conns as f64), in_flight: false, buf: Vec::with_capacity(4096) }
        })
        .collect();

    let mut hist = vec![0u64; BUCKETS];
    let (mut done, mut errors, mut late_sends) = (0u64, 0u64, 0u64);
    let mut chunk = [0u8; 16384];
    loop {
        let now = Instant::now();
        let mut active = false;
        for c in pool.iter_mut() {
            if !c.in_flight {
                if c.due >= end {
                    continue;
                }
                active = true;
                if c.due > now {
                    continue;
                }
                if now - c.due > Duration::from_millis(1) {
                    late_sends += 1;
                }
                let request = &requests[next_request % requests.len()];
                next_request += 1;
                // A short write of a few dozen bytes on an idle socket does not happen.
                match c.stream.write(request) {
                    Ok(n) if n == request.len() => c.in_flight = true,
                    _ => {
                        errors += 1;
                        c.due += interval;
                    }
                }
                continue;
            }
            active = true;
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    errors += 1;
                    c.in_flight = false;
                    c.due = end;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    if let Some(len) = response_len(&c.buf) {
                        let took = Instant::now().saturating_duration_since(c.due);
                        hist[(took.as_micros() as usize).min(BUCKETS - 1)] += 1;
                        done += 1;
                        c.buf.drain(..len);
                        c.in_flight = false;
                        c.due += interval;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    errors += 1;
                    c.in_flight = false;
                    c.due = end;
                }
            }
        }
        if !active {
            break;
        }
    }
    let elapsed = secs;
    let pct = |p: f64| {
        let want = (done as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (us, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return us as f64 / 1000.0;
            }
        }
        f64::NAN
    };
    println!(
        "rate {:.0}/s achieved {:.0}/s  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  errors {errors}  sent >1 ms late {late_sends}",
        rate,
        done as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
}
