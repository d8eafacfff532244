//! Measures what hourly rollups cost in memory and on disk, for
//! docs/benchmarks.md: fills the rollup table with LINKS x HOURS closed
//! hours of a typical shape (12 values: 2 referrers, 2 countries, 2
//! devices, 3 browsers, 3 OS) and prints resident memory per hour and the
//! bytes one such hour takes in a rollups record and in a snapshot.
//! usage: cargo run --release --example rollup_size -- [LINKS] [HOURS]

use shortd::analytics::rollup::{hour_of, Hour, Rollups, BROWSER, COUNTRY, DEVICE, OS, REFERRER};
use shortd::journal::record;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>().expect("a number"));
    let (links, hours) = (args.next().unwrap_or(10_000), args.next().unwrap_or(100));
    let mut h = Hour { clicks: 41, bots: 3, ..Hour::default() };
    for (dim, values) in [
        (REFERRER, &["news.example.com", "direct"][..]),
        (COUNTRY, &["DE", "JP"][..]),
        (DEVICE, &["desktop", "mobile"][..]),
        (BROWSER, &["Chrome", "Mobile Safari", "Firefox"][..]),
        (OS, &["Windows", "iOS", "Android"][..]),
    ] {
        for (i, v) in values.iter().enumerate() {
            h.add(dim, v, 10 - i as u32, 20);
        }
    }
    let now = hour_of(shortd::clock::now_ms());
    let before = rss_bytes();
    let table = Rollups::new(20);
    for l in 0..links {
        let code = format!("{:07}", l);
        for k in 0..hours {
            table.replace(code.as_str().into(), now - 1 - k, h.clone());
        }
    }
    let after = rss_bytes();
    let n = links as u64 * hours as u64;
    let mut one = Vec::new();
    record::encode_rollup(&h.to_record("Ab3dE7x", now), &mut one);
    println!("{links} links x {hours} closed hours = {n} rollups");
    println!(
        "resident memory: {:.1} MiB, {:.0} bytes per link-hour",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / n as f64
    );
    println!("one rollup (7-character code, 12 values): {} bytes in a record, {} in a snapshot entry", one.len(), one.len() + 5);
}
