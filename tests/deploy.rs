//! The deployment files, checked with the real tools (docs/deployment.md):
//!
//! - `deploy/kubernetes`: rendered with `kubectl kustomize`, validated with
//!   `kubernetes-validate --strict` (installed from PyPI into a venv under
//!   the target folder on first use), and read back for what an operator
//!   relies on (probes, disks, security context, keys from a Secret, the
//!   Services and the disruption budget);
//! - `deploy/systemd/shortd.service`: rated by
//!   `systemd-analyze security --offline=yes` at 3.0 or less;
//! - `deploy/build-image.sh`: builds the OCI image with buildah from the
//!   binary cargo built for this test (the script installs buildah with
//!   apt-get when it is missing and runs as root); the image config and
//!   size are checked, then the image is mounted and its own shortd runs
//!   under `chroot` on a loopback port until `/healthz` answers.
//!
//! Every external command runs with a time limit, so a hung tool fails the
//! test instead of stalling CI.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::prereq::skip_or_fail;
use common::tools::{check, is_root, on_path, python_venv, require, run, text, which};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Largest image, in bytes of its (uncompressed) layers.
const MAX_IMAGE_BYTES: u64 = 25_000_000;
/// Highest `systemd-analyze security` exposure accepted.
const MAX_EXPOSURE: f64 = 3.0;

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

/// A venv with kubernetes-validate (and PyYAML, its dependency), made once
/// under the target folder; `None` (after `skip_or_fail`: a failure under
/// CI) when PyPI cannot be reached.
fn validator_venv() -> Option<PathBuf> {
    python_venv("deploy-venv", &["kubernetes-validate"], "bin/kubernetes-validate")
}

/// Every document of a multi-document YAML file, as JSON (PyYAML does the
/// parsing: the venv's, or the system python's when there is no venv).
fn yaml_docs(python: &Path, file: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let json = check(Command::new(python).args(["-c", script]).arg(file), Duration::from_secs(30));
    serde_json::from_str::<Vec<Value>>(&json).expect("PyYAML printed JSON")
}

fn kustomize(dir: &str) -> String {
    require("kubectl");
    check(Command::new("kubectl").arg("kustomize").arg(root().join(dir)), Duration::from_secs(60))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Whether `selector` (a `matchLabels`-style map) picks a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("a label selector");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name").to_string(), e.clone()))
        .collect()
}

/// Seconds of a humantime duration such as `10s`, `1m` or `500ms`.
fn seconds(s: &str) -> f64 {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let n: f64 = s[..split].parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    n * match &s[split..] {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        unit => panic!("unit {unit:?} in {s:?}"),
    }
}

#[test]
fn kubernetes_base_renders_validates_and_holds_what_operators_need() {
    let rendered = kustomize("deploy/kubernetes");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("shortd.yaml");
    std::fs::write(&file, &rendered).expect("writing the rendered manifests");

    let venv = validator_venv();
    let python = match &venv {
        Some(venv) => {
            let out = check(Command::new(venv.join("bin/kubernetes-validate")).arg("--strict").arg(&file), Duration::from_secs(120));
            println!("kubernetes-validate --strict:\n{out}");
            venv.join("bin/python")
        }
        // Outside CI, the rest of the checks go on with the system's PyYAML.
        None => PathBuf::from("python3"),
    };
    let docs = yaml_docs(&python, &file);

    // The StatefulSet and its pod.
    let sets = of_kind(&docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet in:\n{rendered}");
    let sts = sets[0];
    let name = sts["metadata"]["name"].as_str().expect("StatefulSet name");
    let spec = &sts["spec"];
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 3, "replicas {replicas}");
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels), "the selector picks the pods");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    let c = containers.iter().find(|c| c["name"] == "shortd").expect("a shortd container");

    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|t| t["metadata"]["name"].as_str().expect("claim name"))
        .collect();
    assert!(!claims.is_empty(), "volume claims");
    let env = env_of(c);
    let data_dir = env.get("SHORTD_DATA_DIR").and_then(|e| e["value"].as_str()).unwrap_or("/data");
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    assert!(
        mounts.iter().any(|m| m["mountPath"] == data_dir && claims.contains(&m["name"].as_str().unwrap_or(""))),
        "the data directory {data_dir} is a claimed volume: {mounts:?}"
    );

    let probe_path = |probe: &str| c[probe]["httpGet"]["path"].as_str().map(str::to_string);
    assert_eq!(probe_path("readinessProbe").as_deref(), Some("/readyz"));
    assert_eq!(probe_path("livenessProbe").as_deref(), Some("/healthz"));
    assert!(probe_path("startupProbe").is_some(), "a startup probe");
    let ports: Vec<&Value> = c["ports"].as_array().expect("ports").iter().collect();
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let port = &c[probe]["httpGet"]["port"];
        assert!(ports.iter().any(|p| &p["name"] == port || &p["containerPort"] == port), "{probe} port {port}");
    }
    for proto in ["TCP", "UDP"] {
        assert!(ports.iter().any(|p| p["containerPort"] == 8080 && p["protocol"] == proto), "port 8080/{proto} (HTTP and gossip)");
    }

    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    assert!(psc["runAsNonRoot"] == true || csc["runAsNonRoot"] == true, "runAsNonRoot");
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert!(csc["capabilities"]["drop"].as_array().expect("dropped capabilities").iter().any(|d| d == "ALL"));

    for key in ["SHORTD_API_KEY", "SHORTD_CLUSTER_KEY"] {
        let secret = &env.get(key).unwrap_or_else(|| panic!("{key} is set"))["valueFrom"]["secretKeyRef"];
        assert!(secret["name"].is_string() && secret["key"].is_string(), "{key} comes from a Secret: {secret}");
    }
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(c["resources"][kind][what].is_string(), "resources.{kind}.{what}");
        }
    }
    assert!(
        pod["topologySpreadConstraints"].as_array().is_some_and(|t| !t.is_empty()) || pod["affinity"]["podAntiAffinity"].is_object(),
        "the pods are spread across nodes"
    );
    let drain = seconds(env.get("SHORTD_DRAIN_DELAY").and_then(|e| e["value"].as_str()).unwrap_or("0s"));
    let grace = pod["terminationGracePeriodSeconds"].as_f64().expect("terminationGracePeriodSeconds");
    assert!(grace > drain, "grace period {grace} s is longer than the drain delay {drain} s");
    assert_eq!(spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"], "true");

    // Cluster mode: node ids are the pod names, seeds the stable DNS names.
    let headless = sts["spec"]["serviceName"].as_str().expect("serviceName");
    assert!(env.get("SHORTD_NODE_ID").is_some_and(|e| e["value"] == "$(POD_NAME)"), "node id from the pod name");
    let seeds = env.get("SHORTD_SEED").and_then(|e| e["value"].as_str()).expect("SHORTD_SEED").to_string();
    for i in 0..replicas {
        let host = format!("{name}-{i}.{headless}.");
        assert!(seeds.split(',').any(|s| s.starts_with(&host) && s.ends_with(":8080")), "seed {host}… in {seeds}");
    }
    // Every SHORTD_ variable set is a real setting.
    let settings = std::fs::read_to_string(root().join("docs/configuration.md")).expect("docs/configuration.md");
    for key in env.keys().filter(|k| k.starts_with("SHORTD_")) {
        assert!(settings.contains(&format!("`{key}`")), "{key} is not a setting in docs/configuration.md");
    }

    // The Services and the disruption budget.
    let services = of_kind(&docs, "Service");
    let peers = services.iter().find(|s| s["metadata"]["name"] == headless).unwrap_or_else(|| panic!("the headless Service {headless}"));
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    assert!(selects(&peers["spec"]["selector"], pod_labels));
    let client: Vec<_> =
        services.iter().filter(|s| s["spec"]["clusterIP"] != "None" && selects(&s["spec"]["selector"], pod_labels)).collect();
    assert_eq!(client.len(), 1, "one client Service");
    let pdbs = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1, "one PodDisruptionBudget");
    assert_eq!(pdbs[0]["spec"]["maxUnavailable"], 1);
    assert!(selects(&pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels));

    // The optional overlay adds a ServiceMonitor to the same base.
    let overlay = kustomize("deploy/overlays/servicemonitor");
    assert!(overlay.contains("kind: ServiceMonitor") && overlay.contains("kind: StatefulSet"), "{overlay}");
}

// ------------------------------------------------------------------- systemd

#[test]
fn systemd_unit_is_hardened() {
    require("systemd-analyze");
    let unit = root().join("deploy/systemd/shortd.service");
    let out = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&unit), Duration::from_secs(60));
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "systemd-analyze security failed ({}):\n{report}", out.status);
    let line = report.lines().find(|l| l.contains("Overall exposure level")).expect("an overall exposure line");
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a score in {line:?}"));
    println!("systemd-analyze security: {line}");
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}:\n{report}");

    let text = std::fs::read_to_string(&unit).expect("the unit");
    let directives: Vec<(&str, &str)> =
        text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with(';')).filter_map(|l| l.split_once('=')).collect();
    let value = |key: &str| directives.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(value("Restart"), Some("on-failure"));
    assert!(value("ExecReload").is_some_and(|v| v.contains("-HUP") || v.contains("SIGHUP")), "ExecReload sends SIGHUP");
    assert!(value("LimitNOFILE").is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 4096)), "LimitNOFILE");
    assert!(value("StateDirectory").is_some_and(|v| !v.is_empty()), "StateDirectory");
    assert_eq!(value("ProtectSystem"), Some("strict"));
    assert_eq!(value("NoNewPrivileges"), Some("yes"));
    assert!(value("DynamicUser") == Some("yes") || value("User").is_some(), "DynamicUser or a dedicated user");
    assert!(value("ExecStart").is_some_and(|v| v.contains("shortd serve")), "ExecStart runs shortd serve");

    // The example environment file names real settings only.
    let settings = std::fs::read_to_string(root().join("docs/configuration.md")).expect("docs/configuration.md");
    let example = std::fs::read_to_string(root().join("deploy/systemd/shortd.env.example")).expect("the example env file");
    for line in example.lines().map(|l| l.trim_start_matches('#')) {
        if let Some((key, _)) = line.split_once('=').filter(|(k, _)| k.starts_with("SHORTD_")) {
            assert!(settings.contains(&format!("`{key}`")), "{key} is not a setting in docs/configuration.md");
        }
    }
}

// --------------------------------------------------------------------- image

/// What the image test made, removed again however the test ends.
struct Buildah {
    image: String,
    container: Option<String>,
    mounted: bool,
    server: Option<Child>,
}

impl Drop for Buildah {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let quiet = |args: &[&str]| {
            let _ = run(Command::new("buildah").args(args), Duration::from_secs(60));
        };
        if let Some(ctr) = self.container.take() {
            if self.mounted {
                quiet(&["umount", &ctr]);
            }
            quiet(&["rm", &ctr]);
        }
        quiet(&["rmi", "--force", &self.image]);
    }
}

#[test]
fn image_is_small_runs_as_non_root_and_serves_healthz_under_chroot() {
    let started = Instant::now();
    // chroot needs root; so does installing buildah.
    if !is_root() {
        return skip_or_fail("root (for chroot, and for apt-get when buildah is missing)", "sudo -E cargo test --release --test deploy");
    }
    if !on_path("buildah") && !on_path("apt-get") {
        return skip_or_fail("buildah (and no apt-get to install it)", "apt-get install buildah");
    }

    let image = format!("localhost/shortd-test:{}", std::process::id());
    let mut guard = Buildah { image: image.clone(), container: None, mounted: false, server: None };
    let out = check(
        Command::new("bash").arg(root().join("deploy/build-image.sh")).env("SHORTD_BIN", env!("CARGO_BIN_EXE_shortd")).env("IMAGE", &image),
        Duration::from_secs(170),
    );
    assert_eq!(out.lines().last(), Some(image.as_str()), "the script prints the image name last:\n{out}");
    println!("built {image} in {:.1} s (buildah install included if it was missing)", started.elapsed().as_secs_f64());

    let inspect: Value =
        serde_json::from_str(&check(Command::new("buildah").args(["inspect", "--type", "image", &image]), Duration::from_secs(30)))
            .expect("buildah inspect prints JSON");
    let config = &inspect["OCIv1"]["config"];
    let user = config["User"].as_str().expect("a user");
    assert!(user == "65532" || user.starts_with("65532:"), "user {user}");
    let entrypoint: Vec<String> = serde_json::from_value(config["Entrypoint"].clone()).expect("an entrypoint");
    assert!(entrypoint.len() >= 2 && entrypoint[0].ends_with("/shortd") && entrypoint[1] == "serve", "{entrypoint:?}");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object(), "port 8080/tcp: {config}");
    assert!(config["Volumes"]["/data"].is_object(), "volume /data: {config}");
    let env: Vec<String> = serde_json::from_value(config["Env"].clone()).expect("an environment");
    assert!(env.iter().any(|e| e == "SHORTD_LISTEN=0.0.0.0:8080"), "listens on 0.0.0.0:8080 by default: {env:?}");
    let labels = &config["Labels"];
    for label in ["source", "version", "licenses"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(labels[&key].as_str().is_some_and(|v| !v.is_empty()), "label {key}: {labels}");
    }
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));

    let manifest: Value = serde_json::from_str(inspect["Manifest"].as_str().expect("the manifest")).expect("the manifest is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    let bytes: u64 = layers.iter().map(|l| l["size"].as_u64().expect("layer size")).sum();
    println!("image size: {bytes} bytes in {} layer(s) (limit {MAX_IMAGE_BYTES})", layers.len());
    assert!(bytes <= MAX_IMAGE_BYTES, "the image is {bytes} bytes, over {MAX_IMAGE_BYTES}");

    // The image's files, run as the image would run them.
    let ctr = check(Command::new("buildah").args(["from", "--pull=never", &image]), Duration::from_secs(60));
    let ctr = ctr.trim().to_string();
    guard.container = Some(ctr.clone());
    let mnt = check(Command::new("buildah").args(["mount", &ctr]), Duration::from_secs(30));
    guard.mounted = true;
    let mnt = PathBuf::from(mnt.trim());
    let passwd = std::fs::read_to_string(mnt.join("etc/passwd")).expect("/etc/passwd in the image");
    assert!(passwd.lines().any(|l| l.split(':').nth(2) == Some("65532")), "uid 65532 in /etc/passwd:\n{passwd}");

    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port();
    // The child's environment is the image's alone, without PATH: name chroot by its path.
    let mut cmd = Command::new(which("chroot").expect("chroot (coreutils) on PATH"));
    cmd.arg(format!("--userspec={}", if user.contains(':') { user.to_string() } else { format!("{user}:{user}") }));
    cmd.arg(&mnt).args(&entrypoint).env_clear();
    for kv in &env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Loopback only here, whatever the image's default.
    cmd.env("SHORTD_LISTEN", format!("127.0.0.1:{port}")).env("SHORTD_WORKERS", "1");
    let log = tempfile::NamedTempFile::new().expect("a log file");
    cmd.stdin(Stdio::null()).stdout(log.reopen().expect("log")).stderr(log.reopen().expect("log"));
    guard.server = Some(cmd.spawn().expect("starting the image's shortd under chroot"));

    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match agent.get(&format!("{base}/healthz")).call() {
            Ok(resp) => break resp.status(),
            Err(ureq::Error::Status(code, _)) => break code,
            Err(_) if Instant::now() < deadline => {}
            Err(e) => {
                let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("the image's shortd did not answer /healthz: {e}\n{log}")
            }
        }
        if let Some(exit) = guard.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("the image's shortd exited ({exit}):\n{log}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "/healthz");
    // The data directory (the volume) is writable by the image's user.
    let created = agent
        .post(&format!("{base}/api/v1/links"))
        .set("content-type", "application/json")
        .send_string(r#"{"url": "https://example.com/from-the-image"}"#)
        .expect("a create from loopback");
    assert_eq!(created.status(), 201);
    let data = mnt.join("data");
    assert!(std::fs::read_dir(&data).expect("/data in the image").next().is_some(), "shortd wrote to /data");

    // A clean stop, as the runtime's SIGTERM would ask.
    let mut child = guard.server.take().expect("the server");
    check(Command::new("kill").args(["-TERM", &child.id().to_string()]), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("waiting for shortd") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the image's shortd did not stop within 20 s of SIGTERM");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "shortd exited {exit} after SIGTERM:\n{}", std::fs::read_to_string(log.path()).unwrap_or_default());
    drop(guard);
    println!("image test done in {:.1} s", started.elapsed().as_secs_f64());
}
