//! Writes a small country database (MaxMind DB format) for load tests and
//! demos: `cargo run --release --example country_mmdb -- OUT.mmdb`. It maps
//! the documentation ranges 192.0.2.0/24 and 2001:db8::/32 to DE and
//! 198.51.100.0/24 and 203.0.113.0/24 to JP (the same writer the tests use).

#[path = "../tests/common/mmdb.rs"]
mod mmdb;

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: country_mmdb OUT.mmdb");
        std::process::exit(2);
    };
    let db = mmdb::country_db(&[("192.0.2.0/24", "DE"), ("2001:db8::/32", "DE"), ("198.51.100.0/24", "JP"), ("203.0.113.0/24", "JP")]);
    if let Err(e) = std::fs::write(&out, db) {
        eprintln!("{out}: {e}");
        std::process::exit(1);
    }
}
