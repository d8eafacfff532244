//! Outside tools the tests drive (kubectl, buildah, Chromium, Python and
//! npm packages): commands with a time limit, and installs made once under
//! the target folder (`CARGO_TARGET_TMPDIR`) on first use, from PyPI, npm
//! or apt. An install that fails because the registry cannot be reached
//! fails the test under `CI=true` and elsewhere says SKIPPED and gives
//! `None`, for the caller to return (`prereq::skip_or_fail`); any other
//! failure panics.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::prereq::skip_or_fail;

/// How long one package install may take.
const INSTALL_LIMIT: Duration = Duration::from_secs(150);

/// What a package tool prints when the registry cannot be reached.
const UNREACHABLE: [&str; 8] = [
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "timed out",
    "ConnectTimeoutError",
    "ENOTFOUND",
    "EAI_AGAIN",
];

/// Runs `cmd` to the end or until `limit` passes (then kills it and panics).
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    match wait_output(&mut child, limit) {
        Some(out) => out,
        None => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Waits for `child` with piped output, at most `limit`; `None` (after
/// killing it) when it took longer.
pub fn wait_output(child: &mut Child, limit: Duration) -> Option<Output> {
    fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    }
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    Some(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` and panics with its output unless it exits 0; returns stdout.
pub fn check(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd, limit);
    assert!(out.status.success(), "{what} failed ({}):\n{}\n{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Where `tool` is on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

pub fn on_path(tool: &str) -> bool {
    which(tool).is_some()
}

/// Fails the test, outside CI too, when `tool` is not on PATH: the
/// project's machines have it (`.ci/run` installs it, docs/testing.md).
pub fn require(tool: &str) {
    assert!(on_path(tool), "prerequisite missing: {tool} is not on PATH (docs/testing.md says which package has it; .ci/run installs it)");
}

pub fn is_root() -> bool {
    check(Command::new("id").arg("-u"), Duration::from_secs(10)).trim() == "0"
}

/// Runs an install command; `None` when it failed for want of a registry
/// (or took too long), a panic when it failed otherwise.
fn install(mut cmd: Command, what: &str) -> Option<()> {
    let started = Instant::now();
    let desc = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting an installer");
    let Some(out) = wait_output(&mut child, INSTALL_LIMIT) else {
        skip_or_fail(&format!("{what}, not installed within {INSTALL_LIMIT:?} (package registry unreachable?)"), &desc);
        return None;
    };
    let log = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        if UNREACHABLE.iter().any(|s| log.contains(s)) {
            skip_or_fail(&format!("{what}, not installed because the package registry is unreachable:\n{log}"), &desc);
            return None;
        }
        panic!("{desc} failed ({}):\n{log}", out.status);
    }
    println!("installed {what} in {:.1} s", started.elapsed().as_secs_f64());
    Some(())
}

/// A venv `target/tmp/{name}` with `packages` from PyPI, made once; `probe`
/// (a path inside the venv) tells whether it is complete.
pub fn python_venv(name: &str, packages: &[&str], probe: &str) -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if venv.join(probe).exists() {
        return Some(venv);
    }
    require("python3");
    check(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv), Duration::from_secs(60));
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--disable-pip-version-check", "--no-input", "--timeout", "15", "--retries", "2"]);
    pip.args(packages);
    install(pip, &packages.join(", "))?;
    assert!(venv.join(probe).exists(), "pip succeeded but {} is missing", venv.join(probe).display());
    Some(venv)
}

/// An npm package under `target/tmp/{name}/node_modules`, installed once;
/// its folder.
pub fn npm_package(name: &str, package: &str, version: &str, probe: &str) -> Option<PathBuf> {
    let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let dir = prefix.join("node_modules").join(package);
    if dir.join(probe).exists() {
        return Some(dir);
    }
    require("npm");
    let mut npm = Command::new("npm");
    npm.args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"]).arg(&prefix).arg(format!("{package}@{version}"));
    install(npm, &format!("{package}@{version} (npm)"))?;
    assert!(dir.join(probe).exists(), "npm succeeded but {} is missing", dir.join(probe).display());
    Some(dir)
}

/// Installs Debian `packages` with apt-get unless every `binaries` is on
/// PATH; `None` (after `skip_or_fail`) when they are still missing (not
/// root, no apt-get, no mirror).
pub fn apt_binaries(binaries: &[&str], packages: &[&str]) -> Option<Vec<PathBuf>> {
    let found = || binaries.iter().map(|b| which(b)).collect::<Option<Vec<_>>>();
    if let Some(paths) = found() {
        return Some(paths);
    }
    if !on_path("apt-get") || !is_root() {
        skip_or_fail(
            &format!("{binaries:?} (no apt-get as root here to install them)"),
            &format!("apt-get install {}", packages.join(" ")),
        );
        return None;
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive");
    install(update, "the apt package lists")?;
    let mut apt = Command::new("apt-get");
    apt.args(["install", "-y", "--no-install-recommends"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive");
    install(apt, &packages.join(", "))?;
    let paths = found();
    if paths.is_none() {
        skip_or_fail(
            &format!("{binaries:?}, still not on PATH after installing {packages:?}"),
            &format!("apt-get install {}", packages.join(" ")),
        );
    }
    paths
}
