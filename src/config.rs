//! Every setting of shortd in one place.
//!
//! Each setting of `shortd serve` is one field below, and its attributes
//! are all there is to it: flag, `SHORTD_*` variable, default, help text,
//! type and the check of one value. Its TOML key is the flag without `--`.
//!
//! Precedence: command-line flag, then `SHORTD_*` environment variable (clap
//! reads both), then the TOML file named by `--config`, then the default.
//! [`Cli::load`] turns the file's keys into flags for the settings the first
//! two left unset and parses once more; [`ServeArgs::resolve`] then runs the
//! checks that involve more than one setting. Everything is validated before
//! the server binds a socket; a bad value stops the start with one line
//! naming the setting.

use std::ffi::OsString;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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

pub(crate) fn default_public_url(listen: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{listen}/")).expect("socket address forms a URL")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
        #[command(flatten)]
        links: LinkLimits,
        /// File to read, or `-` for standard input.
        file: PathBuf,
    },
    // `import` holds new links to the server's rules, limits included.
    /// Verify every record and snapshot in a data directory and print a summary.
    Check {
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// What a link may hold, for `serve` and `import` alike.
#[derive(Args, Debug, Clone)]
pub struct LinkLimits {
    /// Longest target URL in bytes
    #[arg(long, env = "SHORTD_MAX_URL_BYTES", default_value_t = 8192, value_parser = in_range(16usize, 1 << 20))]
    pub max_url_bytes: usize,
}

#[derive(Args, Debug)]
pub struct DataDirArg {
    /// Data directory
    #[arg(long, env = "SHORTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Flags of `shortd serve`: the file, the settings, and the three cluster
/// settings that [`ServeArgs::resolve`] checks against others.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of these settings (kebab-case keys)
    #[arg(long, env = "SHORTD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Config,
    /// This node's name in a cluster; turns clustering on
    #[arg(long, env = "SHORTD_NODE_ID", value_parser = node_id)]
    pub node_id: Option<String>,
    /// Address peers use to reach this node [default: --listen]
    #[arg(long, env = "SHORTD_ADVERTISE", value_parser = socket_addr)]
    pub advertise: Option<SocketAddr>,
    /// Shared secret of node-to-node requests; required with --node-id
    #[arg(long, env = "SHORTD_CLUSTER_KEY")]
    pub cluster_key: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterConfig,
}

/// The shortest `--cluster-key` accepted, in bytes.
pub const MIN_CLUSTER_KEY_LEN: usize = 16;

/// A setting that could not be used, with its name.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

fn bad(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { name: name.into(), reason: reason.into() }
}

/// Why the command line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting's value, or the `--config` file: one line to print.
    #[error(transparent)]
    Setting(#[from] ConfigError),
    /// Anything else clap refuses, and `--help`/`--version`: clap prints it.
    #[error(transparent)]
    Usage(clap::Error),
}

impl Cli {
    /// [`Cli::try_load_from`] on this process's arguments; on a bad setting
    /// prints one line and exits 1, on anything else does what clap does.
    pub fn load() -> Cli {
        match Cli::try_load_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(LoadError::Usage(e)) => e.exit(),
            Err(LoadError::Setting(e)) => {
                eprintln!("shortd: {e}");
                std::process::exit(1)
            }
        }
    }

    /// Parses the arguments and `SHORTD_*` variables, then for `serve
    /// --config FILE` once more with the file's settings added as flags
    /// where neither gave a value. (`Cli::parse` does not read the file.)
    pub fn try_load_from<I, T>(args: I) -> Result<Cli, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cmd = Cli::command();
        let mut matches = cmd.clone().try_get_matches_from(&args).map_err(from_clap)?;
        let file = match matches.subcommand() {
            Some(("serve", given)) => given.get_one::<PathBuf>("config").map(|path| (path.clone(), given.clone())),
            _ => None,
        };
        if let (Some((path, given)), Some(serve)) = (file, cmd.find_subcommand("serve")) {
            args.extend(toml_flags(serve, &given, &path)?);
            matches = cmd.try_get_matches_from(&args).map_err(from_clap)?;
        }
        Cli::from_arg_matches(&matches).map_err(from_clap)
    }
}

impl ServeArgs {
    /// Runs the checks that involve more than one setting.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let ServeArgs { settings: mut c, node_id, advertise, cluster_key, cluster, config: _ } = self;
        c.cluster = match node_id {
            None if !cluster.seeds.is_empty() => return Err(bad("--seed", "needs --node-id (and --cluster-key)")),
            None => None,
            Some(node_id) => {
                let advertise = advertise.unwrap_or(c.listen);
                if advertise.ip().is_unspecified() || advertise.port() == 0 {
                    return Err(bad(
                        "--advertise",
                        "peers need a concrete address and port; set --advertise when --listen is 0.0.0.0 or port 0",
                    ));
                }
                // Node-to-node requests change links without the API's checks:
                // a cluster never runs without a secret that guards them.
                let cluster_key = match cluster_key {
                    Some(k) if crate::lists::is_valid_key(&k, MIN_CLUSTER_KEY_LEN) => k,
                    Some(_) => {
                        return Err(bad(
                            "--cluster-key",
                            format!("needs at least {MIN_CLUSTER_KEY_LEN} printable ASCII characters, no spaces"),
                        ))
                    }
                    None => {
                        return Err(bad(
                            "--cluster-key",
                            format!(
                                "is required in cluster mode (--node-id or --seed): a shared secret of at least {MIN_CLUSTER_KEY_LEN} characters"
                            ),
                        ))
                    }
                };
                Some(ClusterConfig { node_id, advertise, cluster_key, ..cluster })
            }
        };
        let least = c.least_segment_bytes();
        if c.segment_bytes < least {
            return Err(bad("--segment-bytes", format!("must hold at least four of the largest records: at least {least}")));
        }
        Ok(c)
    }
}

/// The `--config` file's settings as flags, for each setting that neither
/// the command line nor its variable set. A list in the file is replaced as
/// a whole by a list given there; `repair = true` adds `--repair`.
fn toml_flags(serve: &clap::Command, given: &ArgMatches, path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let in_file = |reason: String| bad("--config", format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| in_file(e.message().to_string()))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let Some(arg) = serve.get_arguments().find(|a| {
            a.get_long() == Some(key.as_str())
                && a.get_id() != "config"
                && matches!(a.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue)
        }) else {
            return Err(in_file(format!("unknown field `{key}`")));
        };
        let id = arg.get_id().as_str();
        let flag = format!("--{key}");
        let scalar = |v: toml::Value| match v {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            _ => Err(in_file(format!("{key}: expected a string or a number"))),
        };
        let values = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                if on && !given.get_flag(id) {
                    flags.push(flag.into());
                }
                continue;
            }
            (ArgAction::SetTrue, _) => return Err(in_file(format!("{key}: expected true or false"))),
            (ArgAction::Append, toml::Value::Array(items)) => {
                let items = items.into_iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                if let Some(d) = arg.get_value_delimiter().filter(|&d| items.iter().any(|i| i.contains(d))) {
                    return Err(in_file(format!("{key}: an item cannot contain {d:?}")));
                }
                items
            }
            (ArgAction::Append, _) => return Err(in_file(format!("{key}: expected a list such as [\"a\", \"b\"]"))),
            (_, v) => vec![scalar(v)?],
        };
        if !matches!(given.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            flags.extend(values.into_iter().map(|v| OsString::from(format!("{flag}={v}"))));
        }
    }
    Ok(flags)
}

/// A bad value clap found becomes `invalid setting --NAME: reason`.
fn from_clap(e: clap::Error) -> LoadError {
    let name = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or(arg).to_string(),
        _ => return LoadError::Usage(e),
    };
    let reason = match e.kind() {
        ErrorKind::ValueValidation => match std::error::Error::source(&e) {
            Some(why) => why.to_string(),
            None => return LoadError::Usage(e),
        },
        ErrorKind::InvalidValue => match (e.get(ContextKind::InvalidValue), e.get(ContextKind::ValidValue)) {
            (Some(ContextValue::String(v)), Some(ContextValue::Strings(valid))) if !v.is_empty() => {
                format!("{v:?} is not one of {}", valid.join(", "))
            }
            _ => "needs a value".to_string(),
        },
        _ => return LoadError::Usage(e),
    };
    LoadError::Setting(ConfigError { name, reason })
}

fn in_range<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Debug + Copy + Send + Sync + 'static,
{
    move |s| match s.parse::<T>() {
        Ok(v) if lo <= v && v <= hi => Ok(v),
        Ok(_) => Err(format!("must be between {lo:?} and {hi:?}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

fn at_least<T>(lo: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Debug + Copy + Send + Sync + 'static,
{
    move |s| match s.parse::<T>() {
        Ok(v) if lo <= v => Ok(v),
        Ok(_) => Err(format!("must be at least {lo:?}")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// Parses `2s`, `500ms`, `1m`, `1h`, `1h 30m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration like 2s or 500ms ({e})"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    duration(text).and_then(|d| if d.is_zero() { Err("must be more than zero".into()) } else { Ok(d) })
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not ADDR:PORT"))
}

fn public_url(text: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("must be an http or https URL with a host".into());
    }
    Ok(u)
}

fn api_key(key: &str) -> Result<String, String> {
    match crate::lists::is_valid_key(key, crate::lists::MIN_KEY_LEN) {
        true => Ok(key.to_string()),
        false => Err(format!("each key needs at least {} printable ASCII characters, no spaces", crate::lists::MIN_KEY_LEN)),
    }
}

fn api_key_file(path: &str) -> Result<PathBuf, String> {
    crate::lists::read_api_keys(Path::new(path))?;
    Ok(path.into())
}

fn blocklist(path: &str) -> Result<PathBuf, String> {
    crate::lists::Blocklist::load(Path::new(path))?;
    Ok(path.into())
}

fn trusted_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR such as 10.0.0.0/8"))
}

fn geoip_db(path: &str) -> Result<PathBuf, String> {
    maxminddb::Reader::open_readfile(path).map_err(|e| format!("is not a readable MaxMind DB: {e}"))?;
    Ok(path.into())
}

fn hours(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d < Duration::from_secs(3600) {
        return Err("must be at least 1h".into());
    }
    Ok(d)
}

fn header_value(text: &str) -> Result<String, String> {
    http::HeaderValue::from_str(text).map(|_| text.to_string()).map_err(|_| "is not a valid header value".into())
}

fn log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|e| e.to_string())
}

fn node_id(id: &str) -> Result<String, String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    if id.is_empty() || id.len() > 64 || !id.bytes().all(ok) {
        return Err("must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into());
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let argv = ["shortd", "serve"].iter().chain(args);
        match Cli::try_load_from(argv).map_err(|e| e.to_string())?.command {
            Command::Serve(s) => s.resolve().map_err(|e| e.to_string()),
            _ => unreachable!("parsed as serve"),
        }
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temporary file");
        std::fs::write(f.path(), text).expect("writing the TOML file");
        f
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.workers, cores());
        assert_eq!(c.public_url().as_str(), "http://127.0.0.1:8080/");
        assert_eq!((c.create_rate, c.create_burst(), c.redirect_rate), (0, 0, 0));
        assert!(c.api_keys.is_empty() && c.api_key_file.is_none() && c.blocklist.is_none() && c.trusted_proxies.is_empty());
        assert_eq!(c.durability, Durability::Always);
        assert_eq!(c.fsync_interval, Duration::from_millis(10));
        assert_eq!(c.segment_bytes, 64 << 20);
        assert_eq!(c.cache_control, "private, max-age=90");
        assert_eq!((c.links.max_url_bytes, c.max_body_bytes, c.max_connections), (8192, 1 << 20, 10_000));
        assert_eq!((c.header_timeout, c.idle_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        assert_eq!((c.cache_entries, c.cache_bytes), (1_000_000, 256 << 20));
        assert_eq!((c.cache_ttl, c.cache_ttl_jitter), (Duration::from_secs(60), Duration::from_secs(15)));
        assert_eq!((c.snapshot_records, c.snapshot_interval), (1_000_000, Duration::from_secs(300)));
        assert_eq!(c.compact_ratio, 0.5);
        assert!(!c.repair);
        assert_eq!((c.scrub_rate, c.scrub_interval), (16 << 20, Duration::from_secs(24 * 3600)));
        assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "info"));
        assert_eq!(c.drain_delay, Duration::ZERO);
        assert_eq!((c.ui, c.root_redirect.as_ref()), (Switch::On, None));
        assert!(c.cluster.is_none());
    }

    #[test]
    fn cluster_defaults_and_resolved_fields() {
        let key = "0123456789abcdef";
        let c = serve(&["--node-id", "a", "--cluster-key", key]).unwrap().cluster.expect("cluster mode");
        assert_eq!((c.node_id.as_str(), c.cluster_key.as_str()), ("a", key));
        assert_eq!(c.advertise, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((c.replication_factor, c.vnodes, c.partitions), (3, 128, 16));
        assert_eq!(c.dead_after, Duration::from_secs(600));
        assert_eq!(c.peer_timeout, Duration::from_millis(500));
        assert!(c.seeds.is_empty());
        assert!(serve(&["--vnodes", "7"]).unwrap().cluster.is_none(), "cluster settings alone do not turn clustering on");
    }

    #[test]
    fn help_states_every_default() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        let no_default =
            ["help", "config", "api-key", "api-key-file", "trusted-proxy", "blocklist", "node-id", "seed", "cluster-key", "geoip-db"];
        let serve = Cli::command();
        for arg in serve.find_subcommand("serve").unwrap().get_arguments() {
            let long = arg.get_long().unwrap();
            let stated = arg.get_help().is_some_and(|h| h.to_string().contains("[default: "))
                || (!arg.get_default_values().is_empty() && !arg.is_hide_default_value_set());
            assert!(stated || no_default.contains(&long), "--{long} does not state its default");
        }
        for shown in ["[default: 10ms]", "[default: \"private, max-age=90\"]", "[default: 67108864]", "[default: 0.5]", "[default: 3]"] {
            assert!(help.contains(shown), "help lacks {shown}:\n{help}");
        }
    }

    #[test]
    fn toml_fills_what_the_command_line_leaves_out() {
        let f = toml_file(
            "workers = 3\ncache-ttl = \"5s\"\ncompact-ratio = 0.25\napi-key = [\"key-one-1\", \"key-two-2\"]\nrepair = true\n\
             public-url = \"https://sho.rt/\"\ndurability = \"never\"\ncreate-rate = 4\n",
        );
        let path = f.path().to_str().unwrap();
        let c = serve(&["--config", path, "--workers", "2"]).unwrap();
        assert_eq!(c.workers, 2, "the flag beats the file");
        assert_eq!(c.cache_ttl, Duration::from_secs(5));
        assert_eq!(c.compact_ratio, 0.25);
        assert_eq!(c.api_keys, ["key-one-1", "key-two-2"]);
        assert!(c.repair);
        assert_eq!(c.public_url().as_str(), "https://sho.rt/");
        assert_eq!(c.durability, Durability::Never);
        assert_eq!((c.create_rate, c.create_burst()), (4, 4));
        let c = serve(&["--config", path, "--api-key", "key-three-3"]).unwrap();
        assert_eq!(c.api_keys, ["key-three-3"], "a list on the command line replaces the file's");
    }

    /// The only test that sets a `SHORTD_*` variable; no other test reads
    /// `--cache-ttl-jitter`.
    #[test]
    fn flag_beats_variable_beats_file() {
        let f = toml_file("cache-ttl-jitter = \"3s\"\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(serve(&["--config", path]).unwrap().cache_ttl_jitter, Duration::from_secs(3));
        std::env::set_var("SHORTD_CACHE_TTL_JITTER", "2s");
        let from_env = serve(&["--config", path]).map(|c| c.cache_ttl_jitter);
        let from_flag = serve(&["--config", path, "--cache-ttl-jitter", "1s"]).map(|c| c.cache_ttl_jitter);
        std::env::remove_var("SHORTD_CACHE_TTL_JITTER");
        assert_eq!(from_env.unwrap(), Duration::from_secs(2));
        assert_eq!(from_flag.unwrap(), Duration::from_secs(1));
    }

    #[test]
    fn the_file_is_refused_with_an_unknown_or_mistyped_key() {
        for (text, wanted) in [
            ("cache-tll = \"5s\"\n", "invalid setting --config: "),
            ("config = \"other.toml\"\n", "unknown field `config`"),
            ("help = true\n", "unknown field `help`"),
            ("repair = \"yes\"\n", "repair: expected true or false"),
            ("api-key = \"one-single-key\"\n", "api-key: expected a list"),
            ("api-key = [\"has,a-comma\"]\n", "api-key: an item cannot contain ','"),
            ("workers = [1]\n", "workers: expected a string or a number"),
            ("workers = \n", "invalid setting --config: "),
        ] {
            let f = toml_file(text);
            let err = serve(&["--config", f.path().to_str().unwrap()]).unwrap_err();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
        assert!(serve(&["--config", "/nonexistent/shortd.toml"]).unwrap_err().starts_with("invalid setting --config: "));
    }

    #[test]
    fn a_bad_value_names_its_setting_wherever_it_came_from() {
        for (args, wanted) in [
            (&["--workers", "0"][..], "invalid setting --workers: must be between 1 and 1024"),
            (&["--workers", "many"], "invalid setting --workers: \"many\" is not a number"),
            (&["--durability", "sometimes"], "invalid setting --durability: \"sometimes\" is not one of always, interval, never"),
            (&["--fsync-interval", "0s"], "invalid setting --fsync-interval: must be more than zero"),
            (&["--header-timeout", "soon"], "invalid setting --header-timeout: \"soon\" is not a duration"),
            (&["--listen", "nowhere"], "invalid setting --listen: \"nowhere\" is not ADDR:PORT"),
            (&["--compact-ratio", "2"], "invalid setting --compact-ratio: must be between 0.05 and 1.0"),
            (&["--segment-bytes", "65536", "--max-url-bytes", "16384"], "invalid setting --segment-bytes: must hold at least four"),
            (&["--seed", "127.0.0.1:9"], "invalid setting --seed: needs --node-id"),
            (&["--node-id", "a"], "invalid setting --cluster-key: is required in cluster mode"),
            (&["--node-id", "a", "--cluster-key", "too-short"], "invalid setting --cluster-key: needs at least 16"),
            (&["--node-id", "a b"], "invalid setting --node-id: "),
            (&["--node-id", "a", "--cluster-key", "0123456789abcdef", "--listen", "0.0.0.0:80"], "invalid setting --advertise: "),
            (&["--api-key-file", "/nonexistent/keys"], "invalid setting --api-key-file: "),
        ] {
            let err = serve(args).unwrap_err();
            assert!(err.starts_with(wanted), "{args:?}: {err}");
        }
        let f = toml_file("max-body-bytes = 100\n");
        let err = serve(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert_eq!(err, "invalid setting --max-body-bytes: must be at least 1024");
    }
}
