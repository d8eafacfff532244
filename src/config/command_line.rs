//! The command line: `shortd`'s subcommands and the flags of `serve`, the
//! loading of both (arguments, variables, then the `--config` file) and
//! the checks that involve more than one setting.

use std::ffi::OsString;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::error::{bad, from_clap, ConfigError, LoadError};
use super::file::toml_flags;
use super::parse::*;
use super::settings::{ClusterConfig, Config, LinkLimits};

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
