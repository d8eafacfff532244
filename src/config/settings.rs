//! The settings of a running server (`Config`, and `ClusterConfig` for a
//! cluster node), one clap field each: flag, `SHORTD_*` variable, default,
//! help text and the check of one value live in the field's attributes.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};

use super::parse::*;

/// Defined by the journal, which acts on it; a setting like any other here.
pub use crate::journal::Durability;

/// A feature turned on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings of a running server, one field each. [`Config::default`]
/// is every default, whatever the environment says.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on
    #[arg(long, env = "SHORTD_LISTEN", default_value = "127.0.0.1:8080", value_parser = socket_addr)]
    pub listen: SocketAddr,
    /// Data directory
    #[arg(long, env = "SHORTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Worker threads, one listener each [default: number of cores]
    #[arg(long, env = "SHORTD_WORKERS", default_value_t = cores(), hide_default_value = true, value_parser = in_range(1usize, 1024))]
    pub workers: usize,
    // Read through `Config::public_url`, which applies the default.
    /// Base URL of short links [default: http://LISTEN/]
    #[arg(long, env = "SHORTD_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<url::Url>,
    /// API key clients send as `Authorization: Bearer KEY`; repeatable
    #[arg(long = "api-key", value_name = "API_KEY", env = "SHORTD_API_KEY", value_delimiter = ',', value_parser = api_key)]
    pub api_keys: Vec<String>,
    /// File of API keys, one per line; re-read on SIGHUP
    #[arg(long, env = "SHORTD_API_KEY_FILE", value_parser = api_key_file)]
    pub api_key_file: Option<PathBuf>,
    /// Creates per second per client IP, 0 = unlimited
    #[arg(long, env = "SHORTD_CREATE_RATE", default_value_t = 0)]
    pub create_rate: u32,
    // Read through `Config::create_burst`, which applies the default.
    /// Burst of creates allowed above the rate [default: the rate]
    #[arg(long, env = "SHORTD_CREATE_BURST")]
    pub create_burst: Option<u32>,
    /// Redirects per second per client IP, 0 = unlimited
    #[arg(long, env = "SHORTD_REDIRECT_RATE", default_value_t = 0)]
    pub redirect_rate: u32,
    /// CIDR of a proxy whose X-Forwarded-For is trusted; repeatable
    #[arg(long = "trusted-proxy", value_name = "TRUSTED_PROXY", env = "SHORTD_TRUSTED_PROXY", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// File of blocked target domains (subdomains too); re-read on SIGHUP
    #[arg(long, env = "SHORTD_BLOCKLIST", value_parser = blocklist)]
    pub blocklist: Option<PathBuf>,
    /// When a write is acknowledged
    #[arg(long, env = "SHORTD_DURABILITY", default_value = "always")]
    pub durability: Durability,
    /// fsync period under --durability interval
    #[arg(long, env = "SHORTD_FSYNC_INTERVAL", default_value = "10ms", value_parser = positive_duration)]
    pub fsync_interval: Duration,
    /// Log segment size in bytes
    #[arg(long, env = "SHORTD_SEGMENT_BYTES", default_value_t = 64 << 20, value_parser = in_range(1u64 << 16, 1 << 32))]
    pub segment_bytes: u64,
    /// Cache-Control header on redirects
    #[arg(long, env = "SHORTD_CACHE_CONTROL", default_value = "private, max-age=90", value_parser = header_value)]
    pub cache_control: String,
    #[command(flatten)]
    pub links: LinkLimits,
    /// Largest request body in bytes
    #[arg(long, env = "SHORTD_MAX_BODY_BYTES", default_value_t = 1 << 20, value_parser = at_least(1024usize))]
    pub max_body_bytes: usize,
    /// Time to receive a request head, e.g. 2s, 500ms
    #[arg(long, env = "SHORTD_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Keep-alive idle timeout
    #[arg(long, env = "SHORTD_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Open connections at most, split evenly across workers
    #[arg(long, env = "SHORTD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = at_least(1usize))]
    pub max_connections: usize,
    /// Cache bound in entries, 0 = no cache
    #[arg(long, env = "SHORTD_CACHE_ENTRIES", default_value_t = 1_000_000)]
    pub cache_entries: usize,
    /// Cache bound in bytes of URLs and keys
    #[arg(long, env = "SHORTD_CACHE_BYTES", default_value_t = 256 << 20)]
    pub cache_bytes: usize,
    /// Cache entry lifetime
    #[arg(long, env = "SHORTD_CACHE_TTL", default_value = "60s", value_parser = duration)]
    pub cache_ttl: Duration,
    /// Random extra cache lifetime, in [0, this)
    #[arg(long, env = "SHORTD_CACHE_TTL_JITTER", default_value = "15s", value_parser = duration)]
    pub cache_ttl_jitter: Duration,
    /// Snapshot after this many records
    #[arg(long, env = "SHORTD_SNAPSHOT_RECORDS", default_value_t = 1_000_000, value_parser = at_least(1u64))]
    pub snapshot_records: u64,
    /// Snapshot at least this often when anything changed
    #[arg(long, env = "SHORTD_SNAPSHOT_INTERVAL", default_value = "5m", value_parser = duration)]
    pub snapshot_interval: Duration,
    /// Dead share of a segment that triggers compaction
    #[arg(long, env = "SHORTD_COMPACT_RATIO", default_value_t = 0.5, value_parser = in_range(0.05, 1.0))]
    pub compact_ratio: f64,
    /// Start past mid-log damage, keeping every intact record [default: off]
    #[arg(long, env = "SHORTD_REPAIR")]
    pub repair: bool,
    /// Bytes per second the background scrub verifies, 0 = off
    #[arg(long, env = "SHORTD_SCRUB_RATE", default_value_t = 16 << 20)]
    pub scrub_rate: u64,
    /// Pause between scrub passes
    #[arg(long, env = "SHORTD_SCRUB_INTERVAL", default_value = "24h", value_parser = duration)]
    pub scrub_interval: Duration,
    /// Log line format
    #[arg(long, env = "SHORTD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// tracing filter, e.g. info or shortd=debug
    #[arg(long, env = "SHORTD_LOG_LEVEL", default_value = "info", value_parser = log_filter)]
    pub log_level: String,
    /// The web UI at /ui/ (and `GET /` leading there)
    #[arg(long, env = "SHORTD_UI", default_value = "on")]
    pub ui: Switch,
    /// Where `GET /` redirects [default: /ui/ with the UI on, else 404]
    #[arg(long, env = "SHORTD_ROOT_REDIRECT", value_parser = public_url)]
    pub root_redirect: Option<url::Url>,
    /// Click analytics (referrer, country, device, browser, OS per hour); off keeps click totals only
    #[arg(long, env = "SHORTD_ANALYTICS", default_value = "on")]
    pub analytics: Switch,
    /// Count bots and link-preview agents as clicks, and against max_clicks [default: off]
    #[arg(long, env = "SHORTD_COUNT_BOTS")]
    pub count_bots: bool,
    /// MaxMind-format country database (.mmdb) for click countries; re-read on SIGHUP
    #[arg(long, env = "SHORTD_GEOIP_DB", value_parser = geoip_db)]
    pub geoip_db: Option<PathBuf>,
    /// How long hourly click stats are kept, e.g. 400d, 90d
    #[arg(long, env = "SHORTD_STATS_RETENTION", default_value = "400d", value_parser = hours)]
    pub stats_retention: Duration,
    /// Values kept per stats dimension per hour; the rest count as "other"
    #[arg(long, env = "SHORTD_STATS_TOP", default_value_t = crate::analytics::rollup::DEFAULT_TOP, value_parser = in_range(1usize, 1000))]
    pub stats_top: usize,
    /// After SIGTERM, answer /readyz 503 this long before closing listeners
    #[arg(long, env = "SHORTD_DRAIN_DELAY", default_value = "0s", value_parser = duration)]
    pub drain_delay: Duration,
    /// Cluster membership, from the cluster settings in [`ServeArgs`];
    /// `None` runs a single node.
    #[arg(skip)]
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// The smallest segment that holds four of the largest records.
    pub fn least_segment_bytes(&self) -> u64 {
        4 * (self.links.max_url_bytes as u64 + 4096)
    }

    /// The base of `short_url`: `--public-url`, or `http://{listen}/`.
    pub fn public_url(&self) -> url::Url {
        self.public_url.clone().unwrap_or_else(|| default_public_url(self.listen))
    }

    /// `--create-burst`, or the create rate.
    pub fn create_burst(&self) -> u32 {
        self.create_burst.unwrap_or(self.create_rate)
    }
}

impl Default for Config {
    fn default() -> Self {
        let cmd = Config::augment_args(clap::Command::new("shortd")).mut_args(|a| a.env(None));
        let defaults = cmd.try_get_matches_from(["shortd"]).expect("the defaults are valid settings");
        Config::from_arg_matches(&defaults).expect("the defaults are valid settings")
    }
}

/// How this node joins and works with its peers (`docs/cluster.md`).
#[derive(Args, Clone, Debug)]
pub struct ClusterConfig {
    /// `--node-id`.
    #[arg(skip)]
    pub node_id: String,
    /// HOST:PORT of a node already in the cluster; repeatable
    #[arg(long = "seed", value_name = "SEED", env = "SHORTD_SEED", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// `--advertise`, or `--listen`: where peers reach this node.
    #[arg(skip = SocketAddr::from(([0, 0, 0, 0], 0)))]
    pub advertise: SocketAddr,
    /// Voters per partition (Raft group): a majority must commit each write
    #[arg(long, env = "SHORTD_REPLICATION_FACTOR", default_value_t = 3, value_parser = in_range(1usize, 5))]
    pub replication_factor: usize,
    /// Partitions (Raft groups) the codes are split into; fixed when the
    /// cluster is created: every node must use the same number
    #[arg(long, env = "SHORTD_PARTITIONS", default_value_t = 16, value_parser = in_range(1u32, 1024))]
    pub partitions: u32,
    /// Ring points per node
    #[arg(long, env = "SHORTD_VNODES", default_value_t = 128, value_parser = in_range(1usize, 4096))]
    pub vnodes: usize,
    /// Log entries a Raft group takes between snapshots; each snapshot
    /// purges the group's log behind it but for a fifth of this
    #[arg(long, env = "SHORTD_RAFT_SNAPSHOT_ENTRIES", default_value_t = 5000, value_parser = in_range(10u64, 10_000_000))]
    pub raft_snapshot_entries: u64,
    /// `--cluster-key`.
    #[arg(skip)]
    pub cluster_key: String,
    /// A node unreachable this long is removed from the cluster
    #[arg(long, env = "SHORTD_DEAD_AFTER", default_value = "10m", value_parser = duration)]
    pub dead_after: Duration,
    /// Longest wait for a peer's answer to a forwarded request
    #[arg(long, env = "SHORTD_PEER_TIMEOUT", default_value = "500ms", value_parser = positive_duration)]
    pub peer_timeout: Duration,
}

fn default_public_url(listen: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{listen}/")).expect("socket address forms a URL")
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a link may hold, for `serve` and `import` alike.
#[derive(Args, Debug, Clone)]
pub struct LinkLimits {
    /// Longest target URL in bytes
    #[arg(long, env = "SHORTD_MAX_URL_BYTES", default_value_t = 8192, value_parser = in_range(16usize, 1 << 20))]
    pub max_url_bytes: usize,
}
