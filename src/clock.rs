//! Wall-clock time in unix milliseconds, in one place so tests and the
//! expiry logic agree on what "now" is.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
