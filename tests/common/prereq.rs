//! What a test does when something it needs from outside the project is
//! missing (root, network namespaces, a tmpfs, a tool, a package registry,
//! the fuzz corpora). A test that returns early and passes would read as a
//! test that ran, so: under `CI=true` the test fails with a message naming
//! the prerequisite and how to get it; anywhere else it says `SKIPPED` on
//! stderr and the caller returns. `.ci/run` installs every prerequisite on
//! a fresh Debian machine (docs/testing.md lists them).

use std::io::Write;

/// Whether this run is CI's, where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The test this thread runs, as libtest names it.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("this test").to_string()
}

/// `what` is missing and `install` says how to get it: under CI this
/// panics; elsewhere it prints `SKIPPED <test>: ...` to stderr and returns,
/// and the caller returns too (`return skip_or_fail(...)`), or goes on
/// without the part that needs it.
#[track_caller]
pub fn skip_or_fail(what: &str, install: &str) {
    if in_ci() {
        panic!("prerequisite missing: {what} (install with: {install}); under CI=true a test that cannot run fails");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` and
    // shows it only for a failing test, and a skip passes.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIPPED {}: prerequisite missing: {what} (install with: {install})", test_name());
}
