//! Every setting of shortd in one place.
//!
//! Precedence: command-line flag, then `SHORTD_*` environment variable (clap
//! reads both), then the TOML file named by `--config`, then the default in
//! [`Config::default`]. Everything is validated before the server binds a
//! socket; a bad value stops the start with one line naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// When a write is acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge only after the record is on disk (group commit).
    Always,
    /// Acknowledge after the write; fsync every `fsync_interval`.
    Interval,
    /// Leave flushing to the operating system.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of a running server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory for log segments, snapshots and the code key. Default `./data`.
    pub data_dir: PathBuf,
    /// Worker threads, each with its own listener. Default: number of cores.
    pub workers: usize,
    /// Base of `short_url`. Default `http://{listen}`.
    pub public_url: url::Url,
    /// API keys; with none (here or in `api_key_file`) the API answers
    /// loopback clients only.
    pub api_keys: Vec<String>,
    /// File of API keys, one per line, re-read on SIGHUP. Default none.
    pub api_key_file: Option<PathBuf>,
    /// Creates per second per client IP; 0 for unlimited. Default 0.
    pub create_rate: u32,
    /// Creates a client may make at once before the rate applies. Default: the rate.
    pub create_burst: u32,
    /// Redirects per second per client IP; 0 for unlimited. Default 0.
    pub redirect_rate: u32,
    /// Proxies whose `X-Forwarded-For` names the client. Default none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// File of blocked target domains, one per line, re-read on SIGHUP. Default none.
    pub blocklist: Option<PathBuf>,
    /// Default `always`.
    pub durability: Durability,
    /// fsync period under `interval`. Default `10ms`.
    pub fsync_interval: Duration,
    /// Size a log segment is preallocated to before the writer rolls. Default 64 MiB.
    pub segment_bytes: u64,
    /// `Cache-Control` on redirects. Default `private, max-age=90`.
    pub cache_control: String,
    /// Longest accepted target URL. Default 8192.
    pub max_url_bytes: usize,
    /// Largest accepted request body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Time a client has to send its request head. Default `10s`.
    pub header_timeout: Duration,
    /// Keep-alive idle time before a connection is closed. Default `60s`.
    pub idle_timeout: Duration,
    /// Open connections at most, split evenly across workers. Default 10000.
    pub max_connections: usize,
    /// Cache bound in entries. Default 1,000,000.
    pub cache_entries: usize,
    /// Cache bound in bytes of URLs and keys. Default 256 MiB.
    pub cache_bytes: usize,
    /// Cache entry lifetime. Default `60s`.
    pub cache_ttl: Duration,
    /// Random extra lifetime in `[0, jitter)`. Default `15s`.
    pub cache_ttl_jitter: Duration,
    /// Write a snapshot after this many records. Default 1,000,000.
    pub snapshot_records: u64,
    /// Write a snapshot at least this often when anything changed. Default `5m`.
    pub snapshot_interval: Duration,
    /// Dead share of a sealed segment that triggers its compaction. Default 0.5.
    pub compact_ratio: f64,
    /// Keep intact records past mid-log damage instead of refusing to start.
    pub repair: bool,
    /// Background scrub pace in bytes per second; 0 turns it off. Default 16 MiB/s.
    pub scrub_rate: u64,
    /// Pause between scrub passes. Default `24h`.
    pub scrub_interval: Duration,
    /// Default `text`.
    pub log_format: LogFormat,
    /// A tracing filter. Default `info`.
    pub log_level: String,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are
    /// still served, so a load balancer stops sending first. Default 0.
    pub drain_delay: Duration,
    /// Cluster membership; `None` runs a single node.
    pub cluster: Option<ClusterConfig>,
}

/// How this node joins and works with its peers (`docs/cluster.md`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: String,
    /// Addresses of nodes already in the cluster.
    pub seeds: Vec<String>,
    /// Where peers reach this node (HTTP, and UDP gossip on the same port).
    pub advertise: SocketAddr,
    /// Nodes that hold each link. Default 2.
    pub replication_factor: usize,
    /// Points per node on the ring. Default 128.
    pub vnodes: usize,
    /// Secret every node-to-node request carries; required.
    pub cluster_key: String,
    /// A node down this long leaves the ring. Default `10m`.
    pub dead_after: Duration,
    /// Longest wait for one peer request. Default `500ms`.
    pub peer_timeout: Duration,
    /// Gossip round period. Default `200ms`.
    pub gossip_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("literal address");
        Config {
            listen,
            data_dir: PathBuf::from("./data"),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            public_url: default_public_url(listen),
            api_keys: Vec::new(),
            api_key_file: None,
            create_rate: 0,
            create_burst: 0,
            redirect_rate: 0,
            trusted_proxies: Vec::new(),
            blocklist: None,
            durability: Durability::Always,
            fsync_interval: Duration::from_millis(10),
            segment_bytes: 64 << 20,
            cache_control: "private, max-age=90".into(),
            max_url_bytes: 8192,
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            cache_entries: 1_000_000,
            cache_bytes: 256 << 20,
            cache_ttl: Duration::from_secs(60),
            cache_ttl_jitter: Duration::from_secs(15),
            snapshot_records: 1_000_000,
            snapshot_interval: Duration::from_secs(300),
            compact_ratio: 0.5,
            repair: false,
            scrub_rate: 16 << 20,
            scrub_interval: Duration::from_secs(24 * 3600),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            drain_delay: Duration::ZERO,
            cluster: None,
        }
    }
}

pub(crate) fn default_public_url(listen: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{listen}/")).expect("socket address forms a URL")
}

#[derive(Parser, Debug)]
#[command(name = "shortd", version, about = "A URL shortener: a fast key-value redirect server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Write every live link as JSON lines to standard output.
    Export(DataDirArg),
    /// Create links from a JSON lines file (one `{"url", "alias"?, ...}` per line).
    Import {
        #[command(flatten)]
        data: DataDirArg,
        /// File to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Verify every record and snapshot in a data directory and print a summary.
    Check {
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Args, Debug)]
pub struct DataDirArg {
    /// Data directory [default: ./data]
    #[arg(long, env = "SHORTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Flags of `shortd serve`; each is optional so that the TOML file can fill
/// in what the command line leaves out.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these settings (kebab-case keys)
    #[arg(long, env = "SHORTD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SHORTD_LISTEN")]
    pub listen: Option<String>,
    /// Data directory [default: ./data]
    #[arg(long, env = "SHORTD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Worker threads, one listener each [default: number of cores]
    #[arg(long, env = "SHORTD_WORKERS")]
    pub workers: Option<usize>,
    /// Base URL of short links [default: http://LISTEN/]
    #[arg(long, env = "SHORTD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// API key clients send as `Authorization: Bearer KEY`; repeatable
    #[arg(long = "api-key", env = "SHORTD_API_KEY", value_delimiter = ',')]
    #[serde(default)]
    pub api_key: Vec<String>,
    /// File of API keys, one per line; re-read on SIGHUP
    #[arg(long, env = "SHORTD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Creates per second per client IP, 0 = unlimited [default: 0]
    #[arg(long, env = "SHORTD_CREATE_RATE")]
    pub create_rate: Option<u32>,
    /// Burst of creates allowed above the rate [default: the rate]
    #[arg(long, env = "SHORTD_CREATE_BURST")]
    pub create_burst: Option<u32>,
    /// Redirects per second per client IP, 0 = unlimited [default: 0]
    #[arg(long, env = "SHORTD_REDIRECT_RATE")]
    pub redirect_rate: Option<u32>,
    /// CIDR of a proxy whose X-Forwarded-For is trusted; repeatable
    #[arg(long = "trusted-proxy", env = "SHORTD_TRUSTED_PROXY", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxy: Vec<String>,
    /// File of blocked target domains (subdomains too); re-read on SIGHUP
    #[arg(long, env = "SHORTD_BLOCKLIST")]
    pub blocklist: Option<PathBuf>,
    /// always | interval | never [default: always]
    #[arg(long, env = "SHORTD_DURABILITY")]
    pub durability: Option<Durability>,
    /// fsync period under --durability interval [default: 10ms]
    #[arg(long, env = "SHORTD_FSYNC_INTERVAL")]
    pub fsync_interval: Option<String>,
    /// Log segment size in bytes [default: 67108864]
    #[arg(long, env = "SHORTD_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Cache-Control header on redirects [default: "private, max-age=90"]
    #[arg(long, env = "SHORTD_CACHE_CONTROL")]
    pub cache_control: Option<String>,
    /// Longest target URL in bytes [default: 8192]
    #[arg(long, env = "SHORTD_MAX_URL_BYTES")]
    pub max_url_bytes: Option<usize>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "SHORTD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Time to receive a request head, e.g. 2s, 500ms [default: 10s]
    #[arg(long, env = "SHORTD_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Keep-alive idle timeout [default: 60s]
    #[arg(long, env = "SHORTD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Open connections at most [default: 10000]
    #[arg(long, env = "SHORTD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Cache bound in entries [default: 1000000]
    #[arg(long, env = "SHORTD_CACHE_ENTRIES")]
    pub cache_entries: Option<usize>,
    /// Cache bound in bytes [default: 268435456]
    #[arg(long, env = "SHORTD_CACHE_BYTES")]
    pub cache_bytes: Option<usize>,
    /// Cache entry lifetime [default: 60s]
    #[arg(long, env = "SHORTD_CACHE_TTL")]
    pub cache_ttl: Option<String>,
    /// Random extra cache lifetime, up to this [default: 15s]
    #[arg(long, env = "SHORTD_CACHE_TTL_JITTER")]
    pub cache_ttl_jitter: Option<String>,
    /// Snapshot after this many records [default: 1000000]
    #[arg(long, env = "SHORTD_SNAPSHOT_RECORDS")]
    pub snapshot_records: Option<u64>,
    /// Snapshot at least this often when anything changed [default: 5m]
    #[arg(long, env = "SHORTD_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<String>,
    /// Dead share of a segment that triggers compaction, 0..1 [default: 0.5]
    #[arg(long, env = "SHORTD_COMPACT_RATIO")]
    pub compact_ratio: Option<f64>,
    /// Start past mid-log damage, keeping every intact record
    #[arg(long, env = "SHORTD_REPAIR")]
    #[serde(default)]
    pub repair: bool,
    /// Bytes per second the background scrub verifies, 0 = off [default: 16777216]
    #[arg(long, env = "SHORTD_SCRUB_RATE")]
    pub scrub_rate: Option<u64>,
    /// Pause between scrub passes [default: 24h]
    #[arg(long, env = "SHORTD_SCRUB_INTERVAL")]
    pub scrub_interval: Option<String>,
    /// text | json [default: text]
    #[arg(long, env = "SHORTD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// tracing filter, e.g. info or shortd=debug [default: info]
    #[arg(long, env = "SHORTD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// After SIGTERM, answer /readyz 503 this long before closing listeners [default: 0s]
    #[arg(long, env = "SHORTD_DRAIN_DELAY")]
    pub drain_delay: Option<String>,
    /// This node's name in a cluster; turns clustering on
    #[arg(long, env = "SHORTD_NODE_ID")]
    pub node_id: Option<String>,
    /// HOST:PORT of a node already in the cluster; repeatable
    #[arg(long = "seed", env = "SHORTD_SEED", value_delimiter = ',')]
    #[serde(default)]
    pub seed: Vec<String>,
    /// Address peers use to reach this node [default: --listen]
    #[arg(long, env = "SHORTD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Nodes that hold each link [default: 2]
    #[arg(long, env = "SHORTD_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
    /// Ring points per node [default: 128]
    #[arg(long, env = "SHORTD_VNODES")]
    pub vnodes: Option<usize>,
    /// Shared secret of node-to-node requests
    #[arg(long, env = "SHORTD_CLUSTER_KEY")]
    pub cluster_key: Option<String>,
    /// A node down this long is removed from the ring [default: 10m]
    #[arg(long, env = "SHORTD_DEAD_AFTER")]
    pub dead_after: Option<String>,
    /// Longest wait for a peer's answer [default: 500ms]
    #[arg(long, env = "SHORTD_PEER_TIMEOUT")]
    pub peer_timeout: Option<String>,
    /// Gossip period [default: 200ms]
    #[arg(long, env = "SHORTD_GOSSIP_INTERVAL")]
    pub gossip_interval: Option<String>,
}

/// The shortest `--cluster-key` accepted, in bytes.
pub const MIN_CLUSTER_KEY_LEN: usize = 16;

/// A setting that could not be used, with its name.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

fn bad(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { name, reason: reason.into() }
}

/// Parses `2s`, `500ms`, `1m`, `1h`.
pub fn parse_duration(name: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| bad(name, format!("{text:?} is not a duration like 2s or 500ms ({e})")))
}

impl ServeArgs {
    /// Fills gaps from the TOML file (if any), then checks every value.
    pub fn resolve(mut self) -> Result<Config, ConfigError> {
        if let Some(path) = self.config.take() {
            let file = read_toml(&path)?;
            self.fill_from(file);
        }
        let mut c = Config::default();
        if let Some(v) = &self.listen {
            c.listen = v.parse().map_err(|_| bad("--listen", format!("{v:?} is not ADDR:PORT")))?;
        }
        let cluster = self.cluster(c.listen)?;
        c.public_url = match &self.public_url {
            Some(v) => {
                let u = url::Url::parse(v).map_err(|e| bad("--public-url", format!("{v:?}: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(bad("--public-url", "must be an http or https URL with a host"));
                }
                u
            }
            None => default_public_url(c.listen),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.workers {
            if v == 0 || v > 1024 {
                return Err(bad("--workers", "must be between 1 and 1024"));
            }
            c.workers = v;
        }
        for key in &self.api_key {
            if !crate::lists::is_valid_key(key, crate::lists::MIN_KEY_LEN) {
                return Err(bad("--api-key", "each key needs at least 8 printable ASCII characters, no spaces"));
            }
        }
        c.api_keys = self.api_key;
        if let Some(f) = self.api_key_file {
            crate::lists::read_api_keys(&f).map_err(|e| bad("--api-key-file", e))?;
            c.api_key_file = Some(f);
        }
        if let Some(f) = self.blocklist {
            crate::lists::Blocklist::load(&f).map_err(|e| bad("--blocklist", e))?;
            c.blocklist = Some(f);
        }
        c.create_rate = self.create_rate.unwrap_or(0);
        c.create_burst = self.create_burst.unwrap_or(c.create_rate);
        c.redirect_rate = self.redirect_rate.unwrap_or(0);
        for p in &self.trusted_proxy {
            let net = p
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| bad("--trusted-proxy", format!("{p:?} is not an address or CIDR such as 10.0.0.0/8")))?;
            c.trusted_proxies.push(net);
        }
        if let Some(v) = self.durability {
            c.durability = v;
        }
        if let Some(v) = &self.fsync_interval {
            c.fsync_interval = parse_duration("--fsync-interval", v)?;
            if c.fsync_interval.is_zero() {
                return Err(bad("--fsync-interval", "must be more than zero"));
            }
        }
        if let Some(v) = self.segment_bytes {
            if !(1 << 16..=1 << 32).contains(&v) {
                return Err(bad("--segment-bytes", "must be between 65536 and 4294967296"));
            }
            c.segment_bytes = v;
        }
        if let Some(v) = self.cache_control {
            if http::HeaderValue::from_str(&v).is_err() {
                return Err(bad("--cache-control", "is not a valid header value"));
            }
            c.cache_control = v;
        }
        if let Some(v) = self.max_url_bytes {
            if !(16..=1 << 20).contains(&v) {
                return Err(bad("--max-url-bytes", "must be between 16 and 1048576"));
            }
            c.max_url_bytes = v;
        }
        if let Some(v) = self.max_body_bytes {
            if v < 1024 {
                return Err(bad("--max-body-bytes", "must be at least 1024"));
            }
            c.max_body_bytes = v;
        }
        if let Some(v) = &self.header_timeout {
            c.header_timeout = parse_duration("--header-timeout", v)?;
        }
        if let Some(v) = &self.idle_timeout {
            c.idle_timeout = parse_duration("--idle-timeout", v)?;
        }
        if let Some(v) = self.max_connections {
            if v == 0 {
                return Err(bad("--max-connections", "must be at least 1"));
            }
            c.max_connections = v;
        }
        if let Some(v) = self.cache_entries {
            c.cache_entries = v;
        }
        if let Some(v) = self.cache_bytes {
            c.cache_bytes = v;
        }
        if let Some(v) = &self.cache_ttl {
            c.cache_ttl = parse_duration("--cache-ttl", v)?;
        }
        if let Some(v) = &self.cache_ttl_jitter {
            c.cache_ttl_jitter = parse_duration("--cache-ttl-jitter", v)?;
        }
        if let Some(v) = self.snapshot_records {
            if v == 0 {
                return Err(bad("--snapshot-records", "must be at least 1"));
            }
            c.snapshot_records = v;
        }
        if let Some(v) = &self.snapshot_interval {
            c.snapshot_interval = parse_duration("--snapshot-interval", v)?;
        }
        if let Some(v) = self.compact_ratio {
            if !(0.05..=1.0).contains(&v) {
                return Err(bad("--compact-ratio", "must be between 0.05 and 1.0"));
            }
            c.compact_ratio = v;
        }
        if c.segment_bytes < 4 * (c.max_url_bytes as u64 + 4096) {
            return Err(bad(
                "--segment-bytes",
                format!("must hold at least four of the largest records: at least {}", 4 * (c.max_url_bytes as u64 + 4096)),
            ));
        }
        c.repair = self.repair;
        if let Some(v) = self.scrub_rate {
            c.scrub_rate = v;
        }
        if let Some(v) = &self.scrub_interval {
            c.scrub_interval = parse_duration("--scrub-interval", v)?;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.log_level {
            tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| bad("--log-level", e.to_string()))?;
            c.log_level = v;
        }
        if let Some(v) = &self.drain_delay {
            c.drain_delay = parse_duration("--drain-delay", v)?;
        }
        c.cluster = cluster;
        Ok(c)
    }

    fn cluster(&self, listen: SocketAddr) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(node_id) = self.node_id.clone() else {
            if !self.seed.is_empty() {
                return Err(bad("--seed", "needs --node-id (and --cluster-key)"));
            }
            return Ok(None);
        };
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(bad("--node-id", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -"));
        }
        let advertise = match &self.advertise {
            Some(v) => v.parse().map_err(|_| bad("--advertise", format!("{v:?} is not ADDR:PORT")))?,
            None => listen,
        };
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err(bad("--advertise", "peers need a concrete address and port; set --advertise when --listen is 0.0.0.0 or port 0"));
        }
        let replication_factor = self.replication_factor.unwrap_or(2);
        if !(1..=5).contains(&replication_factor) {
            return Err(bad("--replication-factor", "must be between 1 and 5"));
        }
        let vnodes = self.vnodes.unwrap_or(128);
        if !(1..=4096).contains(&vnodes) {
            return Err(bad("--vnodes", "must be between 1 and 4096"));
        }
        // Node-to-node requests change links without the API's checks: a
        // cluster never runs without a secret that guards them.
        match &self.cluster_key {
            Some(k) if crate::lists::is_valid_key(k, MIN_CLUSTER_KEY_LEN) => {}
            Some(_) => {
                return Err(bad("--cluster-key", format!("needs at least {MIN_CLUSTER_KEY_LEN} printable ASCII characters, no spaces")))
            }
            None => {
                return Err(bad(
                    "--cluster-key",
                    format!(
                        "is required in cluster mode (--node-id or --seed): a shared secret of at least {MIN_CLUSTER_KEY_LEN} characters"
                    ),
                ))
            }
        }
        let duration = |name, v: &Option<String>, default| v.as_deref().map_or(Ok(default), |t| parse_duration(name, t));
        let peer_timeout = duration("--peer-timeout", &self.peer_timeout, Duration::from_millis(500))?;
        let gossip_interval = duration("--gossip-interval", &self.gossip_interval, Duration::from_millis(200))?;
        if peer_timeout.is_zero() || gossip_interval.is_zero() {
            return Err(bad("--peer-timeout", "and --gossip-interval must be more than zero"));
        }
        Ok(Some(ClusterConfig {
            node_id,
            seeds: self.seed.clone(),
            advertise,
            replication_factor,
            vnodes,
            cluster_key: self.cluster_key.clone().unwrap_or_default(),
            dead_after: duration("--dead-after", &self.dead_after, Duration::from_secs(600))?,
            peer_timeout,
            gossip_interval,
        }))
    }

    fn fill_from(&mut self, file: ServeArgs) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        fill!(
            api_key_file,
            create_rate,
            create_burst,
            redirect_rate,
            blocklist,
            listen,
            data_dir,
            workers,
            public_url,
            durability,
            fsync_interval,
            segment_bytes,
            cache_control,
            max_url_bytes,
            max_body_bytes,
            header_timeout,
            idle_timeout,
            max_connections,
            cache_entries,
            cache_bytes,
            cache_ttl,
            cache_ttl_jitter,
            snapshot_records,
            snapshot_interval,
            compact_ratio,
            scrub_rate,
            scrub_interval,
            log_format,
            log_level,
            drain_delay,
            node_id,
            advertise,
            replication_factor,
            vnodes,
            cluster_key,
            dead_after,
            peer_timeout,
            gossip_interval
        );
        if self.seed.is_empty() {
            self.seed = file.seed;
        }
        if self.api_key.is_empty() {
            self.api_key = file.api_key;
        }
        if self.trusted_proxy.is_empty() {
            self.trusted_proxy = file.trusted_proxy;
        }
        self.repair |= file.repair;
    }
}

fn read_toml(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad("--config", format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| bad("--config", format!("{}: {}", path.display(), e.message())))
}
